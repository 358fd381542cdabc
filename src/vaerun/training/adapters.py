"""The few internals of Lightning and TensorBoard that vaerun relies on, each behind one function here and
each pinned by tests/test_adapters.py, so that an upgrade that changes one fails there, loudly, instead of
silently somewhere in a run.

- A captured CUDA graph's replays are optimizer steps Lightning does not see: they are counted with the
  hooks Lightning's manual loop installs on its optimizer wrapper (``_on_before_step``/``_on_after_step``,
  which advance ``trainer.global_step``).
- TensorBoard's HParams tab pairs hparams with the run's own metric tags only through the writer's
  low-level file writer (``SummaryWriter._get_file_writer``): ``add_hparams`` would log a copy of each.
- An integer ``val_check_interval`` counted in steps is known in items only once the data is set up, after
  the Trainer is built; Lightning reads ``trainer.val_check_interval`` when fit starts.
- Every Trainer built where ``srun`` is on PATH but not used warns so, by its text (Lightning's
  ``SLURMEnvironment._validate_srun_used``): outside a Slurm job that is every run on a cluster's login node.
- Every Trainer logs tips for Lightning's cloud services (litlogger, litmodels) through its rank-zero logger,
  each line starting with LIGHTNING_TIP.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.warnings import PossibleUserWarning

#: the start of Lightning's warning that srun is on PATH but the process was not started by it
UNUSED_SRUN_WARNING = "The `srun` command is available on your system but is not used"
#: the logger and the start of Lightning's tips for its cloud services
LIGHTNING_INFO_LOGGER = "pytorch_lightning.utilities.rank_zero"
LIGHTNING_TIP = "💡 Tip:"


def step_counting_hooks(optimizer: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    """What Lightning's manual loop calls around an optimizer step (``LightningOptimizer``'s hooks): the
    second advances ``trainer.global_step``."""
    return optimizer._on_before_step, optimizer._on_after_step


def tensorboard_file_writer(experiment: Any) -> Any:
    """The SummaryWriter's event file writer (made on first use, as ``SummaryWriter.add_*`` make it), to
    add a ready-made summary protobuf."""
    return experiment._get_file_writer()


def set_validation_interval(trainer: pl.Trainer, items: int) -> None:
    """Validate every ``items`` training items (Lightning's own count), set on a built Trainer before fit."""
    trainer.val_check_interval = items


def hush_unused_srun_outside_slurm() -> None:
    """Outside a Slurm job, drop Lightning's warning that ``srun`` is available but unused: true on every
    cluster's login node, and nothing the run should change. Inside a job (SLURM_JOB_ID set), where
    several processes not started by srun would wait for each other forever, it stays."""
    if "SLURM_JOB_ID" not in os.environ:
        warnings.filterwarnings("ignore", message=UNUSED_SRUN_WARNING, category=PossibleUserWarning)


def _not_a_lightning_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(LIGHTNING_TIP)


def hush_lightning_tips() -> None:
    """Drop Lightning's tips for its cloud services from every run's output and log: advertisements for
    packages the run does not use. Lightning's other lines (the devices found and used) stay."""
    info_logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    if _not_a_lightning_tip not in info_logger.filters:
        info_logger.addFilter(_not_a_lightning_tip)
