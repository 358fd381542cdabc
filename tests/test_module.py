"""The LightningModule's own switches and its training loop (the math it wires together is tested in the
objectives' tests)."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers.logger import Logger

from vaerun.data import DigitsSource
from vaerun.data.datamodule import ImageDataModule
from vaerun.training.module import AutoencoderModule
from vaerun.training.step_groups import StepGroups, StepProgressBar


def tiny_module(
    model: str = "vaerun.models.autoencoders.Autoencoder",
    image_shape: tuple[int, ...] = (1, 4, 4),
    lr_schedule: dict | None = None,
) -> AutoencoderModule:
    torch.manual_seed(0)
    return AutoencoderModule(
        lr_schedule=lr_schedule,
        model={"_target_": model},
        encoder={"_target_": "vaerun.models.networks.MLP", "hidden": [16]},
        likelihood={"_target_": "vaerun.models.likelihoods.BernoulliLikelihood"},
        corruption={"_target_": "vaerun.models.corruption.NoCorruption"},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        latent=2,
        image_shape=list(image_shape),
        prior={"_target_": "vaerun.models.priors.GaussianPrior"},
    )


@pytest.mark.long
def test_compiled_training_loss_matches_eager_and_takes_any_batch_size_after_one_recompile():
    module = tiny_module()
    x = torch.rand(8, 1, 4, 4)
    eager = module.training_loss_terms(x, x)
    eager_grads = torch.autograd.grad(eager["loss"], list(module.parameters()))
    module.compile_training_loss()
    compiled = module.training_loss_terms(x, x)
    compiled_grads = torch.autograd.grad(compiled["loss"], list(module.parameters()))
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-5, atol=1e-5)
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # the weights (and so checkpoints) are the plain model's: no _orig_mod prefix
    assert not any("_orig_mod" in key for key in module.state_dict())
    # an epoch's short last batch recompiles once, with a symbolic batch dimension; then no size recompiles
    short = torch.rand(5, 1, 4, 4)
    module.training_loss_terms(short, short)["loss"].backward()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for size in (3, 8, 7):
            x = torch.rand(size, 1, 4, 4)
            terms = module.training_loss_terms(x, x)
            terms["loss"].backward()
            assert terms["loss"].isfinite()


class Recorder(Logger):
    """Keeps what Lightning and the module write to a logger: (step, metrics) rows."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    name = "recorder"
    version = 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step) -> None:
        self.rows.append((step, dict(metrics)))


class GradientNorms(pl.Callback):
    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        grads = [p.grad.flatten() for p in module.parameters() if p.grad is not None]
        self.norms.append(float(torch.cat(grads).norm()))


