"""Imputation and anomaly detection end to end, on real data (scikit-learn's 8x8 digits)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, read_events, read_metrics, vae_run

import vaerun
from vaerun.stages.checkpoints import checkpoint_step

#: long enough for a model that has learnt something (a few seconds on 2 cores), short for CI
TRAINED = [
    "data=digits",
    "trainer.max_epochs=15",
    "trainer.enable_progress_bar=false",
    "eval.iwae_samples=10",
]


def test_a_trained_denoiser_imputes_better_than_the_column_means(tmp_path):
    vae_run(
        "model=dae", "stage=impute", "impute.rates=[0.3,0.5]", *TRAINED, "hydra.run.dir=run", cwd=tmp_path
    )
    run = tmp_path / "run"
    metrics = read_metrics(run)
    patterns = ("mcar_0.3", "mcar_0.5", "block_4")  # block: half the 8x8 image
    for pattern in patterns:
        for method in ("model", "column_mean", "pca"):
            assert {"mse", "psnr", "ssim"} <= {
                k.split("/")[-1] for k in metrics if k.startswith(f"impute/{pattern}/{method}/")
            }
    for pattern in ("mcar_0.3", "mcar_0.5"):
        assert metrics[f"impute/{pattern}/model/mse"] < 0.8 * metrics[f"impute/{pattern}/column_mean/mse"]
    assert metrics["impute/images"] == 180  # the whole digits test split
    assert {f"impute_{pattern}.png" for pattern in patterns} <= {p.name for p in (run / "images").iterdir()}
    assert "impute/mcar_0.5/model/mse" in read_events(run).Tags()["scalars"]


def test_a_dae_on_hidden_pixels_is_reported_beside_the_linear_fill_and_its_observed_pixels_kept(tmp_path):
    """The denoising study's columns for a corruption that hides pixels: the corrupted input, PCA filling
    the hidden pixels, and the DAE's output with the observed pixels put back, which can only be closer to
    the clean image than the DAE's output itself (per image, so in mean PSNR too)."""
    args = ["model=dae", "corruption=pixel_drop_90", "data=digits", "hydra.run.dir=run"]
    vae_run(*args, *TINY, "trainer.limit_test_batches=1.0", cwd=tmp_path)
    metrics = read_metrics(tmp_path / "run")
    for prefix in ("reconstruction", "corrupted_input", "pca_fill", "observed_kept"):
        assert 0 < metrics[f"test/{prefix}/psnr"] < 60 and -1 <= metrics[f"test/{prefix}/ssim"] <= 1
    assert metrics["test/observed_kept/psnr"] >= metrics["test/reconstruction/psnr"]
    assert metrics["test/pca_fill/psnr"] > metrics["test/corrupted_input/psnr"]  # means beat zeros


def test_a_vae_trained_on_one_class_flags_the_others(tmp_path):
    vae_run("model=vae", "stage=anomaly", "data.normal_class=3", *TRAINED, "hydra.run.dir=run", cwd=tmp_path)
    run = tmp_path / "run"
    metrics = read_metrics(run)
    assert metrics["anomaly/normal_class"] == 3 and metrics["anomaly/model_trained_on"] == "the normal class"
    scores = (
        "reconstruction_error",
        "negative_elbo",
        "nll_iwae",
        "pca_reconstruction_error",
        "nearest_neighbours",
    )
    for score in scores:
        assert metrics[f"anomaly/{score}/auroc"] > 0.8  # an easy case: a digit against the nine others
        assert 0 < metrics[f"anomaly/{score}/average_precision"] <= 1
    for score in ("latent_mahalanobis", "nll_iwae_minus_png_bits"):  # what the model knows, beside
        assert 0 <= metrics[f"anomaly/{score}/auroc"] <= 1
    histograms = read_events(run).Tags()["histograms"]
    assert {f"anomaly/negative_elbo/class_{label}" for label in range(10)} <= set(histograms)


