"""The library internals behind vaerun.training.adapters still behave as vaerun relies on: an upgrade of
Lightning or TensorBoard that changes one fails here."""

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from vaerun.training.adapters import set_validation_interval, step_counting_hooks, tensorboard_file_writer


class TinyRegression(pl.LightningModule):
    """One linear layer under manual optimisation; ``extra_steps``: optimizer steps per batch taken
    outside Lightning's wrapper and counted with its hooks, as the replays of a captured graph are."""

    def __init__(self, extra_steps: int = 0) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.automatic_optimization = False
        self.extra_steps = extra_steps

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        x, y = batch
        for _ in range(1 + self.extra_steps):
            optimizer.zero_grad()
            self.manual_backward(torch.nn.functional.mse_loss(self.layer(x), y))
            if _ == 0:
                optimizer.step()
            else:
                before, after = step_counting_hooks(optimizer)
                before()
                optimizer.optimizer.step()
                after()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)


def trainer(tmp_path, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_the_step_hooks_of_the_manual_loop_count_steps_taken_outside_its_wrapper(tmp_path):
    fit = trainer(tmp_path, limit_val_batches=0)
    fit.fit(TinyRegression(extra_steps=2), loader(), loader())
    assert fit.global_step == 4 * 3  # 4 batches, each one wrapped step and two counted by the hooks


def test_a_validation_interval_set_on_a_built_trainer_is_the_one_fit_uses(tmp_path):
    starts = []

    class CountValidations(pl.Callback):
        def on_validation_start(self, trainer, module):
            starts.append(trainer.global_step)

    fit = trainer(tmp_path, limit_val_batches=1, callbacks=[CountValidations()])
    set_validation_interval(fit, 2)
    fit.fit(TinyRegression(), loader(), loader())
    assert starts == [2, 4]


def test_the_tensorboard_file_writer_takes_a_summary_into_the_loggers_folder(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard.summary import scalar

    logger = TensorBoardLogger(tmp_path, name="", version="")
    writer = tensorboard_file_writer(logger.experiment)
    writer.add_summary(scalar("check", 1.5), global_step=3)
    writer.flush()
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("check")] == [(3, 1.5)]
