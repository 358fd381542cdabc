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
from vaerun.guards import TrainingTerms
from vaerun.metrics import image_metrics
from vaerun.objectives import bits_per_dim


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
        prior: dict[str, Any] | None = None,
        unit_range: bool = True,
    ) -> None:
        """The config groups' dicts build the parts; ``choices`` (the group options picked, such as
        model=vae) is kept for the record only. ``prior`` None: N(0, I) (checkpoints from before the prior
        group have none). ``unit_range``: the data are images in [0, 1]; False for standardised tables."""
        super().__init__()
        # Logged to TensorBoard once, with the final metrics, by the stages; not by Lightning at fit start.
        self.save_hyperparameters(logger=False)
        self.model: Autoencoder = instantiate(
            model,
            architecture=instantiate(encoder),
            likelihood=instantiate(likelihood),
            prior=instantiate(prior) if prior is not None else None,
            latent_dim=latent,
            image_shape=list(image_shape),
        )
        self.corruption = instantiate(corruption)
        # Evaluation only: model output vs clean image, and (with a corruption) the corrupted input itself
        # vs the clean image, the "do nothing" baseline of a denoiser.
        self.reconstruction_metrics = image_metrics("test/reconstruction/", unit_range)
        self.corrupted_input_metrics = image_metrics("test/corrupted_input/", unit_range)
        self.iwae_samples, self.iwae_chunk = 0, 50
        self.training_terms = TrainingTerms()
        # What training_step calls; compile_training_loss swaps in a torch.compile'd version of it.
        self.training_loss_terms = self.model.loss_terms

    def compile_training_loss(self) -> None:
        """torch.compile the training loss (encoder, sampling, decoder and objective as one graph), so its
        element-wise work is fused; the weights and checkpoints are those of the uncompiled model."""
        self.training_loss_terms = torch.compile(self.model.loss_terms)

    def corrupt(self, clean: Tensor, seed: int | None = None) -> Tensor:
        """The corruption, with fresh randomness, or the same every time for a given seed (for pictures
        that compare like with like)."""
        generator = None if seed is None else torch.Generator(device=clean.device).manual_seed(seed)
        return self.corruption(clean, generator=generator)

    def configure_evaluation(self, iwae_samples: int, iwae_chunk: int) -> None:
        """k importance samples for the IWAE estimate of -log p(x) at test time (0: none)."""
        self.iwae_samples, self.iwae_chunk = int(iwae_samples), int(iwae_chunk)

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        clean, _ = batch  # floats in [0, 1], on the device (ImageDataModule.on_after_batch_transfer)
        terms = self.model.loss_terms(self.corrupt(clean), clean)
        for name, value in terms.items():
            self.log(
                f"{split}/{name}",
                value,
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=len(clean),
                sync_dist=True,  # the mean over every process's shard
            )
        return terms["loss"]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """The hot path: the terms' running sums stay on the device (no host sync); Lightning's logging
        runs only on the steps it writes (every trainer.log_every_n_steps) and once per epoch."""
        clean, _ = batch
        step = self.trainer.global_step
        self.model.set_training_progress(step / max(1, self.trainer.num_training_batches))  # epochs done
        terms = self.training_loss_terms(self.corrupt(clean), clean)
        values = torch.stack([value.detach() for value in terms.values()])
        self.training_terms.add(values, tuple(terms), len(clean), step)
        if (step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/loss_step", terms["loss"], prog_bar=True, on_step=True, on_epoch=False)
            others = {f"train/{name}_step": value for name, value in terms.items() if name != "loss"}
            self.log_dict(others, on_step=True, on_epoch=False)
        return terms["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Checked at the logging rate and at the epoch's last batch, before validation or the epoch's end
        # can save a checkpoint: a model broken by a non-finite loss is never saved.
        last = batch_idx + 1 == self.trainer.num_training_batches
        if last or self.trainer.global_step % self.training_terms.window == 0:
            self.training_terms.check()

    def on_validation_start(self) -> None:
        self.training_terms.check()

    def on_train_start(self) -> None:
        self.training_terms.window = self.trainer.log_every_n_steps

    def on_train_epoch_start(self) -> None:
        self.training_terms.reset()

    def on_train_epoch_end(self) -> None:
        terms = self.training_terms
        if terms.images:  # weighted by batch size, as Lightning's epoch means
            names = (f"train/{name}_epoch" for name in terms.names)
            self.log_dict(dict(zip(names, terms.means(), strict=True)), on_step=False, on_epoch=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")
        clean, _ = batch
        corrupted = self.corrupt(clean)
        self.reconstruction_metrics.update(self.model.reconstruct(corrupted), clean)
        if corrupted is not clean:
            self.corrupted_input_metrics.update(corrupted, clean)
        if self.iwae_samples > 0:
            log_likelihood = self.model.log_likelihood(corrupted, clean, self.iwae_samples, self.iwae_chunk)
            if log_likelihood is not None:
                nll = -log_likelihood.mean()
                bpd = bits_per_dim(nll, clean[0].numel())
                self.log("test/nll_iwae", nll, batch_size=len(clean), sync_dist=True)
                self.log("test/nll_iwae_bpd", bpd, batch_size=len(clean), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        for metrics in (self.reconstruction_metrics, self.corrupted_input_metrics):
            if all(metric.update_called for metric in metrics.values()):  # no corruption: no input metrics
                self.log_dict(metrics.compute())
            metrics.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """torch's random state too (reparameterisation noise, corruptions): a resumed run continues as the
        uninterrupted one would have."""
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["cuda_rng_states"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        if "cuda_rng_states" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng_states"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return instantiate(self.hparams.optimizer)(self.parameters())
