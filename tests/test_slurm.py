"""vae-run on a real one-node Slurm cluster (scripts/local_slurm.sh: Debian's slurm-wlm and munge, started
in a temporary folder and stopped after). Skipped, with the reason, where this machine cannot run one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import TINY, read_metrics, vae_run

ROOT = Path(__file__).resolve().parents[1]
#: a job's resources on the local node (its 2 cores and a little memory each)
SMALL_JOBS = ["hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def cannot_run_slurm() -> str | None:
    if os.geteuid() != 0:
        return "the local Slurm cluster runs its daemons as root"
    missing = [name for name in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed (make apt-packages installs slurm-wlm and munge)"
    if subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0:
        return "a Slurm controller is running on this machine already"
    return None


pytestmark = pytest.mark.skipif(cannot_run_slurm() is not None, reason=str(cannot_run_slurm()))


@pytest.fixture(scope="module")
def slurm(tmp_path_factory, monkeypatch_module):
    """A running one-node cluster; SLURM_CONF points sbatch, squeue and vae-run's launcher at it."""
    folder = tmp_path_factory.mktemp("slurm")
    script = ROOT / "scripts" / "local_slurm.sh"
    started = subprocess.run([script, "start", folder], capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    monkeypatch_module.setenv("SLURM_CONF", str(folder / "slurm.conf"))
    yield folder
    subprocess.run([script, "stop", folder], check=True)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_a_sweep_runs_as_slurm_jobs_and_is_summarised(slurm, tmp_path):
    sweep = ["-m", "hydra/launcher=slurm", *SMALL_JOBS, "data=digits", "latent=2,4", *TINY]
    sweep.append("hydra.sweep.dir=sweep")
    result = vae_run(*sweep, cwd=tmp_path)
    for job in ("0", "1"):
        assert read_metrics(tmp_path / "sweep" / job)["test/loss"] > 0
    assert (tmp_path / "sweep" / "summary.csv").read_text().count("\n") == 3  # the header and two runs
    logs = list((tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2  # each run was a job of its own
    # no accounting here: one line says so, instead of sacct's and submitit's complaints at every poll
    said = result.stdout + result.stderr
    assert said.count("Slurm keeps no job accounting here") == 1
    assert "sacct error" not in said and "accounting storage is disabled" not in said