def test_a_background_model_adds_the_likelihood_ratio_score(tmp_path):
    """Ren et al.'s ratio against a VAE of every class: trained first, then named by the anomaly run; a
    missing file is one line at start-up."""
    vae_run("model=vae", "data=digits", "stage=train", *TINY, "hydra.run.dir=background", cwd=tmp_path)
    (background,) = (tmp_path / "background" / "checkpoints").glob("best-*.ckpt")
    anomaly = ["model=vae", "data=digits", "stage=anomaly", "data.normal_class=1", "anomaly.iwae_samples=5"]
    vae_run(*anomaly, *TINY, f"anomaly.background_ckpt={background}", "hydra.run.dir=run", cwd=tmp_path)
    metrics = read_metrics(tmp_path / "run")
    assert 0 <= metrics["anomaly/likelihood_ratio/auroc"] <= 1
    missing = vae_run(*anomaly, "anomaly.background_ckpt=nothing.ckpt", cwd=tmp_path, check=False)
    assert missing.returncode == 2
    assert (
        "vae-run: error: anomaly.background_ckpt: no such file or run directory: nothing.ckpt"
        in missing.stderr
    )


def test_the_one_class_protocol_trains_its_own_background_on_mutated_normal_images(tmp_path):
    """anomaly.background_mutation_rate: the background is trained in the run on the normal class's own
    training images, mutated (Ren et al.), and sees no other class: its data are the run's."""
    anomaly = ["data=digits", "stage=anomaly", "data.normal_class=1", "anomaly.iwae_samples=5", *TINY]
    vae_run(*anomaly, "anomaly.background_mutation_rate=0.15", "hydra.run.dir=run", cwd=tmp_path)
    metrics = read_metrics(tmp_path / "run")
    assert 0 <= metrics["anomaly/likelihood_ratio/auroc"] <= 1 and metrics["time/anomaly_background_s"] > 0
    assert list((tmp_path / "run" / "background" / "checkpoints").glob("best-*.ckpt"))
    log = (tmp_path / "run" / "vae_run.log").read_text()
    data_lines = [line.split(" - ", 1)[1] for line in log.splitlines() if "][vaerun.data.placement]" in line]
    assert len(data_lines) == 2 and data_lines[0] == data_lines[1]  # the same normal-class images
    wrong = vae_run(*anomaly, "anomaly.background_mutation_rate=1.5", cwd=tmp_path, check=False)
    assert wrong.returncode == 2 and "anomaly.background_mutation_rate" in wrong.stderr


