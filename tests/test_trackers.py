"""The trackers of the logger group beyond TensorBoard: MLflow's local store holds a run's metrics, hparams
and pictures; a tracker whose package is missing is one line naming the extra; early stopping ends
training and eval uses the best checkpoint."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from conftest import TINY, read_events, vae_run

from vaerun.core.checks.packages import missing_package
from vaerun.training.trackers import where_to_look


def test_mlflow_file_store_holds_the_runs_metrics_params_and_pictures(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    vae_run(
        "data=digits", "model=vae", *TINY, "logger=[tensorboard,mlflow]", "hydra.run.dir=run", cwd=tmp_path
    )
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(f"file:{tmp_path / 'mlruns'}")
    (run,) = client.search_runs([client.get_experiment_by_name("vaerun").experiment_id])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run.data.metrics["test/loss"] == pytest.approx(metrics["test/loss"])
    assert {"val/loss", "train/loss_epoch", "test/nll_iwae"} <= set(run.data.metrics)
    assert run.data.params["choice/model"] == "vae" and run.data.tags["run_dir"] == str(tmp_path / "run")
    assert client.list_artifacts(run.info.run_id, "images")  # the pictures, beside TensorBoard's
    assert "sample/generated" in read_events(tmp_path / "run").Tags()["images"]


def test_a_tracker_that_is_not_installed_names_its_extra(tmp_path):
    assert missing_package("pytorch_lightning.loggers.TensorBoardLogger") is None
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    result = vae_run("data=digits", "logger=[tensorboard,wandb]", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    expected = "vae-run: error: logger=wandb needs the wandb package, which is not installed: pip install"
    assert expected in result.stderr and "'vaerun[wandb]'" in result.stderr
    assert not list((tmp_path / "outputs").rglob("*"))  # nothing written


def test_early_stopping_ends_training_and_eval_uses_the_best_checkpoint(tmp_path):
    # min_delta larger than any change: the second validation is no improvement, and patience 0 stops
    stop = [
        "callbacks=early_stopping",
        "callbacks.early_stopping.patience=0",
        "callbacks.early_stopping.min_delta=1e9",
    ]
    vae_run("data=digits", *TINY, "trainer.max_epochs=10", *stop, "hydra.run.dir=run", cwd=tmp_path)
    assert len(read_events(tmp_path / "run").Scalars("val/loss")) == 2  # 2 of 10 epochs
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    best = [p.name for p in (tmp_path / "run" / "checkpoints").glob("best-*.ckpt")]
    assert metrics["test/checkpoint"] in best


def test_wandb_offline_keeps_the_run_and_its_pictures_in_the_run_directory(tmp_path):
    pytest.importorskip("wandb")  # not among the test extras: run where wandb is installed
    vae_run("data=digits", *TINY, "logger=[tensorboard,wandb]", "hydra.run.dir=run", cwd=tmp_path)
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert list(offline.glob("*.wandb")) and list((offline / "files" / "media" / "images").rglob("*.png"))


def test_each_tracker_says_where_to_look_at_the_run_and_another_logger_says_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loggers = {
        "mlflow": {"_target_": "pytorch_lightning.loggers.MLFlowLogger", "tracking_uri": "file:./mlruns"},
        "server": {
            "_target_": "pytorch_lightning.loggers.MLFlowLogger",
            "tracking_uri": "http://host:5000",
            "experiment_name": "vaerun",
        },
        "wandb": {"_target_": "pytorch_lightning.loggers.WandbLogger", "offline": True, "project": "vaerun"},
        "online": {
            "_target_": "pytorch_lightning.loggers.WandbLogger",
            "offline": False,
            "project": "vaerun",
        },
        "mine": {"_target_": "my_package.MyLogger"},
        "tensorboard": {"_target_": "pytorch_lightning.loggers.TensorBoardLogger"},
    }
    programs = tmp_path / "bin"  # the trackers' commands on PATH: by their names
    programs.mkdir()
    for name in ("mlflow", "wandb", "tensorboard"):
        (programs / name).write_text("#!/bin/sh\n")
        (programs / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(programs))
    run_dir = tmp_path / "my run"  # a name the shell splits: the commands quote it
    lines = where_to_look(loggers, run_dir)
    assert lines == [
        f"Look at it with: mlflow ui --backend-store-uri file:{tmp_path / 'mlruns'}",
        "Look at it at: http://host:5000 (experiment vaerun)",
        f"Upload it with: wandb sync '{run_dir / 'wandb' / 'latest-run'}'",
        "Look at it in W&B's project vaerun",
        f"Look at it with: tensorboard --logdir_spec 'my run:{run_dir}'",
    ]
    # not on PATH (a venv not activated, as after `make run`): the venv's, by their full paths
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    venv = Path(sys.executable).parent
    lines = where_to_look(loggers, run_dir)
    assert lines[0].startswith(f"Look at it with: {venv / 'mlflow'} ui ")
    assert lines[2].startswith(f"Upload it with: {venv / 'wandb'} sync ")
    assert lines[4].startswith(f"Look at it with: {venv / 'tensorboard'} --logdir_spec ")
