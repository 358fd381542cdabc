"""The configured stage(s) run one after the other on one ``Run``, with the run's state recorded and its
hyperparameters logged once at the end."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from vaerun.core.checks import ConfigError
from vaerun.core.errors import first_line
from vaerun.stages.anomaly import detect_anomalies
from vaerun.stages.assembly import setup
from vaerun.stages.context import Run
from vaerun.stages.evaluate import evaluate
from vaerun.stages.impute import impute
from vaerun.stages.sample import sample
from vaerun.stages.train import train, train_unless_checkpoint
from vaerun.training.adapters import tensorboard_file_writer
from vaerun.training.guards import Interruptions

log = logging.getLogger(__name__)

#: what each value of ``stage`` (vaerun.core.names.STAGES) runs, in order
STAGE_STEPS: dict[str, tuple[Callable[[Run], None], ...]] = {
    "all": (train, evaluate, sample),
    "train": (train,),
    "eval": (evaluate,),
    "sample": (sample,),
    "impute": (train_unless_checkpoint, impute),
    "anomaly": (train_unless_checkpoint, detect_anomalies),
}

#: the splits beyond train that each stage reads (an empty train split is refused where the data is read):
#: training keeps its best checkpoint by val/loss, as early stopping and a search's pruning read it
SPLITS_READ: dict[Callable[[Run], None], tuple[str, ...]] = {
    train: ("val",),
    train_unless_checkpoint: ("val",),
    evaluate: ("test",),
    sample: ("test",),
    impute: ("test",),
    detect_anomalies: ("test",),
}


def steps_of(stage: str, ckpt: str | None) -> list[Callable[[Run], None]]:
    """What a run of ``stage`` runs: impute and anomaly train first only without ``ckpt``."""
    return [s for s in STAGE_STEPS[stage] if not (s is train_unless_checkpoint and ckpt is not None)]


def splits_read(stage: str, ckpt: str | None) -> set[str]:
    """The splits a run of ``stage`` reads beyond train."""
    return {split for step in steps_of(stage, ckpt) for split in SPLITS_READ[step]}


#: the name each stage's time is recorded under (time/NAME_s in metrics.json)
TIMED_AS: dict[Callable[[Run], None], str] = {
    train: "train",
    train_unless_checkpoint: "train",
    evaluate: "eval",
    sample: "sample",
    impute: "impute",
    detect_anomalies: "anomaly",
}

#: what Lightning's DDP launcher sets in the launching process; restored after each run of a multirun
DISTRIBUTED_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")


@rank_zero_only
def _log_hparams(run: Run) -> None:
    hp = run.module.hparams
    params = {
        **{f"choice/{k}": v for k, v in hp.get("choices", {}).items()},
        "latent": hp["latent"],
        "lr": hp["optimizer"].get("lr"),
        "batch_size": run.cfg["data"]["batch_size"],
        "seed": run.cfg["seed"],
        "data.source_used": run.cfg["data"]["source_used"],
        "stage": run.cfg["stage"],
        "binarize": run.datamodule.binarize,
        "iwae_samples": run.cfg["eval"]["iwae_samples"],
    }
    for logger in run.loggers:
        logger.log_hyperparams(params)
        if isinstance(logger, TensorBoardLogger):
            _pair_hparams_with_metrics(logger, params, list(run.metrics))
            # Lightning writes hparams.yaml only when it is missing, and fit already wrote an empty one.
            Path(logger.log_dir, "hparams.yaml").unlink(missing_ok=True)
        logger.save()


def _pair_hparams_with_metrics(logger: TensorBoardLogger, params: dict[str, Any], tags: list[str]) -> None:
    """TensorBoard's HParams tab, reading the run's own metric tags (test/loss, ...): the experiment's
    summaries name them, so no copy of each metric is logged as a one-point hparams/* chart (which
    log_hyperparams with metrics would do)."""
    from torch.utils.tensorboard.summary import hparams

    shown = {
        key: value if isinstance(value, int | float | str | bool) else str(value)
        for key, value in params.items()
    }
    writer = tensorboard_file_writer(logger.experiment)
    for summary in hparams(shown, dict.fromkeys(tags, 0.0)):
        writer.add_summary(summary)


@rank_zero_only
def _record_state(record_status: Callable[[str], None] | None, status: str) -> None:
    if record_status is not None:
        record_status(status)


@rank_zero_only
def _report_time(run: Run, stage: str) -> None:
    """The stage's wall time and its parts, into the log and metrics.json."""
    parts = sorted((name, seconds) for name, seconds in run.timings.items() if name.startswith(f"{stage}_"))
    detail = ", ".join(f"{name.removeprefix(stage + '_')} {seconds:.1f} s" for name, seconds in parts)
    log.info("Stage %s: %.1f s%s", stage, run.timings[stage], f" ({detail})" if detail else "")
    run.write_record()


def _end_distributed(saved_environment: dict[str, str | None]) -> None:
    """Close the process group and restore the environment, so that the next run of a multirun starts its
    own processes on a fresh port instead of joining the finished run's group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key, value in saved_environment.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run(
    cfg: dict[str, Any],
    run_dir: Path,
    choices: dict[str, str] | None = None,
    overridden: set[str] | None = None,
    resume_from: Path | None = None,
    record_status: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Run the configured stage(s); returns the final metrics. ``resume_from``: the last checkpoint of a
    killed run of the same config in the same directory, to continue training from. ``record_status``
    is told "running" once the run is set up and "finished" at its end (the command line's run state).
    Ctrl-C and SIGTERM raise ``vaerun.training.guards.RunInterrupted`` (during training, after saving a
    checkpoint)."""
    saved_environment = {key: os.environ.get(key) for key in DISTRIBUTED_ENVIRONMENT}
    interruptions = Interruptions()
    try:
        with interruptions.installed():
            if resume_from is None and cfg["ckpt"] is not None and train in STAGE_STEPS[cfg["stage"]]:
                resume_from = Path(cfg["ckpt"])  # training from a checkpoint continues it: epoch, optimizer
            try:
                state = setup(
                    cfg,
                    run_dir,
                    choices or {},
                    overridden or set(),
                    resume_from=resume_from,
                    interruptions=interruptions,
                    splits_read=splits_read(cfg["stage"], cfg["ckpt"]),
                )
            except ConfigError:
                raise
            except Exception as err:  # a value no check knows, refused by a library: still one line
                raise ConfigError(f"the run could not be set up ({first_line(err, with_type=True)})") from err
            _record_state(record_status, "running")
            for stage in steps_of(cfg["stage"], cfg["ckpt"]):  # no "Stage train: 0.0 s" from a ckpt
                with state.timed(TIMED_AS[stage]):
                    stage(state)
                _report_time(state, TIMED_AS[stage])
                if state.pruned:  # an unpromising trial of a search: no evaluation spent on it
                    break
            _log_hparams(state)
            for logger in state.loggers:
                logger.finalize("success")
            _record_state(record_status, "finished")
    finally:
        _end_distributed(saved_environment)
    return state.metrics
