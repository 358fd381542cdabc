"""The methods built on the VAE, end to end: beta-VAE with warm-up and free bits, the Student-t prior, the
gradient estimators' experiment, and the MCMC-refined VAE with AIS at eval."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from conftest import TINY, read_events, read_metrics, vae_run

import vaerun


def scalars(run: Path) -> set[str]:
    return set(read_events(run).Tags()["scalars"])


def test_beta_vae_with_warmup_free_bits_and_a_student_t_prior(tmp_path):
    vae_run(
        "model=beta_vae",
        "model.kl_warmup_epochs=2",
        "model.free_bits=0.1",
        "prior=student_t",
        "data=digits",
        *TINY,
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    run = tmp_path / "run"
    metrics = read_metrics(run)
    assert metrics["test/loss"] > -metrics["test/elbo"]  # beta = 4 > 1: the objective weighs the KL more
    assert "test/active_units" in metrics and "test/nll_iwae" in metrics
    assert "train/kl_weight_step" in scalars(run)
    events = read_events(run)
    weights = [event.value for event in events.Scalars("train/kl_weight_step")]
    assert weights == sorted(weights) and weights[-1] < 4.0  # still rising: 3 batches of a 2-epoch warm-up
    assert (run / "images" / "sample_generated.png").is_file()  # samples of the Student-t prior


def test_the_gradient_estimator_experiment_logs_the_encoder_gradients_variance(tmp_path):
    vae_run(
        "-m",
        "+experiment=gradient_estimators",
        "data=digits",
        *TINY,
        "diagnostics.gradient_variance_samples=3",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    runs = sorted((tmp_path / "sweep").glob("estimator=*"))
    assert [run.name for run in runs] == ["estimator=reinforce", "estimator=reparam"]
    variance = {}
    for run in runs:
        assert {"train/encoder_grad_variance", "train/encoder_grad_snr"} <= scalars(run)
        values = read_events(run).Scalars("train/encoder_grad_variance")
        variance[run.name] = sum(event.value for event in values) / len(values)
    assert variance["estimator=reinforce"] > variance["estimator=reparam"]


def test_the_mcmc_vae_logs_its_acceptance_and_eval_reports_ais_beside_iwae(tmp_path):
    vae_run(
        "model=vae_mcmc",
        "model.mcmc_steps=2",
        "data=digits",
        *TINY,
        "eval.ais_temperatures=5",
        "eval.ais_images=20",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    run = tmp_path / "run"
    metrics = read_metrics(run)
    assert metrics["test/ais_temperatures"] == 5
    assert 0 < metrics["test/ais_accept"] <= 1
    assert metrics["test/nll_ais"] > 0 and metrics["test/nll_iwae"] > 0
    assert {"train/mcmc_accept_step", "train/mcmc_log_joint_gain_epoch", "test/nll_ais"} <= scalars(run)
    assert "sample/posterior_mcmc" in read_events(run).Tags()["images"]


def test_the_posteriors_experiment_puts_every_method_in_one_table(tmp_path):
    vae_run(
        "-m",
        "+experiment=posteriors",
        "data=digits",
        *TINY,
        "eval.ais_temperatures=3",
        "eval.ais_images=10",
        "eval.iwae_samples=5",
        "eval.ais_kernel=mala",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    table = pd.read_csv(tmp_path / "sweep" / "summary.csv")
    methods = ["gaussian", "hamiltonian", "iaf", "mcmc_hmc", "mcmc_mala", "mcmc_rwmh", "metflow", "planar"]
    assert sorted(table["inference"]) == methods
    assert (table["test/nll_iwae"] > 0).all() and (table["test/nll_ais"] > 0).all()
    assert table["test/ais_accept"].between(0, 1, inclusive="right").all()  # AIS with MALA

    # a flow posterior's checkpoint loads in Python, and its q gives a valid bound, tighter with k
    iaf_run = tmp_path / "sweep" / table.loc[table["inference"] == "iaf", "run"].item()
    assert (iaf_run / "images" / "sample_generated.png").is_file()
    model = vaerun.load(iaf_run)
    assert model.network.posterior_is_flow and model.config["posterior"]["_target_"].endswith(".IAF")
    assert_iwae_above_elbo(model)

    # so does MetFlow's, whose chain targets each image's posterior under the model's own decoder
    metflow_run = tmp_path / "sweep" / table.loc[table["inference"] == "metflow", "run"].item()
    assert table.loc[table["inference"] == "metflow", "test/metflow_accept"].between(0, 1).all()
    model = vaerun.load(metflow_run)
    assert model.network.posterior_family.is_chain
    assert_iwae_above_elbo(model)

    # and the Hamiltonian VAE's, whose leapfrog steps need the decoder's gradient under torch.no_grad too
    hamiltonian_run = tmp_path / "sweep" / table.loc[table["inference"] == "hamiltonian", "run"].item()
    model = vaerun.load(hamiltonian_run)
    assert model.network.posterior_family.uses_target_gradient
    assert_iwae_above_elbo(model)


def assert_iwae_above_elbo(model) -> None:
    """After three training steps q is nearly exact and IWAE's lead over the ELBO is a fraction of a nat:
    both are averaged over the whole test split (180 images), the one-draw ELBO over 40 draws too, so that
    the lead is many times their noise."""
    images = model.split("test")[0]
    elbo = torch.stack([model.elbo(images, seed=seed).mean() for seed in range(40)]).mean()
    iwae = model.log_likelihood(images, k=50, seed=0).mean()
    assert torch.isfinite(elbo) and iwae > elbo
