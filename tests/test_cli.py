"""End to end: the real ``vae-run`` in a subprocess, its run directory and TensorBoard events read back."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from conftest import TINY, hparams_of, read_events, read_metrics, vae_run
from omegaconf import OmegaConf

from vaerun.cli.run_lock import LOCK_FILE
from vaerun.core.checkpoints import best_checkpoint

VAE_TERMS = ("test/elbo", "test/recon", "test/kl", "test/loss", "test/nll_iwae")
IMAGE_METRICS = ("mse", "bce", "psnr", "ssim")


@pytest.fixture(scope="module")
def vae_2d(tmp_path_factory) -> Path:
    """One tiny VAE run with latent=2 on the 8x8 digits, shared by the tests that only read it."""
    cwd = tmp_path_factory.mktemp("vae2d")
    result = vae_run("model=vae", "latent=2", "data=digits", *TINY, "hydra.run.dir=run", cwd=cwd)
    assert "tensorboard --logdir_spec run:" in result.stdout
    # outside a Slurm job a run says nothing about srun, also where Slurm is installed (as make test does)
    assert "`srun` command" not in result.stdout + result.stderr
    return cwd / "run"


def test_a_run_directory_holds_config_checkpoints_events_metrics_and_pngs(vae_2d):
    assert (vae_2d / ".hydra" / "config.yaml").is_file()
    assert (vae_2d / "checkpoints" / "last.ckpt").is_file()
    assert list((vae_2d / "checkpoints").glob("best-*.ckpt"))
    assert list(vae_2d.glob("events.out.tfevents.*"))
    pngs = {p.name for p in (vae_2d / "images").glob("*.png")}
    assert {
        "val_reconstructions.png",
        "sample_generated.png",
        "sample_reconstructions.png",
        "sample_manifold.png",
        "sample_latent_scatter.png",
        "sample_interpolations.png",
    } <= pngs


def test_metrics_json_holds_the_negative_elbo_and_its_terms(vae_2d):
    metrics = read_metrics(vae_2d)
    assert set(VAE_TERMS) <= set(metrics)
    assert metrics["test/loss"] == pytest.approx(metrics["test/recon"] + metrics["test/kl"], rel=1e-4)
    assert metrics["test/elbo"] == pytest.approx(-metrics["test/loss"])
    assert metrics["test/kl"] >= 0


def test_metrics_json_holds_each_stages_wall_time_and_the_parts_of_eval(vae_2d):
    metrics = read_metrics(vae_2d)
    parts = ("test_loop", "iwae", "pca", "ais")
    assert all(metrics[f"time/{stage}_s"] > 0 for stage in ("train", "eval", "sample"))
    assert all(metrics[f"time/eval_{part}_s"] > 0 for part in parts)
    assert metrics["time/eval_iwae_s"] <= metrics["time/eval_test_loop_s"]  # IWAE runs inside the test loop
    assert sum(metrics[f"time/eval_{part}_s"] for part in parts[:1] + parts[2:]) <= metrics["time/eval_s"]
    assert metrics["time/sample_pictures_s"] + metrics["time/sample_projector_s"] <= metrics["time/sample_s"]


def test_metrics_json_holds_the_likelihood_estimate_with_its_protocol(vae_2d):
    metrics = read_metrics(vae_2d)
    assert metrics["test/iwae_samples"] == 10 and metrics["test/binarize"] == "none"
    assert metrics["test/iwae_images"] == 32  # TINY's one test batch
    # a tighter bound than the ELBO, up to Monte-Carlo error; a Bernoulli of grey levels gives no bits/dim
    assert metrics["test/nll_iwae"] <= metrics["test/loss"] + 0.5
    assert "test/nll_iwae_bpd" not in metrics and "test/nll_ais_bpd" not in metrics
    # each estimate with the standard error of its mean over the images it saw
    assert 0 < metrics["test/nll_iwae_se"] < metrics["test/nll_iwae"] and metrics["test/nll_ais_se"] > 0


def test_metrics_json_holds_image_quality_pca_and_active_units(vae_2d):
    metrics = read_metrics(vae_2d)
    for name in IMAGE_METRICS:
        assert f"test/reconstruction/{name}" in metrics
    assert not any(key.startswith("test/corrupted_input/") for key in metrics)  # no corruption, no baseline
    assert 0 < metrics["test/pca_mse"] < 0.25 and metrics["test/pca_psnr"] > 0
    assert metrics["test/active_units"] in (0.0, 1.0, 2.0)


def test_the_projector_holds_the_test_codes_with_labels_and_thumbnails(vae_2d):
    config = (vae_2d / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "latent_means' in config and "sprite" in config
    (metadata,) = vae_2d.glob("*/latent_means/metadata.tsv")
    labels = metadata.read_text().split()
    assert len(labels) == 50 and set(labels) <= {str(d) for d in range(10)}
    (tensors,) = vae_2d.glob("*/latent_means/tensors.tsv")
    assert all(len(row.split("\t")) == 2 for row in tensors.read_text().splitlines())  # latent=2


def test_tensorboard_has_the_scalars_images_config_and_hparams(vae_2d):
    events = read_events(vae_2d)
    tags = events.Tags()
    scalars = set(tags["scalars"])
    for split in ("train", "val"):
        for term in ("loss", "elbo", "recon", "kl"):
            assert any(t.startswith(f"{split}/{term}") for t in scalars), (split, term, scalars)
    assert {"train/loss_step", "train/loss_epoch", "val/loss"} <= scalars
    assert {
        "val/reconstructions",
        "sample/generated",
        "sample/reconstructions",
        "sample/manifold",
        "sample/interpolations",
    } <= set(tags["images"])
    assert {"test/nll_iwae", "test/reconstruction/ssim", "test/pca_mse", "test/active_units"} <= scalars
    assert "sample/latent_scatter" in tags["images"]
    assert any(t.startswith("config") for t in tags["tensors"])
    hparams, metric_tags = hparams_of(events)
    assert (
        hparams["choice/model"] == "vae"
        and hparams["latent"] == 2
        and hparams["data.source_used"] == "digits"
    )
    # the HParams tab reads the run's own metric tags; the scalar pages hold no copy of them, no epoch
    assert {"test/loss", "test/nll_iwae", "val/loss"} <= metric_tags <= scalars
    assert not [t for t in scalars if t.startswith("hparams/") or t in ("epoch", "hp_metric")]


def test_the_source_used_is_recorded_in_the_saved_config(vae_2d):
    saved = (vae_2d / ".hydra" / "config.yaml").read_text()
    assert "source_used: digits" in saved
    assert "data.source_used: digits" in (vae_2d / "hparams.yaml").read_text()


@pytest.mark.parametrize("model", ["ae", "dae", "vae"])
@pytest.mark.parametrize("encoder", ["mlp", "conv"])
def test_every_model_with_every_encoder(tmp_path, model, encoder):
    vae_run(
        f"model={model}",
        f"encoder={encoder}",
        "data=digits",
        *TINY,
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    metrics = read_metrics(tmp_path / "run")
    assert "test/loss" in metrics and "test/reconstruction/psnr" in metrics and "test/pca_mse" in metrics
    assert ("test/kl" in metrics) == ("test/nll_iwae" in metrics) == (model == "vae")
    # a denoiser is reported beside its corrupted input: the gain of doing something
    assert ("test/corrupted_input/psnr" in metrics) == (model == "dae")
    images = read_events(tmp_path / "run").Tags()["images"]
    assert {"sample/generated", "sample/interpolations", "sample/traversals"} <= set(images)  # latent=16


def test_dae_on_28x28_conv_with_blur(tmp_path):
    vae_run(
        "model=dae",
        "encoder=conv",
        "corruption=blur",
        "data=mnist5k",
        *TINY,
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert read_metrics(tmp_path / "run")["test/loss"] > 0


def test_a_run_too_short_to_log_a_step_says_so_once_it_starts(tmp_path):
    """Lightning's warning counts groups of steps; vaerun's counts steps, and only for a run that starts
    (a refused run's one line stays alone: tests/test_cli_applications.py)."""
    result = vae_run(
        "data=digits", *TINY, "trainer.log_every_n_steps=5", "stage=train", "hydra.run.dir=run", cwd=tmp_path
    )
    assert "3 training steps in all, fewer than trainer.log_every_n_steps=5" in result.stdout
    assert "The number of training batches" not in result.stdout + result.stderr


def test_sample_and_eval_from_a_checkpoint_take_the_architecture_from_it(vae_2d, tmp_path):
    ckpt = vae_2d / "checkpoints" / "last.ckpt"
    # The command line says latent=7 and encoder=conv; the checkpoint's model (mlp, latent=2) is used.
    result = vae_run(
        "stage=sample",
        f"ckpt={ckpt}",
        "data=digits",
        "latent=7",
        "encoder=conv",
        "hydra.run.dir=sample",
        *TINY,
        cwd=tmp_path,
    )
    said = result.stderr + result.stdout
    assert "latent from the command line is ignored: the checkpoint's model has latent=2" in said
    assert "encoder from the command line is ignored: the checkpoint's model has encoder=mlp" in said
    images = {p.name for p in (tmp_path / "sample" / "images").glob("*.png")}
    assert {"sample_generated.png", "sample_manifold.png"} <= images  # a 2-D manifold: latent=2 it is
    # a VAE samples its own prior: no training image is encoded to fit one (time/generative_prior_fit_s)
    assert set(read_metrics(tmp_path / "sample")) == {
        "time/sample_s",
        "time/sample_pictures_s",
        "time/sample_projector_s",
    }
    assert not (tmp_path / "sample" / "checkpoints").exists()  # no training happened

    evaluated = vae_run(
        "stage=eval",
        f"ckpt={vae_2d}",  # a run directory: its best checkpoint
        "data=digits",
        "latent=2",  # as the checkpoint has it: not reported as ignored
        "hydra.run.dir=eval",
        *TINY,
        "data.binarize=static",
        cwd=tmp_path,
    )
    assert "ignored" not in evaluated.stderr + evaluated.stdout
    metrics = read_metrics(tmp_path / "eval")
    assert metrics["test/checkpoint"] == best_checkpoint(vae_2d).name  # what ckpt= gave, by its name
    assert set(VAE_TERMS) <= set(metrics) and metrics["test/binarize"] == "static"
    # of binary data, the Bernoulli's -log p(x) is bits of the data: bits/dim = nats / (D ln 2)
    assert metrics["test/nll_iwae_bpd"] == pytest.approx(
        metrics["test/nll_iwae"] / (64 * math.log(2)), rel=1e-4
    )


def test_multirun_over_two_latent_sizes(tmp_path):
    vae_run("-m", "latent=2,3", "data=digits", *TINY, "hydra.sweep.dir=sweep", cwd=tmp_path)
    runs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in runs] == ["0", "1"]
    for run_dir, latent in zip(runs, (2, 3), strict=True):
        assert "latent: " + str(latent) in (run_dir / ".hydra" / "config.yaml").read_text()
        assert "test/elbo" in read_metrics(run_dir)


