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
    means) and the values of the last ``window`` steps (to name the step that blew up). Two in-place ops a
    step and no host sync; ``check()`` syncs once and raises NonFiniteLossError if any step since the
    epoch began had a non-finite term. Checked at least every ``window`` steps, the first bad step is
    always still in the window."""

    def __init__(self, window: int = 10) -> None:
        self.window = max(1, window)
        self.names: tuple[str, ...] = ()
        self.sums: Tensor | None = None
        self.images = 0
        self._recent: Tensor | None = None  # (window, terms)
        self._recent_steps: Tensor | None = None  # (window,), -1: empty

    def reset(self) -> None:
        self.sums, self.images = None, 0

    def add(self, values: Tensor, names: tuple[str, ...], batch_size: int, step: int) -> None:
        """``values``: the step's loss terms (per-image means) stacked in the order of ``names``."""
        if (
            self._recent is None
            or self._recent.shape != (self.window, len(names))
            or self._recent.device != values.device
        ):
            self._recent = torch.zeros(self.window, len(names), device=values.device, dtype=values.dtype)
            self._recent_steps = torch.full((self.window,), -1, dtype=torch.long, device=values.device)
        if self.sums is None:
            self.sums = torch.zeros_like(values)
        self.names = names
        self.sums.add_(values, alpha=batch_size)
        self._recent[step % self.window] = values
        self._recent_steps[step % self.window] = step
        self.images += batch_size

    def means(self) -> Tensor:
        return self.sums / self.images

    def check(self) -> None:
        if self.sums is None or bool(torch.isfinite(self.sums).all()):
            return
        bad_rows = ~torch.isfinite(self._recent).all(dim=1) & (self._recent_steps >= 0)
        steps = torch.where(bad_rows, self._recent_steps, torch.iinfo(torch.long).max)
        first = int(steps.argmin())
        bad = [
            name
            for name, ok in zip(self.names, torch.isfinite(self._recent[first]).tolist(), strict=True)
            if not ok
        ]
        # The loss is a sum of the others: name the terms that caused it, not the loss itself.
        culprits = [name for name in bad if name not in ("loss", "elbo")] or bad
        raise NonFiniteLossError(
            f"the training loss became non-finite at step {int(self._recent_steps[first])}: "
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
