"""Robustness end to end: a loss that blows up, reproducible re-runs, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from conftest import TINY, VAE_RUN, read_metrics, vae_run


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_term(tmp_path):
    result = vae_run(
        "data=digits",
        "optimizer.lr=1e12",
        *TINY,
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=20",
        "hydra.run.dir=run",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "vae-run: error: the training loss became non-finite at step" in result.stderr
    assert "not finite" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert (tmp_path / "run" / ".hydra").is_dir()  # the run directory and any good checkpoint stay


def test_the_same_config_and_seed_give_the_same_metrics(tmp_path):
    for name in ("first", "second"):
        vae_run("data=digits", "model=dae", "encoder=conv", *TINY, f"hydra.run.dir={name}", cwd=tmp_path)
    assert read_metrics(tmp_path / "first") == read_metrics(tmp_path / "second")


def test_ctrl_c_saves_a_checkpoint_and_exits(tmp_path):
    args = [
        "data=mnist5k",
        "trainer.max_epochs=200",
        "trainer.enable_progress_bar=false",
        "hydra.run.dir=run",
    ]
    process = subprocess.Popen(
        [str(VAE_RUN), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ},
    )
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)  # polling for a file the run writes, not a timed assertion
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert "Interrupted: saved" in output
    assert (checkpoints / "interrupted.ckpt").is_file()
    assert "Traceback" not in output
