import pickle
from pathlib import Path

import pytest
import torch

from vaerun.core.errors import NonFiniteLossError
from vaerun.training.guards import AtomicCheckpointIO, TrainingTerms


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
