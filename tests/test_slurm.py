"""vae-run on a real one-node Slurm cluster (scripts/local_slurm.sh: Debian's slurm-wlm and munge, started
in a temporary folder and stopped after). Skipped, with the reason, where this machine cannot run one."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import threading
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
    # 8 CPUs declared on 2 cores: room for array_parallelism=4 and a DDP job of 2 tasks beside another job
    declared = {**os.environ, "LOCAL_SLURM_CPUS": "8"}
    started = subprocess.run([script, "start", folder], capture_output=True, text=True, env=declared)
    assert started.returncode == 0, started.stderr
    monkeypatch_module.setenv("SLURM_CONF", str(folder / "slurm.conf"))
    yield folder
    subprocess.run([script, "stop", folder], check=True)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


class RunningJobs(threading.Thread):
    """The most jobs squeue shows running at once, polled until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.most, self.stopped = 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            shown = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i"], capture_output=True, text=True)
            self.most = max(self.most, len(shown.stdout.split()))
            time.sleep(0.2)


def test_a_12_run_sweep_keeps_to_its_array_parallelism_and_a_failing_run_loses_no_other(slurm, tmp_path):
    """12 jobs, at most 4 at once (Slurm's array limit, from hydra.launcher.array_parallelism), on a node
    with room for 8; latent=0 fails in its job: the other 11 finish, the summary marks it, the sweep exits 3."""
    latents = ",".join(str(n) for n in range(12))
    sweep = ["-m", "hydra/launcher=slurm", *SMALL_JOBS, "hydra.launcher.array_parallelism=4", "data=digits",
             f"latent={latents}", *TINY, "stage=train", "hydra.sweep.dir=sweep"]  # fmt: skip
    watch = RunningJobs()
    watch.start()
    result = vae_run(*sweep, cwd=tmp_path, check=False)
    watch.stopped.set()
    assert result.returncode == 3, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("vae-run: error: 1 of 12 runs failed, the others")
    assert 2 <= watch.most <= 4
    with open(tmp_path / "sweep" / "summary.csv") as handle:
        rows = {row["latent"]: row for row in csv.DictReader(handle)}
    assert sorted(rows, key=int) == [str(n) for n in range(12)]
    assert rows["0"]["state"] == "failed" and "latent must be an integer >= 1" in rows["0"]["error"]
    assert all(rows[str(n)]["state"] == "finished" and float(rows[str(n)]["val/loss"]) > 0 for n in range(1, 12))
    logs = list((tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert len(logs) == 12  # each run was a job of its own
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


def test_a_job_at_its_time_limit_is_requeued_by_submitit_and_ends_as_an_uninterrupted_run(slurm, tmp_path):
    """timeout_min=1 with Slurm's --signal 50 s before it: the job gets USR2 in its first half minute (Slurm
    looks every 30 s), submitit requeues it (up to max_num_timeout times), the new process resumes from the
    last checkpoint, and the run ends with the metrics of one never stopped."""
    run = ["data=digits", "latent=2", *TINY, "trainer.max_epochs=60", "trainer.limit_train_batches=null",
           "stage=train"]  # fmt: skip
    limits = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=50",
              "hydra.launcher.max_num_timeout=6"]  # fmt: skip
    vae_run("-m", "hydra/launcher=slurm", *SMALL_JOBS, *limits, *run, "hydra.sweep.dir=sweep", cwd=tmp_path)
    run_dir = tmp_path / "sweep" / "0"
    said = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.*"))
    assert "this job is timed-out" in said, said[-3000:]
    assert "Resuming from " in (run_dir / "vae_run.log").read_text()
    vae_run(*run, "hydra.run.dir=plain", cwd=tmp_path)
    assert read_metrics(run_dir)["val/loss"] == pytest.approx(read_metrics(tmp_path / "plain")["val/loss"], rel=1e-6)
