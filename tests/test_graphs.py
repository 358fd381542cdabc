"""The CUDA-graph bookkeeping of the training step (vaerun.training.graphs), on the CPU: ReplayByCalling
stands in for a graph by calling the recorded step again, so static inputs and outputs, per-shape warm-up and
capture, Lightning's step count at each replay and the fallback to eager steps are all exercised. The real
graphs run in tests/test_gpu.py."""

import logging

import pytest
import torch
from test_module import fit_on_digits, tiny_module

from vaerun.training.graphs import ReplayByCalling, StepGraphs


def test_captured_steps_take_the_same_steps_as_eager_ones_whatever_the_batch_shape():
    """Batches of 500 digits: two full and a short one an epoch, so two shapes, each warmed up, captured
    and replayed; groups of 2 steps, gradient clipping. Every logged value and weight is eager's."""
    run = {"steps_per_execution": 2, "clip": 0.05, "batches": None, "batch_size": 500}
    trainer, module, rows, _ = fit_on_digits(**run, max_epochs=3)
    graphs = StepGraphs(ReplayByCalling(), warmup=1)
    graphed_trainer, graphed, graphed_rows, _ = fit_on_digits(**run, step_graphs=graphs, max_epochs=3)
    shapes = {shape[0]: state for shape, state in graphs.shapes.items()}
    assert graphs.failed is None and len(shapes) == 2 and 500 in shapes
    assert all(state.captured is not None and state.eager_steps == 1 for state in shapes.values())
    assert graphed_trainer.global_step == trainer.global_step == 9  # Lightning counted the replays
    assert graphed_rows == rows  # every step's terms (read from the static output), epoch means, val/loss
    for got, want in zip(graphed.parameters(), module.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


class RefusingCapture(ReplayByCalling):
    def capture(self, step):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")


def test_a_step_that_cannot_be_captured_runs_eagerly_and_the_log_says_why_once(caplog):
    graphs = StepGraphs(RefusingCapture(), warmup=1)
    with caplog.at_level(logging.WARNING, logger="vaerun.training.graphs"):
        trainer, _, rows, _ = fit_on_digits(1, step_graphs=graphs)
    eager_trainer, _, eager_rows, _ = fit_on_digits(1)
    warnings = [record.getMessage() for record in caplog.records if record.name == "vaerun.training.graphs"]
    assert warnings == [
        "CUDA graphs off for this run, the training step runs eagerly "
        "(RuntimeError: operation not permitted when stream is capturing)"
    ]
    assert trainer.global_step == eager_trainer.global_step == 10 and rows == eager_rows


class CudaLike(ReplayByCalling):
    capturable_optimizer = True


@pytest.mark.parametrize("backend", [CudaLike(), ReplayByCalling()], ids=["graphs", "cpu-stand-in"])
def test_the_optimizer_keeps_its_state_on_the_device_where_graphs_need_it(backend):
    module = tiny_module()
    module.use_step_graphs(StepGraphs(backend))
    assert module.configure_optimizers().defaults["capturable"] is backend.capturable_optimizer
    module.hparams.optimizer = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}
    assert isinstance(module.configure_optimizers(), torch.optim.SGD)  # it takes no such argument


@pytest.mark.parametrize("warmup", [0, 3])
def test_a_replay_reads_the_new_batch_and_overwrites_its_output(warmup):
    """The step sees each batch (copied into the static input) and the returned tensor is the same object
    from replay to replay: a caller that keeps values must copy them."""
    graphs = StepGraphs(ReplayByCalling(), warmup=warmup)
    seen = []

    def step(batch, recording):
        seen.append((recording, batch.sum().item()))
        return batch.sum(0)

    outputs = [graphs.run(step, torch.full((2, 3), float(i))) for i in range(5)]
    assert [value for _, value in seen] == [0.0, 6.0, 12.0, 18.0, 24.0]
    assert [recording for recording, _ in seen] == [False] * warmup + [True] * (5 - warmup)
    replayed = outputs[warmup:]
    assert all(output is replayed[0] for output in replayed)
    torch.testing.assert_close(replayed[0], torch.full((3,), 8.0))
