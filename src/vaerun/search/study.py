"""The study behind a search: its storage (a journal file in the sweep folder unless told otherwise, so that a
search survives its own process and its trials' jobs report to it from other processes and machines), its
seeded sampler and its pruner, and what a trial's job needs to find it again.

The sweeper hands each job its trial through the environment (``hydra.job.env_set``, which every launcher
applies around the job): the storage, the study's name and the trial's number. The job's pruning callback
(vaerun.training.pruning) loads the study from the storage with the pruner the sweeper recorded there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: what the sweeper sets in each trial's environment: {"storage", "study", "trial", "monitor"}
TRIAL_VARIABLE = "VAERUN_OPTUNA_TRIAL"
#: the default storage's file in the sweep folder (Optuna's journal: appends, file-locked, NFS-safe)
JOURNAL_FILE = "optuna-journal.log"


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """``storage``: null for the journal file in the sweep folder; a path ending in .log or .journal for a
    journal file elsewhere; any SQLAlchemy URL (sqlite:///study.db, postgresql://...) for a database."""
    if storage is None:
        return f"journal:{(sweep_dir / JOURNAL_FILE).resolve()}"
    if "://" in storage:
        return storage
    return f"journal:{Path(storage).expanduser().resolve()}"


def open_storage(url: str) -> Any:
    """The Optuna storage a URL names (``journal:PATH`` for a journal file)."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # open-based locking: flock-free, the journal's way on NFS and on Lustre
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    return optuna.storages.RDBStorage(url)


def make_sampler(name: str, seed: int | None) -> Any:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.GPSampler(seed=seed)


@dataclass(frozen=True)
class PrunerSpec:
    """The pruner, as the sweeper records it in the study for the jobs to rebuild."""

    name: str | None
    startup_trials: int = 2
    warmup_epochs: int = 1
    max_epochs: int | None = None

    def build(self) -> Any:
        import optuna

        if self.name == "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=self.startup_trials, n_warmup_steps=self.warmup_epochs
            )
        if self.name == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=self.max_epochs or "auto")
        return optuna.pruners.NopPruner()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "startup_trials": self.startup_trials,
            "warmup_epochs": self.warmup_epochs,
            "max_epochs": self.max_epochs,
        }


def load_study(storage: str, name: str, sampler: Any = None) -> Any:
    """A study as it is in its storage, with the pruner recorded in it."""
    import optuna

    study = optuna.load_study(study_name=name, storage=open_storage(storage), sampler=sampler)
    spec = PrunerSpec(**study.user_attrs.get("pruner", {"name": None}))
    study.pruner = spec.build()
    return study


@dataclass(frozen=True)
class TrialHandle:
    """What a trial's job reads from its environment."""

    storage: str
    study: str
    trial: int
    monitor: str  # the validation metric reported after each epoch (val/loss)

    def to_env(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @staticmethod
    def from_env() -> TrialHandle | None:
        text = os.environ.get(TRIAL_VARIABLE)
        return TrialHandle(**json.loads(text)) if text else None