def fit_on_digits(
    steps_per_execution: int,
    clip: float | None = None,
    batches: int | None = 5,
    batch_size: int = 64,
    step_graphs=None,
    accelerator: str = "cpu",
    lr_schedule: dict | None = None,
    clip_algorithm: str = "norm",
    **trainer_kwargs,
):
    """Train on ``batches`` batches of the digits an epoch (2 epochs unless told), as vae-run sets up."""
    pl.seed_everything(0, verbose=False)
    clipping = {"gradient_clip_val": clip, "gradient_clip_algorithm": clip_algorithm}
    groups = StepGroups(steps_per_execution, limit_train_batches=batches, **clipping)
    datamodule = ImageDataModule(
        DigitsSource(),
        [1, 8, 8],
        batch_size=batch_size,
        steps_per_group=groups.size,
        limit_train_batches=groups.limit_train_batches,
    )
    module = tiny_module(image_shape=[1, 8, 8], lr_schedule=lr_schedule)
    module.configure_training(groups)
    if step_graphs is not None:
        module.use_step_graphs(step_graphs)
    recorder, norms = Recorder(), GradientNorms()
    trainer = pl.Trainer(
        **{"max_epochs": 2, **trainer_kwargs},
        accelerator=accelerator,
        devices=1,
        logger=recorder,
        callbacks=[norms],
        log_every_n_steps=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    datamodule.setup()
    groups.count_validation_interval(trainer, trainer_kwargs, datamodule.train_dataloader().num_batches)
    trainer.fit(module, datamodule=datamodule)
    return trainer, module, recorder.rows, norms.norms


def test_groups_of_steps_take_the_same_steps_and_log_them_at_the_same_steps():
    trainer, module, rows, _ = fit_on_digits(steps_per_execution=1)
    grouped_trainer, grouped, grouped_rows, _ = fit_on_digits(steps_per_execution=3)
    assert trainer.global_step == grouped_trainer.global_step == 10  # 5 batches (not groups) an epoch
    assert grouped_trainer.num_training_batches == 2  # groups of 3 + 2
    assert grouped_rows == rows  # every step's terms, the epoch means and val/loss, at the same steps
    steps = {step for step, metrics in rows if "train/loss_step" in metrics}
    assert steps == set(range(10))
    assert [step for step, metrics in rows if "val/loss" in metrics] == [4, 9]
    for got, want in zip(grouped.parameters(), module.parameters(), strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("across_epochs", [False, True])
def test_an_integer_validation_interval_counts_steps_not_groups(across_epochs):
    every_n_epoch = {"check_val_every_n_epoch": None} if across_epochs else {}
    _, module, rows, _ = fit_on_digits(1, batches=6, val_check_interval=3, **every_n_epoch)
    _, grouped, grouped_rows, _ = fit_on_digits(3, batches=6, val_check_interval=3, **every_n_epoch)
    assert [step for step, metrics in rows if "val/loss" in metrics] == [2, 5, 8, 11]
    assert grouped_rows == rows
    for got, want in zip(grouped.parameters(), module.parameters(), strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize(
    ("schedule", "rate"),
    [
        ({"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1, "gamma": 0.1}, 1e-5),
        # mode=max: the falling validation loss is no improvement, so with no patience the rate drops once
        # (after the second epoch; the first sets the best)
        ({"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "mode": "max", "patience": 0}, 1e-4),
    ],
)
def test_the_lr_schedule_steps_once_an_epoch_though_the_steps_are_taken_by_hand(schedule, rate):
    trainer, module, rows, _ = fit_on_digits(3, lr_schedule={**schedule, "_partial_": True})
    losses = [metrics["val/loss"] for _, metrics in rows if "val/loss" in metrics]
    assert len(losses) == 2 and losses[1] < losses[0]
    (optimizer,) = trainer.optimizers
    assert optimizer.param_groups[0]["lr"] == pytest.approx(rate)
    assert module.lr_schedulers().last_epoch == 2  # two epochs, two steps of the schedule


def test_max_steps_stops_inside_a_group():
    trainer, *_ = fit_on_digits(steps_per_execution=4, max_steps=3)
    assert trainer.global_step == 3


def test_gradient_clipping_bounds_every_steps_gradient_norm():
    *_, norms = fit_on_digits(steps_per_execution=3, max_epochs=1)
    assert max(norms) > 0.01  # so the bound below is the clipping's doing
    *_, clipped = fit_on_digits(steps_per_execution=3, clip=0.01, max_epochs=1)
    assert len(clipped) == 5 and max(clipped) <= 0.01 * (1 + 1e-4)


def test_percentile_clipping_bounds_each_step_by_the_norms_before_it_and_is_kept_in_checkpoints():
    *_, module, _, clipped = fit_on_digits(steps_per_execution=3, clip=50, clip_algorithm="percentile")
    before = module.percentile_clipping.norms[: module.percentile_clipping.steps].tolist()
    assert len(before) == len(clipped) == 10
    assert clipped[0] == pytest.approx(before[0], rel=1e-4)  # nothing before the first step: not clipped
    for step in range(1, 10):
        assert clipped[step] <= np.percentile(before[:step], 50) * (1 + 1e-4)
    assert sum(after < norm * 0.999 for after, norm in zip(clipped, before, strict=True)) >= 1
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    resumed = tiny_module(image_shape=[1, 8, 8])
    resumed.configure_training(StepGroups(1, gradient_clip_val=50, gradient_clip_algorithm="percentile"))
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.percentile_clipping.steps == 10
    assert torch.allclose(resumed.percentile_clipping.norms, module.percentile_clipping.norms, equal_nan=True)


def test_the_progress_bar_counts_steps_not_groups():
    bar = StepProgressBar()
    pl.seed_everything(0, verbose=False)
    groups = StepGroups(3, limit_train_batches=5)
    datamodule = ImageDataModule(
        DigitsSource(),
        [1, 8, 8],
        batch_size=64,
        steps_per_group=groups.size,
        limit_train_batches=groups.limit_train_batches,
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        callbacks=[bar],
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(tiny_module(image_shape=[1, 8, 8]), datamodule=datamodule)
    assert trainer.num_training_batches == 2  # groups
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (5, 5)
