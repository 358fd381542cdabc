"""stage=train: fit with validation, writing best and last checkpoints."""

from __future__ import annotations

import logging
import warnings

from vaerun.search.outcome import PRUNED_KEY
from vaerun.stages.context import Run, scalars
from vaerun.training.pruning import TrialPruning

log = logging.getLogger(__name__)


def train(run: Run) -> None:
    if run.resume_from is not None and run.trainer.is_global_zero:
        log.info("Resuming from %s: epoch, optimizer, batch order and random state", run.resume_from)
    with warnings.catch_warnings():
        # ckpt= of another run continues here by design, writing this run's checkpoints, not into that one's
        warnings.filterwarnings("ignore", message="The dirpath has changed from")
        # weights_only: a checkpoint to resume from is data; it cannot run code when loaded
        run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=run.resume_from, weights_only=True)
    run.metrics.update(scalars(run.trainer.callback_metrics, prefix="val/"))
    # Into metrics.json (not the loggers: their val/loss curve has every epoch already): the best validation
    # loss, what a search optimises by default, and the epoch a search's pruner stopped the run at.
    best = run.checkpoint.best_model_score
    if best is not None and run.checkpoint.monitor:
        run.record[run.checkpoint.monitor] = run.metrics[run.checkpoint.monitor] = float(best)
    pruning = next((c for c in run.trainer.callbacks if isinstance(c, TrialPruning)), None)
    if pruning is not None and pruning.pruned_epoch is not None:
        run.record[PRUNED_KEY] = pruning.pruned_epoch
        run.pruned = True
    if run.trainer.is_global_zero:
        log.info(
            "Checkpoints: %s (best: %s)", run.checkpoint.dirpath, run.checkpoint.best_model_path or "none"
        )


def train_unless_checkpoint(run: Run) -> None:
    """impute's and anomaly's training: the pipeline runs it only without ckpt=
    (vaerun.stages.pipeline.steps_of), whose model they use as it is."""
    train(run)
