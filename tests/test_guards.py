import pickle
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

import vaerun
from vaerun.core.checkpoints import best_checkpoint
from vaerun.core.errors import NonFiniteLossError
from vaerun.stages.assembly import build_callbacks
from vaerun.training.guards import AtomicCheckpointIO, Interruptions, LatestCheckpoint, TrainingTerms


def test_the_terms_name_the_first_step_and_the_term_that_blew_up():
    terms = TrainingTerms()
    names = ("loss", "elbo", "recon", "kl")
    for step in range(6):
        terms.add(torch.tensor([1.0, -1.0, 0.5, 0.5]) * (step + 1), names, batch_size=2, step=step)
    terms.check()  # all finite: nothing happens
    assert terms.unchecked == 0
    torch.testing.assert_close(terms.means(), torch.tensor([1.0, -1.0, 0.5, 0.5]) * 3.5)
    for step in range(6, 26):  # many steps between two checks (a long group of steps): none is forgotten
        terms.add(torch.tensor([1.0, -1.0, 0.5, 0.5]), names, batch_size=2, step=step)
    terms.add(torch.tensor([float("inf"), float("-inf"), 0.5, float("inf")]), names, batch_size=2, step=26)
    terms.add(torch.tensor([float("nan"), float("nan"), float("nan"), 0.5]), names, batch_size=2, step=27)
    with pytest.raises(NonFiniteLossError, match=r"at step 26: kl not finite"):
        terms.check()


def test_a_new_epoch_starts_from_zero():
    terms = TrainingTerms()
    terms.add(torch.tensor([1.0]), ("loss",), batch_size=1, step=0)
    terms.reset()
    terms.add(torch.tensor([3.0]), ("loss",), batch_size=1, step=1)
    assert terms.means().item() == 3.0 and terms.images == 1


def test_atomic_checkpoints_leave_the_previous_file_whole_when_a_write_fails(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def killed_half_way(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(3))


class RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/vaerun-pwned"),))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    from vaerun.core.checks import ConfigError
    from vaerun.stages import load_module

    Path("/tmp/vaerun-pwned").unlink(missing_ok=True)
    planted = tmp_path / "planted.ckpt"
    torch.save(
        {"state_dict": {}, "hyper_parameters": RunsCode()}, planted, pickle_protocol=pickle.HIGHEST_PROTOCOL
    )
    with pytest.raises(ConfigError, match="is not a loadable vaerun checkpoint"):
        load_module(str(planted), (1, 8, 8))
    assert not Path("/tmp/vaerun-pwned").exists()


class RisingValidationLoss(pl.LightningModule):
    """A model whose validation loss rises every epoch: its best checkpoint is its first epoch's."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight - batch[0]).square().mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_with_the_checkpoints(tmp_path, **trainer_arguments) -> ModelCheckpoint:
    """RisingValidationLoss fitted (two steps an epoch) with the run's checkpoint callbacks, the best's and
    LatestCheckpoint, writing to tmp_path/checkpoints; the best's callback."""
    cfg = vaerun.compose(["data=digits"])
    checkpoint, callbacks = build_callbacks(cfg, tmp_path, sink=None, interruptions=Interruptions())
    kept = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    assert any(isinstance(c, LatestCheckpoint) for c in kept)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 1)), batch_size=4)
    quiet = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    pl.Trainer(callbacks=kept, **quiet, **trainer_arguments).fit(RisingValidationLoss(), data, data)
    return checkpoint


def test_last_ckpt_is_the_newest_state_and_the_best_stays_the_best(tmp_path):
    """Lightning >= 2.6 writes save_last's last.ckpt only beside a new best checkpoint; vaerun's own
    LatestCheckpoint rewrites it at every validation end, so a resumed run starts where it was stopped."""
    checkpoint = fit_with_the_checkpoints(tmp_path, max_epochs=3)
    assert not checkpoint.save_last
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch000.ckpt", "last.ckpt"]
    last = torch.load(folder / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 6)  # three epochs of two steps
    assert best_checkpoint(tmp_path) == folder / "best-epoch000.ckpt"


def test_the_epochs_after_the_last_validation_are_in_last_ckpt(tmp_path):
    """check_val_every_n_epoch=5 with 2 epochs: no validation runs, and last.ckpt alone keeps the weights."""
    fit_with_the_checkpoints(tmp_path, max_epochs=2, check_val_every_n_epoch=5)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 4)  # after both epochs: a resumed run starts a third
