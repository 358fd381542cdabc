"""The GPU path end to end: every stage, bf16-mixed, compile, a conv model, the data placed on the device,
CUDA graphs of the training step, and a sweep. Marked ``gpu``: skipped without a CUDA GPU, run with
``pytest -m gpu -p no:benchmark`` (scripts/gpu_check.sh does). The rest of the suite hides CUDA and tests
the CPU."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import TINY, read_metrics, vae_run
from test_module import fit_on_digits

from vaerun.training.graphs import CudaGraphs, StepGraphs
from vaerun.training.timing import IntervalTimer

pytestmark = pytest.mark.gpu

GPU = ["device=gpu", "data=digits", *TINY]


def test_every_stage_runs_on_the_gpu_with_the_data_on_the_device(tmp_path):
    result = vae_run(*GPU, "model=vae", "hydra.run.dir=run", cwd=tmp_path)
    assert "on the training device" in result.stdout + result.stderr
    metrics = read_metrics(tmp_path / "run")
    assert metrics["test/loss"] > 0 and metrics["test/nll_iwae"] > 0
    assert 0 < metrics["time/eval_iwae_s"] <= metrics["time/eval_test_loop_s"]  # timed by CUDA events
    for stage, extra in (("impute", ["model=dae"]), ("anomaly", ["data.normal_class=0"])):
        vae_run(*GPU, *extra, f"stage={stage}", f"hydra.run.dir={stage}", cwd=tmp_path)
        assert read_metrics(tmp_path / stage)


def test_a_gpu_run_keeps_its_data_in_host_memory_when_asked_with_pinned_batches(tmp_path):
    result = vae_run(*GPU, "data.device_memory_fraction=0", "stage=train", "hydra.run.dir=run", cwd=tmp_path)
    pinned = "in host memory (batches copied to the device from pinned buffers)"
    assert pinned in result.stdout + result.stderr


@pytest.mark.parametrize(
    "options",
    [
        ["trainer.precision=bf16-mixed"],
        ["compile=true"],
        ["encoder=conv", "trainer.precision=bf16-mixed"],
        ["compile=true", "data.batch_size=48"],  # 1,437 training images: a short last batch each epoch
    ],
    ids=["bf16", "compile", "conv-bf16", "compile-short-batch"],
)
def test_a_gpu_training_variant_trains_to_a_finite_loss(tmp_path, options):
    full_epochs = ["trainer.limit_train_batches=null", "hydra.run.dir=run"]
    vae_run(*GPU, "model=vae", *options, *full_epochs, cwd=tmp_path)
    assert 0 < read_metrics(tmp_path / "run")["test/loss"] < 1e4


def test_a_sweep_on_one_gpu_writes_its_summary(tmp_path):
    vae_run("-m", "latent=2,4", *GPU, "hydra.sweep.dir=sweep", cwd=tmp_path)
    with open(tmp_path / "sweep" / "summary.csv") as table:
        rows = list(csv.DictReader(table))
    assert sorted(row["latent"] for row in rows) == ["2", "4"]


def test_captured_training_steps_on_the_gpu_match_eager_ones():
    """A deterministic model (an AE, no corruption): two batch shapes an epoch (500 and a short last one),
    groups of 2 steps, gradient clipping; the graphs' weights and logged values are eager's up to float
    reassociation."""
    run = {"steps_per_execution": 2, "clip": 0.05, "batches": None, "batch_size": 500, "max_epochs": 3}
    _, eager, eager_rows, _ = fit_on_digits(**run, accelerator="gpu")
    graphs = StepGraphs(CudaGraphs(), warmup=1)
    trainer, graphed, rows, _ = fit_on_digits(**run, accelerator="gpu", step_graphs=graphs)
    assert graphs.failed is None and len(graphs.shapes) == 2
    assert all(state.captured is not None for state in graphs.shapes.values())
    assert trainer.global_step == 9 and len(rows) == len(eager_rows)
    for got, want in zip(graphed.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [["model=vae"], ["model=vae", "trainer.precision=bf16-mixed", "compile=true", "data.batch_size=48"]],
    ids=["vae", "vae-bf16-compile-short-batch"],
)
def test_a_run_with_cuda_graphs_trains_as_one_without(tmp_path, options):
    """The VAE draws random numbers in its step: each replay draws fresh ones, so the two runs differ in
    their noise but not in how well they train."""
    losses = {}
    for graphs in ("true", "false"):
        full = ["trainer.limit_train_batches=null", "trainer.max_epochs=3", f"hydra.run.dir={graphs}"]
        result = vae_run(*GPU, *options, f"cuda_graphs={graphs}", *full, cwd=tmp_path)
        captured = "captured as a CUDA graph" in result.stdout + result.stderr
        assert captured == (graphs == "true")
        losses[graphs] = read_metrics(tmp_path / graphs)["test/loss"]
    assert abs(losses["true"] - losses["false"]) < 0.03 * losses["false"]


def test_the_interval_timer_times_gpu_work_by_its_events_and_reads_them_once():
    timer, device = IntervalTimer(), torch.device("cuda")
    x = torch.randn(1024, 1024, device=device)
    for _ in range(3):
        with timer.interval(device):  # no sync here: the host runs ahead of the GPU
            x = torch.tanh(x @ x)
    seconds = timer.seconds
    assert seconds > 0 and timer.seconds == seconds  # read once: the events are summed and let go
