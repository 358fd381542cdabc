"""Groups of training steps (Keras' ``steps_per_execution``): Lightning is handed ``size`` consecutive
batches at a time as one item, and the LightningModule takes one optimizer step on each, so Lightning's
per-item work (hooks, progress, the fetcher) is paid once per group instead of once per step.

Everything that has to know about groups lives here:
- ``BatchGroup`` and ``batches_of`` (vaerun.data.batches): what the data module yields and what the module
  and callbacks iterate;
- ``StepGroups``: the Trainer arguments that would count groups where the user means steps
  (``limit_train_batches``, an integer ``val_check_interval``) or that Lightning refuses under manual
  optimisation (gradient clipping) are taken over and applied in steps;
- ``StepProgressBar``: Lightning's bar, counting steps.

Metrics keep their x-axis in optimizer steps because the module logs ``step`` with its epoch and
validation values (Lightning takes a logged ``step`` as the x value) and its step values itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from vaerun.core.checks import ConfigError, is_int
from vaerun.training.adapters import set_validation_interval


@dataclass(frozen=True)
class StepGroups:
    """Steps per item, and the Trainer arguments applied in steps instead of by Lightning."""

    size: int = 1
    limit_train_batches: int | float | None = None
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"

    #: the Trainer arguments taken over: Lightning would count the first in items and refuses the others
    #: under manual optimisation
    TRAINER_KEYS = ("limit_train_batches", "gradient_clip_val", "gradient_clip_algorithm")

    @classmethod
    def from_trainer_config(
        cls, steps_per_execution: int, trainer: Mapping[str, Any]
    ) -> tuple[StepGroups, dict[str, Any]]:
        """The groups, and the Trainer's keyword arguments without the keys they take over."""
        taken = {key: trainer[key] for key in cls.TRAINER_KEYS if trainer.get(key) is not None}
        rest = {key: value for key, value in trainer.items() if key not in cls.TRAINER_KEYS}
        return cls(size=steps_per_execution, **taken), rest

    def validation_interval_in_items(self, interval: int, steps_per_epoch: int, across_epochs: bool) -> int:
        """An integer ``trainer.val_check_interval`` counts optimizer steps, but Lightning counts items.
        The interval in items, with which validation runs after the very steps it would with one step per
        item; a ConfigError where no such interval exists (the config checks have made sure it is a
        multiple of the group). ``across_epochs``: ``trainer.check_val_every_n_epoch=null``."""
        key = f"trainer.val_check_interval={interval}"
        if not across_epochs and interval > steps_per_epoch:  # Lightning would stop inside fit, in items
            raise ConfigError(
                f"{key} is more than an epoch's {steps_per_epoch} training steps: give at most "
                f"{steps_per_epoch}, a fraction of the epoch, or trainer.check_val_every_n_epoch=null to "
                "count steps across epochs"
            )
        if self.size == 1:
            return interval
        short_last_group = steps_per_epoch % self.size != 0
        items = interval // self.size
        if across_epochs and short_last_group:
            raise ConfigError(
                f"{key} with trainer.check_val_every_n_epoch=null counts steps across epochs, but an "
                f"epoch's {steps_per_epoch} steps end in a group shorter than steps_per_execution="
                f"{self.size}: set steps_per_execution to a divisor of {steps_per_epoch} (1 always is)"
            )
        if not across_epochs and short_last_group and -(-steps_per_epoch // self.size) % items == 0:
            raise ConfigError(
                f"{key}: an epoch's {steps_per_epoch} steps end in a group shorter than steps_per_execution="
                f"{self.size}, and validation would run after it as well; give another multiple of "
                f"{self.size}, a fraction of the epoch, or set steps_per_execution=1"
            )
        return items

    def count_validation_interval(
        self, trainer: pl.Trainer, trainer_cfg: Mapping[str, Any], steps_per_epoch: int
    ) -> None:
        """Give Lightning an integer ``val_check_interval`` in items. Under DDP an item is one step (and
        the shards' sizes are not known yet): Lightning checks the interval itself."""
        interval = trainer_cfg.get("val_check_interval")
        if not is_int(interval) or trainer.world_size > 1:
            return
        across_epochs = trainer_cfg.get("check_val_every_n_epoch", 1) is None
        items = self.validation_interval_in_items(interval, steps_per_epoch, across_epochs)
        set_validation_interval(trainer, items)


class StepProgressBar(TQDMProgressBar):
    """Lightning's bar, counting batches (optimizer steps) instead of the items Lightning hands over, which
    are groups of them; without the logger's version, which vaerun's loggers do not vary."""

    @property
    def total_train_batches(self) -> int | float:
        return getattr(self.trainer.train_dataloader, "num_batches", super().total_train_batches)

    def get_metrics(self, trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, module)
        metrics.pop("v_num", None)
        return metrics

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._first_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        steps_done = trainer.global_step - self._first_step  # what the bar shows as n = batch_idx + 1
        super().on_train_batch_end(trainer, module, outputs, batch, steps_done - 1)
