"""What a run directory already holds, so that re-running a command (a sweep, typically) skips the runs
that finished, resumes a killed one from its last checkpoint, and never mixes two configs in one directory.

``job.json`` in the run directory records the config's fingerprint, whether the run finished, and a copy
of the run's ``.hydra`` files: Hydra rewrites those before any code of ours runs, so a re-run that skips,
or is refused, puts the original ones back. Pure Python: decided before torch is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vaerun.cli import output_folder
from vaerun.core import run_files
from vaerun.core.atomic import write_text_atomically
from vaerun.core.checkpoints import FOLDER as CHECKPOINT_FOLDER
from vaerun.core.checkpoints import last_checkpoint
from vaerun.core.errors import ConfigError, exit_with_error

STATE_FILE = "job.json"
#: what a run writes (file name patterns in its directory); force=true removes these before running again.
#: TensorBoard writes into the run directory itself: its events, hparams.yaml and the projector's files.
ARTIFACTS = (
    CHECKPOINT_FOLDER,
    "images",
    "metrics.json",
    STATE_FILE,
    "csv",
    "events.out.tfevents.*",
    "hparams.yaml",
    "projector_config.pbtxt",
    "[0-9][0-9][0-9][0-9][0-9]",  # the projector's data, one folder per global step
    "background",  # stage=anomaly's own background model (anomaly.background_mutation_rate)
)
#: keys that do not change what a run computes
NOT_FINGERPRINTED = ("force", "resume")


def process_rank() -> int:
    """This process's rank in a distributed run, from the variables launchers set (as Lightning does): only
    rank 0 decides what to do with a run directory and holds its lock; the others follow it."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def fingerprint(config: dict[str, Any]) -> str:
    kept = {key: value for key, value in config.items() if key not in NOT_FINGERPRINTED}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    skip: bool = False
    resume_from: Path | None = None


def plan(run_dir: Path, config_fingerprint: str, force: bool) -> Plan:
    """skip (finished with this config), resume (killed, with a last checkpoint) or start fresh."""
    state_file = run_dir / STATE_FILE
    if force:
        for path in (path for pattern in ARTIFACTS for path in run_dir.glob(pattern)):
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        return Plan()
    if not state_file.is_file():
        return Plan()
    state = json.loads(state_file.read_text())
    if state.get("fingerprint") != config_fingerprint:
        _restore_hydra_files(run_dir, state)
        raise ConfigError(
            f"hydra.run.dir: {run_dir} holds a run of a different config; pick another directory, "
            "or add force=true to replace it"
        )
    if state.get("status") == "finished":
        _restore_hydra_files(run_dir, state)
        return Plan(skip=True)
    return Plan(resume_from=last_checkpoint(run_dir))


def _restore_hydra_files(run_dir: Path, state: dict[str, Any]) -> None:
    for name, text in state.get("hydra_files", {}).items():
        (run_dir / run_files.FOLDER / name).write_text(text)


def record(run_dir: Path, config_fingerprint: str, status: str) -> None:
    """Write job.json (atomically) with the status and a copy of the run's .hydra files."""
    hydra_dir = run_dir / run_files.FOLDER
    files = {p.name: p.read_text() for p in sorted(hydra_dir.glob("*.yaml"))} if hydra_dir.is_dir() else {}
    state = {"fingerprint": config_fingerprint, "status": status, "hydra_files": files}
    write_text_atomically(run_dir / STATE_FILE, json.dumps(state, indent=1) + "\n")


def unfinished_runs(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The run directories under ``root`` that did not finish and have a last checkpoint, with their
    job.json, the most recent checkpoint first."""
    found = []
    for state_file in root.rglob(STATE_FILE):
        run_dir = state_file.parent
        last = last_checkpoint(run_dir)
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        if last and state.get("status") != "finished":
            found.append((last.stat().st_mtime, run_dir, state))
    return [(run_dir, state) for _, run_dir, state in sorted(found, key=lambda entry: entry[0], reverse=True)]


def find_resumable(root: Path, config_fingerprint: str) -> Path | None:
    """The most recent run directory under ``root`` of this config that did not finish and has a last
    checkpoint (what ``resume=true`` continues)."""
    runs = (
        run_dir for run_dir, state in unfinished_runs(root) if state.get("fingerprint") == config_fingerprint
    )
    return next(runs, None)


def overrides_of(state: dict[str, Any]) -> list[str]:
    """The command-line overrides a run's job.json recorded (its .hydra/overrides.yaml)."""
    import yaml

    recorded = yaml.safe_load(state.get("hydra_files", {}).get("overrides.yaml", "[]"))
    return [str(override) for override in recorded or []]


#: the longest run directory name made from overrides; most file systems take 255 bytes
DIRNAME_LIMIT = 200


def dirname(name: str) -> str:
    """A sweep's run directory name from its overrides (``${dirname:${hydra.job.override_dirname}}``): as it
    is up to DIRNAME_LIMIT bytes, else its start and a hash of the whole, so that the name stays the same
    for the same overrides (a re-run finds its runs) and different for different ones."""
    if len(name.encode()) <= DIRNAME_LIMIT:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return name.encode()[: DIRNAME_LIMIT - 11].decode(errors="ignore") + "-" + digest


class WritableOutputDir(Callback):
    """Hydra callback: before Hydra creates the run (or sweep) directory, make sure it can, and answer with
    one clear line instead of a traceback when it cannot."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_empty("hydra.run.dir", config.hydra.run.dir)
        output_folder.note(Path(config.hydra.run.dir))  # as it was again if refused before the run starts
        _ensure_writable("hydra.run.dir", Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_empty("hydra.sweep.dir", config.hydra.sweep.dir)
        output_folder.note(Path(config.hydra.sweep.dir))  # likewise, before the first run
        _ensure_writable("hydra.sweep.dir", Path(config.hydra.sweep.dir))


def _refuse_empty(key: str, directory: Any) -> None:
    """``hydra.run.dir=`` reads as "", which Path takes for the working directory: the run's files would go
    in among the user's own."""
    if directory is None or not str(directory).strip():
        exit_with_error(f"{key}= is empty: give a directory ({key}=. for this one), or leave it out")


def _ensure_writable(key: str, directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".vaerun-write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        exit_with_error(f"{key}: cannot write to {directory}: {err.strerror}")
