"""A trial of an Optuna search reports its validation metric after every epoch to the study, through the
study's storage (so from any process or machine), and stops when the study's pruner says the trial is
unpromising. The run then ends like any other, with its checkpoints, and metrics.json says at which epoch
it was pruned (vaerun.search.outcome reads that as the trial's state PRUNED)."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import pytorch_lightning as pl

from vaerun.search.study import TrialHandle, load_study

log = logging.getLogger(__name__)


class TrialPruning(pl.Callback):
    def __init__(self, handle: TrialHandle) -> None:
        self.handle = handle
        self.pruned_epoch: int | None = None
        self._trial: Any = None

    def _open_trial(self) -> Any:
        if self._trial is None:
            import optuna

            study = load_study(self.handle.storage, self.handle.study)
            storage = study._storage  # the storage interface's own lookups (public to storage writers)
            study_id = storage.get_study_id_from_name(self.handle.study)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.handle.trial)
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.handle.monitor)
            if value is not None and math.isfinite(float(value)):
                trial = self._open_trial()
                # a resumed run reports its epochs again: Optuna keeps the first
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*already reported.*")
                    trial.report(float(value), step=trainer.current_epoch)
                prune = trial.should_prune()
        if trainer.world_size > 1:  # every process stops at the same epoch
            prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            self.pruned_epoch = trainer.current_epoch
            trainer.should_stop = True
            if trainer.is_global_zero:
                log.info(
                    "Trial %d pruned after epoch %d (%s by the study's pruner)",
                    self.handle.trial,
                    trainer.current_epoch,
                    self.handle.monitor,
                )
