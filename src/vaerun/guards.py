"""Guards of a training run: the loss terms watched for the first non-finite step (checked by the
LightningModule before anything can be saved), a checkpoint on Ctrl-C, and atomic checkpoint writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import Tensor

from vaerun.atomic import atomic_path


class NonFiniteLossError(RuntimeError):
    """The loss became nan or inf; the message names the step and the term that blew up."""


class TrainingTerms:
    """The training loss terms of the current epoch, kept on the device: their running sums (for the epoch
    means) and the values of the steps not yet checked (to name the step that blew up). One in-place op a
    step and no host sync; ``check()`` syncs once and raises NonFiniteLossError if any step since the
    epoch began had a non-finite term. The unchecked steps are kept until a check finds them finite, so the
    first bad step is always among them, however many steps pass between checks."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.sums: Tensor | None = None
        self.images = 0
        self._unchecked: list[tuple[int, Tensor]] = []  # (step, values)

    @property
    def unchecked(self) -> int:
        """Steps added since the last check."""
        return len(self._unchecked)

    def reset(self) -> None:
        self.sums, self.images = None, 0

    def add(self, values: Tensor, names: tuple[str, ...], batch_size: int, step: int) -> None:
        """``values``: the step's loss terms (per-image means) stacked in the order of ``names``."""
        if self.sums is None:
            self.sums = torch.zeros_like(values)
        self.names = names
        self.sums.add_(values, alpha=batch_size)
        self._unchecked.append((step, values))
        self.images += batch_size

    def means(self) -> Tensor:
        return self.sums / self.images

    def check(self) -> None:
        if self.sums is None or bool(torch.isfinite(self.sums).all()):
            self._unchecked.clear()
            return
        finite = torch.isfinite(torch.stack([values for _, values in self._unchecked])).all(dim=1).tolist()
        first, values = next(entry for entry, ok in zip(self._unchecked, finite, strict=True) if not ok)
        bad = [name for name, ok in zip(self.names, torch.isfinite(values).tolist(), strict=True) if not ok]
        # The loss is a sum of the others: name the terms that caused it, not the loss itself.
        culprits = [name for name in bad if name not in ("loss", "elbo")] or bad
        raise NonFiniteLossError(
            f"the training loss became non-finite at step {first}: "
            f"{', '.join(culprits)} not finite. Training stopped; the last good checkpoint is kept. "
            "Try a lower optimizer.lr or trainer.gradient_clip_val=1.0"
        )


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
        with atomic_path(path) as partial, open(partial, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
