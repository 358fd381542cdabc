"""``vae-run`` after a plain (non-editable) ``pip install`` of the wheel, from an unrelated directory.

The throwaway virtualenv gets the wheel alone; its heavy dependencies (torch & co.) are borrowed from the
test's own environment through a .pth file rather than installed again, so the test stays fast and offline.
"""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import TINY, read_metrics, vae_run
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]


def build_and_install(tmp: Path) -> Path:
    """The wheel built from the source tree, checked, and installed into a throwaway virtualenv in tmp."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            tmp / "dist",
            ROOT,
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp / "dist").glob("vaerun-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    shipped = {name.removeprefix("vaerun/configs/") for name in names if name.endswith(".yaml")}
    assert shipped == {str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml")}

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    (purelib,) = venv.glob("lib/python*/site-packages")
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "borrowed_dependencies.pth").write_text("\n".join(deps) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            venv / "bin" / "python",
            "install",
            "--no-deps",
            "-q",
            wheel,
        ],
        check=True,
        capture_output=True,
    )
    return venv / "bin" / "vae-run"


@pytest.fixture(scope="session")
def installed(tmp_path_factory, worker_id) -> Path:
    """Built once per session, by the first test worker that needs it (two builds at once in the same
    source tree would collide in its build folder); the others wait for it and share it."""
    session = tmp_path_factory.getbasetemp()
    tmp = (session if worker_id == "master" else session.parent) / "installed_wheel"
    with FileLock(f"{tmp}.lock"):
        script = tmp / "venv" / "bin" / "vae-run"
        return script if script.is_file() else build_and_install(tmp)


def test_the_installed_wheel_runs_from_any_directory(installed, tmp_path):
    vae_run(
        "model=vae", "latent=2", "data=digits", *TINY, "hydra.run.dir=run", cwd=tmp_path, executable=installed
    )
    assert "test/elbo" in read_metrics(tmp_path / "run")
    code = "import vaerun; print(vaerun.__file__)"
    where = subprocess.run(
        [installed.with_name("python"), "-c", code], capture_output=True, text=True, check=True
    )
    assert str(ROOT) not in where.stdout  # the wheel's copy ran, not the source tree


def test_users_add_their_own_config_folder_the_hydra_way(installed, tmp_path):
    user_configs = tmp_path / "my_configs" / "data"
    user_configs.mkdir(parents=True)
    (user_configs / "small_digits.yaml").write_text(
        "defaults:\n  - digits\n  - _self_\nbatch_size: 16\nsource:\n  val_size: 100\n  test_size: 100\n"
    )
    result = vae_run(
        "--config-dir",
        str(tmp_path / "my_configs"),
        "data=small_digits",
        "--cfg",
        "job",
        cwd=tmp_path,
        executable=installed,
    )
    assert "batch_size: 16" in result.stdout and "val_size: 100" in result.stdout
    vae_run(
        "--config-dir",
        str(tmp_path / "my_configs"),
        "data=small_digits",
        *TINY,
        "hydra.run.dir=run",
        cwd=tmp_path,
        executable=installed,
    )
    assert (tmp_path / "run" / "metrics.json").is_file()
