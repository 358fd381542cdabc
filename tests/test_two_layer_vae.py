"""model=vae2: Burda et al.'s two stochastic layers, its joint posterior and prior against
torch.distributions, the IWAE bound over the joint code, and AIS on the joint code against IWAE."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, read_metrics, vae_run
from torch.distributions import Bernoulli, Normal

import vaerun
from vaerun.core.errors import ConfigError
from vaerun.models.autoencoders import TwoLayerVAE
from vaerun.models.likelihoods import BernoulliLikelihood
from vaerun.models.networks import MLP
from vaerun.models.priors import StudentTPrior


def small(**kwargs) -> TwoLayerVAE:
    torch.manual_seed(0)
    kwargs = {"latents": [4, 2], "hidden": [8], **kwargs}
    return TwoLayerVAE(MLP(hidden=[16]), BernoulliLikelihood(), 0, (1, 8, 8), **kwargs).double()


def digits(count: int) -> torch.Tensor:
    return (
        torch.rand(count, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) > 0.5
    ).double()


def test_the_joint_density_is_the_product_of_its_layers():
    model = small()
    x = digits(3)
    posterior = model.posterior(x)
    z, log_q = posterior.rsample_and_log_prob((5,))
    assert z.shape == (5, 3, 6)
    torch.testing.assert_close(posterior.log_prob(z), log_q)  # its density anywhere, at its own draws
    z1, z2 = z[..., :4], z[..., 4:]
    mu1, logvar1 = model.encoder(x).split(4, dim=-1)
    mu2, logvar2 = model.inference_upper(z1)
    expected_q = Normal(mu1, (0.5 * logvar1).exp()).log_prob(z1).sum(-1) + Normal(
        mu2, (0.5 * logvar2).exp()
    ).log_prob(z2).sum(-1)
    torch.testing.assert_close(log_q, expected_q)
    mu, logvar = model.generative_upper(z2)
    logits = model.decoder(z1.reshape(15, 4)).reshape(5, 3, 1, 8, 8)
    expected_joint = (
        Bernoulli(logits=logits).log_prob(x).sum((-3, -2, -1))
        + Normal(mu, (0.5 * logvar).exp()).log_prob(z1).sum(-1)
        + Normal(0.0, 1.0).log_prob(z2).sum(-1)
    )
    torch.testing.assert_close(model.log_joint(x, z), expected_joint)


def test_the_loss_is_minus_the_iwae_bound_and_tightens_with_k():
    model = small().eval()
    x = digits(4).repeat(3000, 1, 1, 1)
    bounds = {}
    with torch.no_grad():
        for k in (1, 5, 50):
            model.k = k
            terms = model.loss_terms(x, x)
            assert terms["loss"] == -terms["iwae_bound"]
            bounds[k] = terms["iwae_bound"].item()
    assert bounds[1] < bounds[5] < bounds[50]


def test_ais_on_the_joint_code_agrees_with_a_large_iwae_estimate():
    model = small().eval()
    x = digits(4)
    torch.manual_seed(2)
    iwae = model.log_likelihood(x, x, 3000)
    ais, acceptance = model.annealed_log_likelihood(x, x, chains=8, temperatures=100)
    assert 0.3 < acceptance < 1
    assert (ais - iwae).abs().mean() < 0.3


def test_new_codes_are_drawn_ancestrally():
    model = small().float()
    z = model.sample_codes(
        model.generative_prior(), 50_000, torch.Generator().manual_seed(3), temperature=1.0
    )
    assert z.shape == (50_000, 6)
    z2 = z[:, 4:]
    torch.testing.assert_close(z2.mean(0), torch.zeros(2), atol=0.02, rtol=0)
    mu, logvar = model.generative_upper(z2)
    standardised = (z[:, :4] - mu) / (0.5 * logvar).exp()  # z1 given z2: N(mu(z2), sigma(z2)^2)
    torch.testing.assert_close(standardised.std(0), torch.ones(4), atol=0.02, rtol=0)


@pytest.mark.parametrize("objective", [{"k": 1}, {"k": 3, "bound": "elbo"}])
def test_the_kl_warm_up_weights_the_log_prior_over_the_posterior_while_training(objective):
    model = small(kl_warmup_epochs=4.0, **objective)
    x = digits(6)
    model.set_training_progress(1.0)  # a quarter of the way: the weight is 0.25
    model.train()
    torch.manual_seed(3)
    terms, _ = model.objective(x, x, model.decode)
    torch.manual_seed(3)  # the same draws, by hand
    z, log_q = model.posterior(x).rsample_and_log_prob((model.k,))
    log_likelihood = model.likelihood.log_prob(model._decoded(z, model.decode), x)
    expected = -(log_likelihood + 0.25 * (model.log_prior(z) - log_q)).mean()
    torch.testing.assert_close(terms["loss"], expected)
    assert terms["kl_weight"] == 0.25
    model.eval()  # evaluation scores the bound itself, whatever the schedule
    torch.manual_seed(3)
    terms, _ = model.objective(x, x, model.decode)
    torch.testing.assert_close(
        terms["loss"], -terms["elbo"] if model.bound == "elbo" else -terms["iwae_bound"]
    )
    assert terms["kl_weight"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"latents": [4]}, "model.latents"),
        ({"prior": StudentTPrior()}, "prior"),
        ({"beta": 2.0}, "model.beta"),
        ({"k": 5, "kl_warmup_epochs": 2.0}, "model.kl_warmup_epochs: the warm-up weights the ELBO's KL"),
    ],
)
def test_what_it_cannot_take_is_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        small(**kwargs)


def test_vae_run_trains_evaluates_and_samples_a_two_layer_vae(tmp_path):
    vae_run(
        "model=vae2",
        "model.latents=[6,3]",
        "model.k=2",
        "data=digits",
        *TINY,
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    metrics = read_metrics(tmp_path / "run")
    assert metrics["test/nll_iwae"] > 0 and metrics["test/nll_ais"] > 0
    model = vaerun.load(tmp_path / "run")
    assert model.sample(3, seed=0).shape == (3, 1, 8, 8)
    assert model.encode(torch.rand(2, 1, 8, 8)).mean.shape == (2, 9)
