"""Imputation and anomaly detection end to end, on real data (scikit-learn's 8x8 digits)."""

from __future__ import annotations

from conftest import read_events, read_metrics, vae_run

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


def test_a_vae_trained_on_one_class_flags_the_others(tmp_path):
    vae_run("model=vae", "stage=anomaly", "data.normal_class=3", *TRAINED, "hydra.run.dir=run", cwd=tmp_path)
    run = tmp_path / "run"
    metrics = read_metrics(run)
    assert metrics["anomaly/normal_class"] == 3
    for score in ("reconstruction_error", "negative_elbo", "nll_iwae", "pca_reconstruction_error"):
        assert metrics[f"anomaly/{score}/auroc"] > 0.8  # an easy case: a digit against the nine others
        assert 0 < metrics[f"anomaly/{score}/average_precision"] <= 1
    histograms = read_events(run).Tags()["histograms"]
    assert {f"anomaly/negative_elbo/class_{label}" for label in range(10)} <= set(histograms)


def test_anomaly_needs_a_normal_class_that_exists(tmp_path):
    missing = vae_run("stage=anomaly", "data=digits", cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "stage=anomaly needs data.normal_class=K" in missing.stderr
    unknown = vae_run("stage=anomaly", "data=digits", "data.normal_class=12", cwd=tmp_path, check=False)
    assert unknown.returncode == 2
    assert "data.normal_class=12: no training image of digits has that label" in unknown.stderr
    assert not (tmp_path / "outputs").exists()  # nothing half-written
