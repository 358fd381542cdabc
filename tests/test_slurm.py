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

from vaerun.search.study import load_study, storage_url

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
    # 8 CPUs declared on 2 cores: room for more than array_parallelism=4 jobs at once
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


def queued_jobs(*states: str) -> list[tuple[str, str]]:
    """(array job id, job id) of each job squeue shows, in the given states (default: any); a job of no
    array is its own array."""
    state_filter = ["-t", ",".join(states)] if states else []
    shown = subprocess.run(["squeue", "-h", *state_filter, "-o", "%F %i"], capture_output=True, text=True)
    return [tuple(line.split()) for line in shown.stdout.splitlines()]


class RunningJobs(threading.Thread):
    """The most jobs squeue shows running at once, polled until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.most, self.stopped = 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.most = max(self.most, len(queued_jobs("R")))
            time.sleep(0.2)


def test_a_12_run_sweep_keeps_to_its_array_parallelism_and_a_failing_run_loses_no_other(slurm, tmp_path):
    """12 jobs, at most 4 at once (Slurm's array limit, from hydra.launcher.array_parallelism), on a node
    with room for 8; a block 9 pixels wide passes its key's rule and is refused in its job, on 8 x 8 digits:
    the 4 runs with it fail there, the other 8 finish, the summary marks them, the sweep exits 3."""
    sweep = ["-m", "hydra/launcher=slurm", *SMALL_JOBS, "hydra.launcher.array_parallelism=4", "data=digits",
             "model=dae", "corruption=block_mask", "corruption.size=2,4,9", "latent=1,2,3,4", *TINY,
             "stage=train", "hydra.sweep.dir=sweep"]  # fmt: skip
    watch = RunningJobs()
    watch.start()
    result = vae_run(*sweep, cwd=tmp_path, check=False)
    watch.stopped.set()
    assert result.returncode == 3, result.stderr[-2000:]
    assert (
        result.stderr.strip().splitlines()[-1].startswith("vae-run: error: 4 of 12 runs failed, the others")
    )
    assert 2 <= watch.most <= 4
    with open(tmp_path / "sweep" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    swept = sorted((row["corruption.size"], row["latent"]) for row in rows)
    assert swept == [(size, latent) for size in ("2", "4", "9") for latent in ("1", "2", "3", "4")]
    for row in rows:
        if row["corruption.size"] == "9":
            assert row["state"] == "failed" and "corruption.size must be an integer in [1, 8]" in row["error"]
        else:
            assert row["state"] == "finished" and float(row["val/loss"]) > 0
    logs = list((tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert len(logs) == 12  # each run was a job of its own
    # no accounting here: one line says so, instead of sacct's and submitit's complaints at every poll
    said = result.stdout + result.stderr
    assert said.count("Slurm keeps no job accounting here") == 1
    assert "sacct error" not in said and "accounting storage is disabled" not in said


#: the run the requeue and time-limit tests stop half way; 6 epochs of digits
RESUMED_RUN = ["data=digits", "latent=2", *TINY, "trainer.max_epochs=6", "trainer.limit_train_batches=null"]
_uninterrupted: dict[str, float] = {}


def uninterrupted_metrics(tmp_path: Path) -> dict[str, float]:
    """The metrics of RESUMED_RUN never stopped, run without Slurm (once for the tests that compare)."""
    if not _uninterrupted:
        vae_run(*RESUMED_RUN, "hydra.run.dir=plain", cwd=tmp_path)
        _uninterrupted.update(read_metrics(tmp_path / "plain"))
    return _uninterrupted


def stopped_half_way(tmp_path: Path, launcher: list[str], stop: list[str]) -> Path:
    """RESUMED_RUN as the job of a Slurm sweep; once its run has a checkpoint (an epoch done), ``stop`` is
    run with the job's id; returns the run directory once the sweep has ended, as it must, without error."""
    command = [str(VAE_RUN), "-m", "hydra/launcher=slurm", *SMALL_JOBS, *launcher, *RESUMED_RUN]
    sweep = subprocess.Popen(
        [*command, "hydra.sweep.dir=sweep"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run_dir = tmp_path / "sweep" / "0"
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.ckpt").exists():
        assert time.monotonic() < deadline and sweep.poll() is None, sweep.communicate()[0]
        time.sleep(0.2)
    job = [job for _, job in queued_jobs()]
    assert len(job) == 1
    subprocess.run([*stop, job[0]], check=True)
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, output
    return run_dir


def ends_as_if_never_stopped(run_dir: Path, tmp_path: Path) -> None:
    assert "Resuming from " in (run_dir / "vae_run.log").read_text()
    resumed, plain = read_metrics(run_dir), uninterrupted_metrics(tmp_path)
    for key in ("test/loss", "test/kl", "test/nll_iwae"):
        assert resumed[key] == pytest.approx(plain[key], rel=1e-6), key


def test_a_requeued_job_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(slurm, tmp_path):
    """`scontrol requeue` in the middle of training: Slurm kills the job and starts it again, the new process
    takes the run directory over (its lock went with the killed one) and resumes from the last checkpoint."""
    run_dir = stopped_half_way(tmp_path, [], ["scontrol", "requeue"])
    ends_as_if_never_stopped(run_dir, tmp_path)


def test_a_ddp_run_over_two_slurm_tasks_ends_as_the_same_run_without_slurm(slurm, tmp_path):
    """device=ddp trainer.devices=2 as two Slurm tasks of one job: Lightning takes the ranks from Slurm
    (no processes of its own), rank 0 alone writes the one run directory; the metrics are those of the same
    DDP run started without Slurm (Lightning's own two processes)."""
    run = ["device=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "data=digits", "latent=2", *TINY,
           "trainer.max_epochs=2", "stage=train"]  # fmt: skip
    tasks = ["hydra.launcher.tasks_per_node=2", *SMALL_JOBS]
    vae_run("-m", "hydra/launcher=slurm", *tasks, *run, "hydra.sweep.dir=sweep", cwd=tmp_path)
    log = (tmp_path / "sweep" / "0" / "vae_run.log").read_text()
    said = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.*"))
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in said + log
    assert [p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir() and not p.name.startswith(".")] == [
        "0"
    ]
    vae_run(*run, "hydra.run.dir=plain", cwd=tmp_path)
    on_slurm, plain = read_metrics(tmp_path / "sweep" / "0"), read_metrics(tmp_path / "plain")
    assert on_slurm["val/loss"] == pytest.approx(plain["val/loss"], rel=1e-6)


def test_a_study_runs_its_trials_as_slurm_jobs_which_report_their_epochs_to_it(slurm, tmp_path):
    search = ["-m", "hydra/sweeper=optuna", "hydra/launcher=slurm", *SMALL_JOBS, "hydra.sweeper.n_trials=2",
              "hydra.sweeper.n_jobs=2", "latent=choice(2, 3)", "data=digits", *TINY, "trainer.max_epochs=2",
              "stage=train", "hydra.sweep.dir=sweep"]  # fmt: skip
    vae_run(*search, cwd=tmp_path)
    study = load_study(storage_url(None, tmp_path / "sweep"), "vaerun")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:  # reported by the jobs, through the journal file
        assert sorted(trial.intermediate_values) == [0, 1]
        assert trial.value == read_metrics(tmp_path / "sweep" / str(trial.number))["val/loss"]
    assert len(list((tmp_path / "sweep" / ".submitit").rglob("*_log.out"))) == 2


def test_a_job_signalled_before_its_time_limit_is_requeued_by_submitit_and_ends_as_an_uninterrupted_run(
    slurm, tmp_path
):
    """The job asks Slurm for USR2 50 s before its time limit (--time and --signal in its script). Slurm
    checks the limits only every 30 s, so the test sends that signal itself once the run has a checkpoint,
    as Slurm would (scancel --signal=USR2): submitit takes it for the time limit, requeues the job (its one
    allowed timeout, max_num_timeout=1), and the new process resumes and ends as a run never stopped."""
    limits = ["hydra.launcher.timeout_min=10", "hydra.launcher.signal_delay_s=50",
              "hydra.launcher.max_num_timeout=1"]  # fmt: skip
    run_dir = stopped_half_way(tmp_path, limits, ["scancel", "--signal=USR2"])
    script = next((tmp_path / "sweep" / ".submitit").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --signal=USR2@50" in script and "#SBATCH --time=10" in script
    said = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.*"))
    assert "this job is timed-out" in said and "(0 remaining timeouts)" in said, said[-3000:]
    ends_as_if_never_stopped(run_dir, tmp_path)
