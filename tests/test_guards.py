import pickle
from pathlib import Path

import pytest
import torch

from vaerun.guards import AtomicCheckpointIO, NonFiniteLossError, NonFiniteWatch


def test_the_watch_names_the_first_step_and_the_term_that_blew_up():
    watch = NonFiniteWatch()
    names = ("loss", "elbo", "recon", "kl")
    watch.observe(torch.tensor([1.0, -1.0, 0.5, 0.5]), names, step=0)
    watch.check()  # all finite: nothing happens
    watch.observe(torch.tensor([float("inf"), float("-inf"), 0.5, float("inf")]), names, step=7)
    watch.observe(torch.tensor([float("nan"), float("nan"), float("nan"), 0.5]), names, step=8)
    with pytest.raises(NonFiniteLossError, match=r"at step 7: kl not finite"):
        watch.check()


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
    from vaerun.stages import load_module
    from vaerun.validation import ConfigError

    Path("/tmp/vaerun-pwned").unlink(missing_ok=True)
    planted = tmp_path / "planted.ckpt"
    torch.save(
        {"state_dict": {}, "hyper_parameters": RunsCode()}, planted, pickle_protocol=pickle.HIGHEST_PROTOCOL
    )
    with pytest.raises(ConfigError, match="is not a loadable vaerun checkpoint"):
        load_module(str(planted), (1, 8, 8))
    assert not Path("/tmp/vaerun-pwned").exists()
