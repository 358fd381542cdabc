"""What the stages share: the ``Run`` (config, run directory, and the objects built from them) and the
prologue and epilogue every stage after training has in common."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from vaerun.core.atomic import write_text_atomically
from vaerun.data.datamodule import ImageDataModule
from vaerun.evaluation.baselines import PCA, fit_pca
from vaerun.models.networks import fold_batch_norm
from vaerun.stages.checkpoints import load_module
from vaerun.training.module import AutoencoderModule
from vaerun.training.visualisation import ImageSink


@dataclass
class Run:
    """The config, the run directory and the objects built from them (``vaerun.stages.setup``)."""

    cfg: dict[str, Any]
    run_dir: Path
    datamodule: ImageDataModule
    module: AutoencoderModule
    trainer: pl.Trainer
    sink: ImageSink
    checkpoint: ModelCheckpoint
    metrics: dict[str, float] = field(default_factory=dict)
    resume_from: Path | None = None
    #: what metrics.json holds: the final metrics of every stage that ran, and how they were measured
    record: dict[str, Any] = field(default_factory=dict)
    #: the checkpoint ``module`` was loaded from: ``ckpt=``'s, or the best one ``inference_model`` loaded
    #: after training (loaded once, however many stages)
    loaded_checkpoint: str = ""
    #: wall seconds by stage and part (``timed``), into metrics.json as time/NAME_s
    timings: dict[str, float] = field(default_factory=dict)
    #: a search's pruner stopped the training: the stages after it do not run
    pruned: bool = False
    #: (the checkpoint it was fitted for, the distribution) of ``generative_prior``
    fitted_prior: tuple[str, Any] | None = None

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Adds the wall time of the block to ``timings[name]``; on a GPU after its queued work is done."""
        synchronize = torch.cuda.synchronize if self.module.device.type == "cuda" else lambda: None
        synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize()
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def write_record(self) -> None:
        """metrics.json: the final metrics of every stage that ran, how they were measured, the times."""
        timings = {f"time/{name}_s": round(seconds, 3) for name, seconds in self.timings.items()}
        text = json.dumps({**self.record, **timings}, indent=2, sort_keys=True) + "\n"
        write_text_atomically(self.run_dir / "metrics.json", text)

    @property
    def loggers(self) -> list[Logger]:
        return self.trainer.loggers

    @property
    def tensorboard(self) -> TensorBoardLogger | None:
        """The TensorBoard logger, for what only TensorBoard shows (projector, histograms, text)."""
        return next((logger for logger in self.loggers if isinstance(logger, TensorBoardLogger)), None)

    @property
    def step(self) -> int:
        return self.trainer.global_step

    def images(self, split: str, count: int | None = None) -> torch.Tensor:
        """The first ``count`` images of a split (all by default) as the model's input, on its device."""
        images = getattr(self.datamodule.splits, split).images[:count]
        return self.datamodule.transform(images.to(self.module.device))

    def pca(self, k: int) -> PCA:
        """PCA at ``k`` components of the training split as the model sees it, made float a chunk at a
        time on the model's device (dynamic binarisation draws each pass's images afresh)."""
        device = self.module.device
        train = self.datamodule.splits.train.images
        return fit_pca(train, k, transform=lambda rows: self.datamodule.transform(rows.to(device)))

    def inference_model(self) -> AutoencoderModule:
        """The best weights by validation loss after training (else the model as loaded), on the
        training device, in eval mode, with its batch norms folded into the layers before them (the same
        outputs; every stage after training only evaluates)."""
        best = self.checkpoint.best_model_path
        if best and best != self.loaded_checkpoint:
            self.module, self.loaded_checkpoint = load_module(best, self.datamodule.image_shape), best
        return fold_batch_norm(self.module.to(self.trainer.strategy.root_device).eval())

    def generative_prior(self) -> Any:
        """The inference model's distribution of new codes: its own prior, or one fitted to the training
        images' codes once per loaded model however many stages use it (a VQ-VAE's PixelCNN takes a while;
        encoding CelebA's training split, a minute)."""
        model = self.inference_model().model
        if not model.prior_is_fitted:
            return model.generative_prior(None)
        if self.fitted_prior is None or self.fitted_prior[0] != self.loaded_checkpoint:
            with self.timed("generative_prior_fit"):
                prior = model.generative_prior(encode_all(model, self.images("train")))
            self.fitted_prior = (self.loaded_checkpoint, prior)
        return self.fitted_prior[1]

    def log_metrics(self, metrics: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.step)

    def publish(self, results: dict[str, float], **how_measured: Any) -> None:
        """A stage's final metrics: to the loggers, to the returned metrics and into metrics.json, with
        how they were measured."""
        self.log_metrics(results)
        self.metrics.update(results)
        self.record.update({**results, **how_measured})
        self.write_record()


@torch.no_grad()
def encode_all(model, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([model.encode(batch) for batch in x.split(batch_size)])


def in_chunks(
    function: Callable[[torch.Tensor], dict[str, torch.Tensor]], x: torch.Tensor, size: int = 500
) -> dict[str, torch.Tensor]:
    """A dict of per-image tensors computed ``size`` images at a time (bounded memory), concatenated."""
    parts = [function(chunk) for chunk in x.split(size)]
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix) and not k.endswith("_step")}
