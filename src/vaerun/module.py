"""The one LightningModule behind every model: it wires data, corruption, model and optimizer together.

Its hyperparameters are plain config dicts (``_target_`` entries for Hydra's ``instantiate``), saved in every
checkpoint. So a checkpoint rebuilds its own architecture, and holds only tensors and plain values: it
loads with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import Tensor

from vaerun.autoencoders import Autoencoder


class AutoencoderModule(pl.LightningModule):
    def __init__(
        self,
        model: dict[str, Any],
        encoder: dict[str, Any],
        likelihood: dict[str, Any],
        corruption: dict[str, Any],
        optimizer: dict[str, Any],
        latent: int,
        image_shape: Sequence[int],
        choices: dict[str, str] | None = None,
    ) -> None:
        """The config groups' dicts build the parts; ``choices`` (the group options picked, such as
        model=vae) is kept for the record only."""
        super().__init__()
        # Logged to TensorBoard once, with the final metrics, by the stages; not by Lightning at fit start.
        self.save_hyperparameters(logger=False)
        self.model: Autoencoder = instantiate(
            model,
            architecture=instantiate(encoder),
            likelihood=instantiate(likelihood),
            latent_dim=latent,
            image_shape=list(image_shape),
        )
        self.corruption = instantiate(corruption)

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        clean, _ = batch  # floats in [0, 1], on the device (ImageDataModule.on_after_batch_transfer)
        terms = self.model.loss_terms(self.corruption(clean), clean)
        for name, value in terms.items():
            self.log(
                f"{split}/{name}",
                value,
                on_step=split == "train",
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=len(clean),
            )
        return terms["loss"]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return instantiate(self.hparams.optimizer)(self.parameters())