def test_anomaly_needs_a_normal_class_that_exists(tmp_path):
    missing = vae_run("stage=anomaly", "data=digits", cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "stage=anomaly needs data.normal_class=K" in missing.stderr
    unknown = vae_run("stage=anomaly", "data=digits", "data.normal_class=12", cwd=tmp_path, check=False)
    assert unknown.returncode == 2
    assert "data.normal_class=12: no training image of digits has that label" in unknown.stderr
    assert not list((tmp_path / "outputs").rglob("*.*"))  # no run directory, nothing half-written


@pytest.mark.parametrize("likelihood", ["bernoulli", "discretized_logistic"])
def test_a_likelihood_of_values_in_the_unit_interval_is_refused_for_a_table(tmp_path, likelihood):
    from sklearn.datasets import load_wine

    load_wine(as_frame=True).frame.to_csv(tmp_path / "wine.csv", index=False)
    args = ["data=csv", "data.source.path=wine.csv", f"likelihood={likelihood}", *TINY]
    result = vae_run(*args, cwd=tmp_path, check=False)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(
        f"vae-run: error: likelihood={likelihood}: csv:wine.csv holds standardised table columns, not the "
        "values in [0, 1] this likelihood models; use likelihood=gaussian"
    )
    assert not list((tmp_path / "outputs").rglob("*.*"))


def test_a_denoiser_imputes_the_cells_of_a_csv_table(tmp_path):
    from sklearn.datasets import load_wine

    table = load_wine(as_frame=True).frame  # real rows; 5% of the cells emptied, as a real file has gaps
    features = table.columns[:-1]
    values = table[features].to_numpy().copy()
    values[np.random.default_rng(0).random(values.shape) < 0.05] = np.nan
    table[features] = values
    table.to_csv(tmp_path / "wine.csv", index=False)
    vae_run(
        "model=dae",
        "data=csv",
        "data.source.path=wine.csv",
        "data.source.label_column=target",
        "latent=4",
        "stage=impute",
        "impute.rates=[0.3]",
        *TRAINED[1:],
        "trainer.max_epochs=60",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    metrics = read_metrics(tmp_path / "run")
    assert (
        "Imputation mcar_0.3  MSE on missing cells: model " in (tmp_path / "run" / "vae_run.log").read_text()
    )
    assert {k for k in metrics if k.startswith("impute/mcar_0.3/")} == {
        f"impute/mcar_0.3/{method}/mse" for method in ("model", "column_mean", "pca")
    }  # a table: MSE on standardised cells; no image metrics, no block
    model = metrics["impute/mcar_0.3/model/mse"]  # an easy case: the model beats both baselines
    assert (
        model < 0.9 * metrics["impute/mcar_0.3/column_mean/mse"]
        and model < 0.95 * metrics["impute/mcar_0.3/pca/mse"]
    )
    missing = vae_run("data=csv", cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "data.source.path must be set to the CSV file" in missing.stderr

    # From Python, the same model fills a table's empty cells in the table's own units
    trained = vaerun.load(tmp_path / "run")
    filled = trained.impute_table(tmp_path / "wine.csv", seed=0)
    gaps = np.isnan(values)
    assert not filled[features].isna().any().any() and filled["target"].equals(table["target"])
    assert np.array_equal(filled[features].to_numpy()[~gaps], values[~gaps])
    complete = load_wine(as_frame=True).frame  # a third of its cells hidden: the fill against the truth
    hidden = np.random.default_rng(1).random(values.shape) < 0.3
    holed = complete.copy()
    holed[features] = np.where(hidden, np.nan, complete[features].to_numpy())
    guess = trained.impute_table(holed, seed=0)[features].to_numpy()
    truth, spread = complete[features].to_numpy(), complete[features].std().to_numpy()
    model_error = (((guess - truth) / spread)[hidden] ** 2).mean()
    mean_error = (((complete[features].mean().to_numpy() - truth) / spread)[hidden] ** 2).mean()
    assert model_error < 0.9 * mean_error  # in the table's units, as the stage found in standardised ones
    with pytest.raises(ValueError, match=r"impute_table: the table lacks the run's columns proline"):
        trained.impute_table(complete.drop(columns=["proline"]))
    conv = vae_run(
        "data=csv",
        "data.source.path=wine.csv",
        "encoder=conv",
        "trainer.max_epochs=1",
        cwd=tmp_path,
        check=False,
    )
    assert (
        conv.returncode == 2 and "encoder: rows of 14 table columns are no images to convolve" in conv.stderr
    )
    assert "WARNING" not in conv.stdout  # nothing said about the run it refuses (its 2 steps log no loss)


def test_the_denoising_preset_runs_both_encoders_into_one_table(tmp_path):
    """The study on tiny sizes: one corruption of the preset (8x8 digits take no 16 x 16 block), both of its
    encoders, and the sweep's table with the DAE beside the linear fill."""
    preset = ["-m", "+experiment=denoising", "data=digits", "corruption=pixel_drop_90"]
    vae_run(*preset, *TINY, "hydra.sweep.dir=sweep", cwd=tmp_path)
    table = pd.read_csv(tmp_path / "sweep" / "summary.csv")  # the long names are cut: the table has them
    assert sorted(table["encoder"]) == ["conv16", "mlp"]
    for column in ("test/pca_fill/psnr", "test/observed_kept/psnr", "test/corrupted_input/psnr"):
        assert (table[column] > 0).all()


def test_the_latent_sweep_preset_trains_by_steps_and_reports_pca_beside_each_model(tmp_path):
    vae_run(
        "-m", "+experiment=latent_sweep", "data=digits", "latent=2", "trainer.max_steps=4", *TINY[1:],
        "hydra.sweep.dir=sweep", cwd=tmp_path,
    )  # fmt: skip
    rows = (tmp_path / "sweep" / "summary.md").read_text()
    assert "| ae |" in rows and "| vae |" in rows and "test/pca_mse" in rows
    checkpoints = sorted((tmp_path / "sweep").glob("*/checkpoints/last.ckpt"))
    assert len(checkpoints) == 2 and all(checkpoint_step(path) == 4 for path in checkpoints)
