"""One writer per run directory: a run holds an exclusive lock on ``.vaerun.lock`` in its directory for as
long as its process lives, so that a second process aimed at the same directory (a sweep started twice, a
requeued job racing its original, two trials landing in one folder) stops with one line naming the owner
before it writes anything, instead of training beside it into the same files.

The lock is the operating system's (``fcntl.flock``), held through an open file: it goes when its process
does, however that ends (a crash, SIGKILL, a preempted job), so a killed or requeued run takes its directory
over and resumes. The file itself names the owner (host, pid, Slurm job, start time) for the message; its
presence alone means nothing. On a shared file system the lock holds across machines where the file system
supports it (NFS v4, Lustre and GPFS with their lock options); where it does not, flock only sees the
processes of one machine. Pure Python: decided before torch is imported.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from vaerun.cli.run_state import process_rank
from vaerun.core.errors import exit_with_error

LOCK_FILE = ".vaerun.lock"

#: the locks this process holds: directory -> the open lock file (closing it releases the lock)
_held: dict[Path, int] = {}


def owner_record() -> dict[str, Any]:
    """Who this process is, for the message another process prints."""
    slurm_job = os.environ.get("SLURM_JOB_ID")
    if slurm_job and "SLURM_ARRAY_TASK_ID" in os.environ:
        slurm_job = f"{os.environ.get('SLURM_ARRAY_JOB_ID', slurm_job)}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job": slurm_job,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def describe(owner: dict[str, Any]) -> str:
    """'process 123 on node7 (Slurm job 456), since 2026-12-05 10:00:00', from a lock file's record."""
    if not owner:
        return "another process"
    slurm = f" (Slurm job {owner['slurm_job']})" if owner.get("slurm_job") else ""
    return f"process {owner.get('pid')} on {owner.get('host')}{slurm}, since {owner.get('started')}"


def acquire(directory: Path, key: str) -> None:
    """Hold the lock of ``directory`` (made if missing) until this process ends or ``release``; where
    another process holds it, exit with one line naming that process and ``key``, touching nothing."""
    directory = directory.resolve()
    if directory in _held:
        return
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read(descriptor)
        os.close(descriptor)
        exit_with_error(
            f"{key}: {directory} is in use by {describe(owner)}; wait for that run to end, or pick another "
            "directory"
        )
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, (json.dumps(owner_record()) + "\n").encode(), 0)
    _held[directory] = descriptor


def release(directory: Path) -> None:
    """Give up the lock of ``directory`` if this process holds it (a multirun's job that ended)."""
    descriptor = _held.pop(directory.resolve(), None)
    if descriptor is not None:
        os.close(descriptor)


def _read(descriptor: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(descriptor, 4096, 0).decode() or "{}")
    except (OSError, ValueError):  # written at this instant, or not by us
        return {}


class RunDirLock(Callback):
    """Hydra callback: a run's directory is locked before Hydra writes into it; a sweep's directory for the
    whole sweep; each job's directory of a sweep while the job runs. Only rank 0 of a distributed run
    locks; its other processes share rank 0's directory."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if process_rank() == 0:
            acquire(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        acquire(Path(config.hydra.sweep.dir), "hydra.sweep.dir")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if HydraConfig.get().mode == RunMode.MULTIRUN and process_rank() == 0:
            acquire(Path(HydraConfig.get().runtime.output_dir), "hydra.sweep.dir")

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            release(Path(HydraConfig.get().runtime.output_dir))
