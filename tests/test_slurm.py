"""vae-run on a real one-node Slurm cluster (scripts/local_slurm.sh: Debian's slurm-wlm and munge, started
in a temporary folder and stopped after). Skipped, with the reason, where this machine cannot run one."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import TINY, VAE_RUN, read_metrics, vae_run

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


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(cannot_run_slurm() is not None, reason=str(cannot_run_slurm())),
]


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


def test_a_requeued_job_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(slurm, tmp_path):
    """`scontrol requeue` in the middle of training: Slurm kills the job and starts it again, the new process
    takes the run directory over (its lock went with the killed one) and resumes from the last checkpoint."""
    run = ["data=digits", "latent=2", *TINY, "trainer.max_epochs=6", "trainer.limit_train_batches=null"]
    sweep = subprocess.Popen(
        [str(VAE_RUN), "-m", "hydra/launcher=slurm", *SMALL_JOBS, *run, "hydra.sweep.dir=sweep"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run_dir = tmp_path / "sweep" / "0"
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.ckpt").exists():  # an epoch done: a checkpoint to resume
        assert time.monotonic() < deadline and sweep.poll() is None, sweep.communicate()[0]
        time.sleep(0.2)
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
    job = queue.stdout.split()
    assert len(job) == 1
    subprocess.run(["scontrol", "requeue", job[0]], check=True)
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, output
    log = (run_dir / "vae_run.log").read_text()
    assert "Resuming from " in log, log[-2000:]
    vae_run(*run, "hydra.run.dir=plain", cwd=tmp_path)  # the same run, never interrupted, without Slurm
    requeued, plain = read_metrics(run_dir), read_metrics(tmp_path / "plain")
    for key in ("test/loss", "test/kl", "test/nll_iwae"):
        assert requeued[key] == pytest.approx(plain[key], rel=1e-6), key