def test_another_logger_and_an_extra_callback_are_one_yaml_file_each(tmp_path):
    # a callback of the user's own config folder: stop after the first validation
    (tmp_path / "mine" / "callbacks").mkdir(parents=True)
    (tmp_path / "mine" / "callbacks" / "stop_early.yaml").write_text(
        "stop_early:\n  _target_: pytorch_lightning.callbacks.EarlyStopping\n"
        "  monitor: val/loss\n  stopping_threshold: 1.0e9\n"
    )
    args = ["--config-dir", "mine", "data=digits", *TINY, "trainer.max_epochs=3", "stage=train"]
    result = vae_run(
        *args, "logger=[tensorboard,csv]", "callbacks=[default,stop_early]", "hydra.run.dir=run", cwd=tmp_path
    )
    # where each logger keeps the run, in the run's last lines
    said = result.stdout.splitlines()[-2:]
    assert said[0].endswith(f"--logdir_spec run:{tmp_path / 'run'}") and said[0].startswith(
        "Look at it with: "
    )
    assert said[1] == f"Its scalars: {tmp_path / 'run' / 'csv' / 'metrics.csv'}"
    rows = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    assert "val/loss" in rows[0] and "train/loss_step" in rows[0]
    assert len(read_events(tmp_path / "run").Scalars("val/loss")) == 1  # stopped after epoch 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_bad_input_into_an_earlier_runs_directory_leaves_that_run_as_it_was(vae_2d, tmp_path):
    run_dir = tmp_path / "earlier"
    shutil.copytree(vae_2d, run_dir)

    def files() -> dict[Path, bytes]:  # the lock file names its last holder, whoever that was
        return {
            path: path.read_bytes()
            for path in run_dir.rglob("*")
            if path.is_file() and path.name != LOCK_FILE
        }

    before = files()
    result = vae_run("data=mnist5k", "latent=x", f"hydra.run.dir={run_dir}", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "vae-run: error: latent must be an integer" in result.stderr
    # Hydra rewrote .hydra/ (the data ckpt=RUN reads) and appended to the log before the check refused
    assert files() == before


def test_training_continues_from_another_runs_checkpoint_into_its_own_directory(vae_2d, tmp_path):
    earlier = {path: path.read_bytes() for path in (vae_2d / "checkpoints").iterdir()}
    args = ["stage=train", f"ckpt={vae_2d}", *TINY, "trainer.max_epochs=2", "hydra.run.dir=more"]
    result = vae_run(*args, cwd=tmp_path)
    assert "Resuming from " in result.stderr + result.stdout
    assert "dirpath has changed" not in result.stderr + result.stdout  # Lightning's, about vae_2d's folder
    assert best_checkpoint(tmp_path / "more").name == "best-epoch001.ckpt"  # the second epoch, in its run
    assert {path: path.read_bytes() for path in (vae_2d / "checkpoints").iterdir()} == earlier


def test_a_truncated_checkpoint_is_refused_clearly(vae_2d, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((vae_2d / "checkpoints" / "last.ckpt").read_bytes()[:1000])
    result = vae_run("stage=eval", f"ckpt={truncated}", "data=digits", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "is not a loadable vaerun checkpoint" in result.stderr
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("metrics.json"))
    # a run's metrics.json in its place: no pickle at all, so nothing said of code
    metrics = vae_2d / "metrics.json"
    result = vae_run("stage=eval", f"ckpt={metrics}", "data=digits", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("is not a loadable vaerun checkpoint (not a file torch.save wrote)")


def test_a_run_that_reads_no_test_split_needs_none(tmp_path):
    vae_run("data=digits", "data.source.test_size=0", "stage=train", *TINY, "hydra.run.dir=run", cwd=tmp_path)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_a_test_split_of_one_image_is_evaluated_without_a_variance_over_it(tmp_path):
    result = vae_run("data=digits", "data.source.test_size=1", *TINY, "hydra.run.dir=run", cwd=tmp_path)
    metrics = read_metrics(tmp_path / "run")
    assert "test/active_units" not in metrics and math.isfinite(metrics["test/nll_iwae"])
    assert math.isnan(metrics["test/nll_iwae_se"])  # a standard error over one image: undefined
    assert "degrees of freedom" not in result.stderr


def test_a_checkpoint_without_a_data_option_is_evaluated_on_the_data_its_run_trained_on(vae_2d, tmp_path):
    """ckpt=RUN alone: RUN's 8x8 digits, not the default MNIST (whose 28x28 images the model could not
    take), with the command line's data.KEY=VALUE on top; the eval run's saved config says what it read."""
    result = vae_run(
        "stage=eval",
        f"ckpt={vae_2d}",
        "data.device_memory_fraction=0.25",
        "hydra.run.dir=eval",
        *TINY,
        cwd=tmp_path,
    )
    assert "Data: the checkpoint's run's (data=digits); data=OPTION picks other data" in result.stdout
    saved = OmegaConf.load(tmp_path / "eval" / ".hydra" / "config.yaml").data
    assert saved.source._target_ == OmegaConf.load(vae_2d / ".hydra" / "config.yaml").data.source._target_
    assert saved.device_memory_fraction == 0.25 and saved.source_used == "digits"
    assert math.isfinite(read_metrics(tmp_path / "eval")["test/loss"])


def test_a_checkpoint_for_other_images_is_refused_naming_the_data_its_run_used(vae_2d, tmp_path):
    result = vae_run("stage=eval", f"ckpt={vae_2d}", "data=fashion_mnist", cwd=tmp_path, check=False)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(
        "vae-run: error: ckpt: the checkpoint's model takes images of shape [1, 8, 8], but the data gives "
        "[1, 28, 28]; pick the data set it was trained on; its run used data=digits"
    )
