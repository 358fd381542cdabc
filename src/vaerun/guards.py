"""Guards of a training run: stop at the first non-finite loss with a message naming the step and the
term, save a checkpoint on Ctrl-C, and write checkpoints atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import Tensor


class NonFiniteLossError(RuntimeError):
    """The loss became nan or inf; the message names the step and the term that blew up."""


class NonFiniteWatch:
    """Remembers, on the device and without a host sync, the first step at which any loss term was not
    finite and which terms were; ``check()`` (one sync) raises NonFiniteLossError if that happened."""

    def __init__(self) -> None:
        self.first_step: Tensor | None = None  # -1 while all is well
        self.bad_terms: Tensor | None = None
        self.names: tuple[str, ...] = ()

    def observe(self, values: Tensor, names: tuple[str, ...], step: int) -> None:
        """``values``: the step's loss terms stacked, in the order of ``names``."""
        if self.first_step is None:
            self.first_step = torch.full((), -1, dtype=torch.long, device=values.device)
            self.bad_terms = torch.zeros(len(names), dtype=torch.bool, device=values.device)
            self.names = names
        bad = ~torch.isfinite(values)
        newly = bad.any() & (self.first_step < 0)
        self.first_step = torch.where(newly, torch.tensor(step, device=values.device), self.first_step)
        self.bad_terms = torch.where(newly, bad, self.bad_terms)

    def check(self) -> None:
        if self.first_step is None or int(self.first_step) < 0:
            return
        bad = [name for name, is_bad in zip(self.names, self.bad_terms.tolist(), strict=True) if is_bad]
        # The loss is a sum of the others: name the terms that caused it, not the loss itself.
        culprits = [name for name in bad if name not in ("loss", "elbo")] or bad
        raise NonFiniteLossError(
            f"the training loss became non-finite at step {int(self.first_step)}: "
            f"{', '.join(culprits)} not finite. Training stopped; the last good checkpoint is kept. "
            "Try a lower optimizer.lr or trainer.gradient_clip_val=1.0"
        )


class NonFiniteLossGuard(pl.Callback):
    """Checks the module's NonFiniteWatch every logging step and before anything is saved (validation,
    epoch end), so that a non-finite model never reaches a checkpoint."""

    def __init__(self, every_n_steps: int = 1) -> None:
        self.every_n_steps = max(1, every_n_steps)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            module.nonfinite.check()

    def on_validation_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        module.nonfinite.check()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        module.nonfinite.check()


class InterruptCheckpoint(pl.Callback):
    """On Ctrl-C, save ``checkpoints/interrupted.ckpt`` before Lightning shuts the run down."""

    def __init__(self, dirpath: Path) -> None:
        self.path = Path(dirpath) / "interrupted.ckpt"

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path, weights_only=False)  # the whole state, to resume from
            if trainer.is_global_zero:
                print(f"\nInterrupted: saved {self.path}", flush=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder and renames it into place, so a kill
    during a write leaves the previous checkpoint whole, never a truncated one."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
