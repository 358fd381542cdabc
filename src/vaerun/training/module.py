"""The one LightningModule behind every model: it wires data, corruption, model and optimizer together.

Its hyperparameters are plain config dicts (``_target_`` entries for Hydra's ``instantiate``), saved in every
checkpoint. So a checkpoint rebuilds its own architecture, and holds only tensors and plain values: it
loads with ``weights_only=True``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import Tensor

from vaerun.core.spec import ModelSpec, current_targets
from vaerun.data.batches import batches_of
from vaerun.evaluation.metrics import MeanStandardError, image_metrics
from vaerun.models.autoencoders import Autoencoder
from vaerun.models.build import build_autoencoder
from vaerun.training.adapters import step_counting_hooks
from vaerun.training.clipping import PercentileClipping
from vaerun.training.graphs import StepGraphs
from vaerun.training.guards import TrainingTerms
from vaerun.training.step_groups import StepGroups
from vaerun.training.timing import IntervalTimer


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
        prior: dict[str, Any],
        choices: dict[str, str] | None = None,
        unit_range: bool = True,
        posterior: dict[str, Any] | None = None,
        lr_schedule: dict[str, Any] | None = None,
    ) -> None:
        """The config groups' dicts build the parts; ``choices`` (the group options picked, such as
        model=vae) is kept for the record only. ``unit_range``: the data are images in [0, 1]; False for
        standardised tables."""
        super().__init__()
        # Logged to TensorBoard once, with the final metrics, by the stages; not by Lightning at fit start.
        self.save_hyperparameters(logger=False)
        self.spec = ModelSpec.from_config(self.hparams, image_shape)
        self.model: Autoencoder = build_autoencoder(self.spec)
        self.corruption = instantiate(current_targets(corruption))
        # Evaluation only: model output vs clean image, and (with a corruption) the corrupted input itself
        # vs the clean image, the "do nothing" baseline of a denoiser.
        self.reconstruction_metrics = image_metrics("test/reconstruction/", unit_range)
        self.iwae_standard_error = MeanStandardError()  # of test/nll_iwae, over the test images
        self.corrupted_input_metrics = image_metrics("test/corrupted_input/", unit_range)
        self.iwae_samples, self.iwae_chunk = 0, 50
        self.iwae_images_left: int | None = None  # of this process's share of eval.iwae_images
        self.iwae_timer = IntervalTimer()  # the IWAE estimate's share of the test loop
        self.training_terms = TrainingTerms()
        # Optimisation is manual (training_step), so gradient clipping is the module's: configure_training.
        self.automatic_optimization = False
        self.step_groups = StepGroups()
        self.percentile_clipping: PercentileClipping | None = None  # gradient_clip_algorithm="percentile"
        self._steps_per_epoch = 1
        # What training_step calls; compile_training_loss swaps in a torch.compile'd version of it.
        self.training_loss_terms = self.model.loss_terms
        self.step_graphs: StepGraphs | None = None  # use_step_graphs
        self._term_names: tuple[str, ...] = ()

    def compile_training_loss(self) -> None:
        """torch.compile the training loss (encoder, sampling, decoder and objective as one graph), so its
        element-wise work is fused; the weights and checkpoints are those of the uncompiled model."""
        self.training_loss_terms = torch.compile(self.model.loss_terms)

    def fuse_likelihood_kernels(self) -> None:
        """Where the likelihood has compiled kernels (one component's discretized logistic:
        vaerun.models.fused_bins), score through them: the same numbers, the estimates' element-wise work
        fused."""
        fuse = getattr(self.model.likelihood, "use_fused_kernels", None)
        if fuse is not None:
            fuse()

    def use_step_graphs(self, step_graphs: StepGraphs) -> None:
        """Capture each training step as a graph (vaerun.training.graphs) and replay it. The optimizer is then
        built with ``capturable=True`` where it takes that argument (Adam's state on the device). Callback
        hooks inside the step (``on_before_backward``, ``on_after_backward``, ``on_before_optimizer_step``)
        run for the eager steps (the first two also once while the step is captured), not at replays."""
        self.step_graphs = step_graphs

    def corrupt(self, clean: Tensor, seed: int | None = None) -> Tensor:
        """The corruption, with fresh randomness, or the same every time for a given seed (for pictures
        that compare like with like)."""
        generator = None if seed is None else torch.Generator(device=clean.device).manual_seed(seed)
        return self.corruption(clean, generator=generator)

    def configure_training(self, step_groups: StepGroups) -> None:
        """The groups' gradient clipping is applied before every step: the gradients' norm (``"norm"``) or
        each ``"value"``, as Lightning's Trainer arguments of the same names, or the norm at the
        ``gradient_clip_val``-th percentile of the steps' norms so far (``"percentile"``, AutoClip)."""
        self.step_groups = step_groups
        if step_groups.gradient_clip_algorithm == "percentile":
            self.percentile_clipping = PercentileClipping(step_groups.gradient_clip_val)

    def configure_evaluation(
        self, iwae_samples: int, iwae_chunk: int, iwae_images: int | None = None, world_size: int = 1
    ) -> None:
        """k importance samples for the IWAE estimate of -log p(x) at test time (0: none), on the first
        ``iwae_images`` test images (None: all; shared out between the ``world_size`` processes)."""
        self.iwae_samples, self.iwae_chunk = int(iwae_samples), int(iwae_chunk)
        self.iwae_images_left = None if iwae_images is None else -(-int(iwae_images) // world_size)

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

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """The hot path. Optimisation is manual so that one call can take a step on each batch of a
        group (vaerun.training.step_groups), paying Lightning's per-batch work once per group. The
        terms' running sums stay on the device (no host sync); step metrics go to the loggers every
        trainer.log_every_n_steps optimizer steps."""
        optimizer = self.optimizers()
        trainer = self.trainer
        for clean, _ in batches_of(batch):
            step = trainer.global_step
            self.model.set_training_progress(step / self._steps_per_epoch)  # epochs done
            if self.step_graphs is None:
                values = self._optimizer_step(clean)
            else:  # a replay overwrites its output: the running sums keep this step's own values
                values = self.step_graphs.run(
                    self._optimizer_step, clean, *step_counting_hooks(optimizer)
                ).clone()
            self.training_terms.add(values, self._term_names, len(clean), step)
            if (step + 1) % trainer.log_every_n_steps == 0:
                self._log_training_step(values, step)
            if 0 <= trainer.max_steps <= trainer.global_step:
                break

    def _optimizer_step(self, clean: Tensor, recording: bool = False) -> Tensor:
        """Loss, backward, gradient clipping and the optimizer's update on one batch; the loss terms
        stacked. ``recording``: the step is being captured as a graph, whose replays Lightning does not
        see, so it steps torch's optimizer itself (StepGraphs counts the replays as Lightning's steps)."""
        optimizer = self.optimizers()
        groups = self.step_groups
        terms = self.training_loss_terms(self.corrupt(clean), clean)
        self._term_names = tuple(terms)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(terms["loss"])
        if self.percentile_clipping is not None:
            self.percentile_clipping.clip_(self.parameters())
        elif groups.gradient_clip_val:
            self.clip_gradients(optimizer, groups.gradient_clip_val, groups.gradient_clip_algorithm)
        # Lightning's wrapper counts the step; a recorded step's replays are counted by StepGraphs instead
        (optimizer.optimizer if recording else optimizer).step()
        return torch.stack([value.detach() for value in terms.values()])

    def _log_x_value(self, step: int) -> None:
        """Lightning logs epoch, validation and test values at its count of the items it handed over,
        groups of steps here; a logged ``step`` is taken as their x value instead: the optimizer step's
        index, as with one batch per item."""
        # the same on every process: the mean over them is the value, and Lightning asks for it under DDP
        self.log("step", float(step), on_step=False, on_epoch=True, sync_dist=True)

    def _log_training_step(self, values: Tensor, step: int) -> None:
        """To the loggers directly, at the optimizer step's index (Lightning's own step logging happens
        once per item it hands over, a group of steps here); the loss to the progress bar too.
        ``values``: the terms stacked, read back in one host sync."""
        named = dict(zip(self._term_names, values.tolist(), strict=True))
        self.log("train/loss_step", named["loss"], prog_bar=True, logger=False, on_step=True, on_epoch=False)
        self.log_to_loggers({f"train/{name}_step": value for name, value in named.items()}, step)

    def log_to_loggers(self, metrics: dict[str, float], step: int) -> None:
        """Write scalars at an optimizer step's index, as Lightning's step logging would with one batch
        per item."""
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Checked at the logging rate and at the epoch's last batch, before validation or the epoch's end
        # can save a checkpoint: a model broken by a non-finite loss is never saved.
        last = batch_idx + 1 == self.trainer.num_training_batches
        if last or self.training_terms.unchecked >= self.trainer.log_every_n_steps:
            self.training_terms.check()

    def on_validation_start(self) -> None:
        self.training_terms.check()

    def on_train_epoch_start(self) -> None:
        self.training_terms.reset()
        # optimizer steps per epoch, for schedules in epochs (the KL warm-up); a plain DataLoader gives one
        # batch per item
        loader = self.trainer.train_dataloader
        self._steps_per_epoch = max(1, getattr(loader, "num_batches", self.trainer.num_training_batches))

    def on_train_epoch_end(self) -> None:
        terms = self.training_terms
        if terms.images:  # weighted by batch size, as Lightning's epoch means
            names = (f"train/{name}_epoch" for name in terms.names)
            # under DDP, each process's mean weighted by its images: the mean over every process's images
            means = dict(zip(names, terms.means(), strict=True))
            self.log_dict(means, on_step=False, on_epoch=True, sync_dist=True, batch_size=terms.images)
        self._log_x_value(self.global_step - 1)
        self._step_lr_schedule()

    def _step_lr_schedule(self) -> None:
        """``lr_schedule`` steps once an epoch, after the epoch's validation. Lightning steps a schedule only
        under automatic optimization, and the step groups optimize by hand. ReduceLROnPlateau is told the
        validation loss (and is not stepped in an epoch without one)."""
        schedule = self.lr_schedulers()
        if schedule is None:
            return
        if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
            loss = self.trainer.callback_metrics.get("val/loss")
            if loss is not None:
                schedule.step(loss)
        else:
            schedule.step()

    def on_validation_epoch_end(self) -> None:
        self._log_x_value(self.global_step - 1)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")
        clean, _ = batch
        corrupted = self.corrupt(clean)
        self.reconstruction_metrics.update(self.model.reconstruct(corrupted), clean)
        if corrupted is not clean:
            self.corrupted_input_metrics.update(corrupted, clean)
        if self.iwae_images_left is not None:  # the estimate over the first eval.iwae_images only
            count = min(len(clean), self.iwae_images_left)
            self.iwae_images_left -= count
            clean, corrupted = clean[:count], corrupted[:count]
        if self.iwae_samples > 0 and len(clean) > 0:
            samples, chunk = self.iwae_samples, self.iwae_chunk
            with self.iwae_timer.interval(clean.device):
                log_likelihood = self.model.log_likelihood(corrupted, clean, samples, chunk)
            if log_likelihood is not None:
                nll = -log_likelihood.mean()
                self.log("test/nll_iwae", nll, batch_size=len(clean), sync_dist=True)
                self.iwae_standard_error.update(-log_likelihood)
                # how many images the estimate saw, summed over batches and processes
                self.log("test/iwae_images", float(len(clean)), reduce_fx="sum", sync_dist=True, batch_size=1)

    def on_test_epoch_end(self) -> None:
        self._log_x_value(self.global_step)
        # torchmetrics' compute() reduces over the processes already: sync_dist takes the mean of equal
        # values, which is theirs, and keeps Lightning from warning under DDP that they were not reduced
        if self.iwae_standard_error.update_called:
            self.log("test/nll_iwae_se", self.iwae_standard_error.compute(), sync_dist=True)
            self.iwae_standard_error.reset()
        for metrics in (self.reconstruction_metrics, self.corrupted_input_metrics):
            if all(metric.update_called for metric in metrics.values()):  # no corruption: no input metrics
                self.log_dict(metrics.compute(), sync_dist=True)
            metrics.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """torch's random state too (reparameterisation noise, corruptions), and the percentile clipping's
        record of norms: a resumed run continues as the uninterrupted one would have."""
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["cuda_rng_states"] = torch.cuda.get_rng_state_all()
        if self.percentile_clipping is not None:
            checkpoint["gradient_norms"] = self.percentile_clipping.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "gradient_norms" in checkpoint and self.percentile_clipping is not None:
            self.percentile_clipping.load_state_dict(checkpoint["gradient_norms"])
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        if "cuda_rng_states" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng_states"])

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        make = instantiate(self.hparams.optimizer)
        graphs = self.step_graphs
        capturable = graphs is not None and graphs.backend.capturable_optimizer
        if capturable and "capturable" in inspect.signature(make).parameters:
            return make(self.parameters(), capturable=True)  # its step count on the device: capturable
        optimizer = make(self.parameters())
        schedule = self.hparams.get("lr_schedule")
        if not schedule:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": instantiate(schedule)(optimizer), "interval": "epoch"},
        }
