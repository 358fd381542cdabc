"""Lightning callbacks of a training run that are not part of the math: pictures at epoch ends and the
gradient-noise diagnostic."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from vaerun.data.batches import batches_of
from vaerun.models.objectives import gradient_noise
from vaerun.training.visualisation import ImageSink, reconstruction_grid


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


class EncoderGradientVariance(pl.Callback):
    """Every ``every_n_steps`` training steps, the encoder's gradient of the training loss is drawn
    ``samples`` times on the step's batch, each with fresh noise (the sample of q, the corruption), and
    train/encoder_grad_variance (the trace of the draws' covariance) and train/encoder_grad_snr (squared
    norm of their mean over that trace) are logged: how noisy the gradient estimator is, the gap between
    REINFORCE and the reparameterisation trick. The draws do not touch the gradients that train the model,
    and the model's buffers (the REINFORCE baseline) are restored after them."""

    def __init__(self, samples: int, every_n_steps: int) -> None:
        self.samples, self.every_n_steps = samples, max(1, every_n_steps)

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        batches = batches_of(batch)
        steps_done = trainer.global_step
        # a group of steps can pass a multiple of every_n_steps anywhere inside it
        if steps_done // self.every_n_steps == (steps_done - len(batches)) // self.every_n_steps:
            return
        clean, _ = batches[-1]
        model = module.model
        buffers = {name: value.clone() for name, value in model.named_buffers()}
        parameters = [p for p in model.encoder.parameters() if p.requires_grad]
        draws = []
        for _ in range(self.samples):
            loss = module.training_loss_terms(module.corrupt(clean), clean)["loss"]
            grads = torch.autograd.grad(loss, parameters)
            draws.append(torch.cat([g.flatten() for g in grads]))
        with torch.no_grad():
            for name, value in model.named_buffers():
                value.copy_(buffers[name])
        variance, snr = gradient_noise(torch.stack(draws))
        noise = {"train/encoder_grad_variance": float(variance), "train/encoder_grad_snr": float(snr)}
        module.log_to_loggers(noise, step=steps_done - 1)
