"""Lightning callbacks of a training run that are not part of the math: pictures at epoch ends."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from vaerun.visualisation import ImageSink, reconstruction_grid


class ReconstructionImages(pl.Callback):
    """At the end of each validation epoch: originals | corrupted inputs | reconstructions of the same
    first ``num_images`` validation images, with the same corruption noise every epoch, so the grids of
    successive epochs compare like with like."""

    def __init__(self, sink: ImageSink, num_images: int = 16, seed: int = 0) -> None:
        self.sink, self.num_images, self.seed = sink, num_images, seed

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        clean = datamodule.transform(datamodule.splits.val.images[: self.num_images].to(module.device))
        corrupted = module.corrupt(clean, seed=self.seed)
        grid = reconstruction_grid(clean, corrupted, module.model.reconstruct(corrupted))
        self.sink.grid("val/reconstructions", grid, step=trainer.global_step)
