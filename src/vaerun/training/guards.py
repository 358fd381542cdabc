"""Guards of a training run: the loss terms watched for the first non-finite step (checked by the
LightningModule before anything can be saved), a checkpoint on Ctrl-C or SIGTERM, and atomic checkpoint
writes."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import Tensor

from vaerun.core.atomic import atomic_path
from vaerun.core.checkpoints import LAST
from vaerun.core.errors import NonFiniteLossError, RunInterrupted


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


class Interruptions:
    """SIGINT and SIGTERM while ``installed()``. During training the handler only notes the signal, and
    ``InterruptCheckpoint`` stops the run at the next batch boundary, where saving is safe: an exception
    raised inside the signal handler itself could land in a ``__del__`` or a weakref callback, where Python
    prints and swallows it, and training would go on. Outside training, or at a second signal, the handler
    raises RunInterrupted at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: int | None = None
        self.deferred = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.deferred and self.pending is None:
            self.pending = signum
            return
        raise RunInterrupted(signum)

    def raise_pending(self) -> None:
        if self.pending is not None:
            raise RunInterrupted(self.pending)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interruptions]:
        if threading.current_thread() is not threading.main_thread():  # only the main thread may
            yield self
            return
        previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


class InterruptCheckpoint(pl.Callback):
    """A signal during training (``Interruptions``) stops it at the next batch boundary and saves
    ``checkpoints/interrupted.ckpt``, the whole state, before Lightning shuts the run down. Lightning's
    own SIGTERM handling (it adds its handler beside ours and raises SIGTERMException at a batch end) takes
    the same path."""

    def __init__(self, dirpath: Path, interruptions: Interruptions) -> None:
        self.path = Path(dirpath) / "interrupted.ckpt"
        self.interruptions = interruptions

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.interruptions.deferred = True

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.interruptions.deferred = False
        self.interruptions.raise_pending()  # a signal after the last batch: stop before the next stage

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.interruptions.raise_pending()

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.interruptions.raise_pending()

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        self.interruptions.deferred = False
        if isinstance(exception, RunInterrupted | SIGTERMException) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path, weights_only=False)  # the whole state, to resume from
            if trainer.is_global_zero:
                print(f"\nInterrupted: saved {self.path}", flush=True)


class LatestCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt``, the newest state, rewritten at every validation end (or training epoch end
    where there is no validation) and at the end of training: what a killed run resumes from, and what
    ``ckpt=RUN/checkpoints/last.ckpt`` names. Lightning >= 2.6 writes its own ``save_last`` only beside a
    new top-k checkpoint, so that with ``save_top_k=1`` its last.ckpt is a copy of the best one, epochs
    behind once validation stops improving; this is a checkpoint callback of its own that monitors nothing,
    as Lightning saves the latest state."""

    def __init__(self, dirpath: Path) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=Path(LAST).stem,
            monitor=None,
            save_top_k=1,
            save_last=False,
            enable_version_counter=False,
        )

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # the epochs after the last validation (trainer.check_val_every_n_epoch past the end: with 5 and
        # max_epochs=2, none ran and nothing else keeps the trained weights) end up in last.ckpt too
        if trainer.global_step != getattr(self, "_last_global_step_saved", None):
            trainer.save_checkpoint(Path(self.dirpath) / LAST, weights_only=False)


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
