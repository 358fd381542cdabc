"""The library internals behind vaerun.training.adapters still behave as vaerun relies on: an upgrade of
Lightning or TensorBoard that changes one fails here."""

import logging
import shutil
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from vaerun.training.adapters import (
    LIGHTNING_INFO_LOGGER,
    LIGHTNING_TIP,
    UNUSED_SRUN_WARNING,
    _not_a_lightning_tip,
    hush_lightning_tips,
    hush_unused_srun_outside_slurm,
    set_validation_interval,
    step_counting_hooks,
    tensorboard_file_writer,
)


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


def test_hydras_mode_composition_is_the_method_vae_run_skips_and_no_shipped_config_sets_the_mode():
    import inspect

    from hydra import compose, initialize_config_module
    from hydra._internal.hydra import Hydra

    from vaerun.cli.main import PACKAGE_CONFIGS

    assert list(inspect.signature(Hydra.get_mode).parameters) == ["self", "config_name", "overrides"]
    assert "return cfg.hydra.mode" in inspect.getsource(Hydra.get_mode)  # what skipping it gives up
    presets = [f"+experiment={path.stem}" for path in (PACKAGE_CONFIGS / "experiment").glob("*.yaml")]
    with initialize_config_module("vaerun.configs", version_base="1.3"):
        for overrides in [[], *([preset] for preset in presets)]:
            assert compose("config", overrides=overrides, return_hydra_config=True).hydra.mode is None


def test_the_mode_composition_is_skipped_only_where_no_config_of_the_users_could_set_the_mode(tmp_path):
    from hydra._internal.hydra import Hydra

    from vaerun.cli.main import PACKAGE_CONFIGS
    from vaerun.cli.startup import without_mode_composition

    composing = Hydra.get_mode
    with without_mode_composition([PACKAGE_CONFIGS], ["latent=2"]):
        assert Hydra.get_mode is not composing
    assert Hydra.get_mode is composing  # restored
    for folders, overrides in [
        ([PACKAGE_CONFIGS, tmp_path], []),
        ([PACKAGE_CONFIGS], ["hydra.mode=MULTIRUN"]),
    ]:
        with without_mode_composition(folders, overrides):
            assert Hydra.get_mode is composing


@pytest.mark.skipif(shutil.which("srun") is None, reason="needs Slurm's srun on PATH (make test installs it)")
def test_lightnings_unused_srun_warning_is_the_one_hushed_outside_a_slurm_job(tmp_path, monkeypatch):
    for variable in ("SLURM_JOB_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(variable, raising=False)

    def trainer_warnings() -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if hushed:
                hush_unused_srun_outside_slurm()
            pl.Trainer(logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
        return [str(w.message) for w in caught]

    hushed = False
    assert any(message.startswith(UNUSED_SRUN_WARNING) for message in trainer_warnings())  # Lightning's text
    hushed = True
    assert not any("srun" in message for message in trainer_warnings())
    monkeypatch.setenv("SLURM_JOB_ID", "7")  # inside a job, where srun matters, the warning stays
    assert any(message.startswith(UNUSED_SRUN_WARNING) for message in trainer_warnings())


def test_lightnings_cloud_tips_are_the_lines_hushed_and_its_device_lines_stay(tmp_path):
    info_logger = logging.getLogger(LIGHTNING_INFO_LOGGER)

    class Kept(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    def trainer_info() -> list[str]:
        said.clear()
        logger = TensorBoardLogger(tmp_path)  # not Lightning's own LitLogger: the tip comes
        pl.Trainer(logger=logger, enable_checkpointing=False, default_root_dir=tmp_path)
        return list(said)

    said: list[str] = []
    handler = Kept(level=logging.INFO)
    info_logger.addHandler(handler)
    info_logger.removeFilter(_not_a_lightning_tip)
    try:
        assert any(line.startswith(LIGHTNING_TIP) for line in trainer_info())  # Lightning's logger and text
        hush_lightning_tips()
        hush_lightning_tips()  # once is enough; twice adds nothing
        assert info_logger.filters.count(_not_a_lightning_tip) == 1
        lines = trainer_info()
        assert not any("Tip" in line for line in lines)
        assert any(line.startswith("GPU available") for line in lines)
    finally:
        info_logger.removeHandler(handler)
