"""Proof that the reported likelihoods are right.

A VAE with a linear encoder and a linear-Gaussian decoder N(Wz + b, s^2 I) is probabilistic PCA, whose
log p(x) = log N(x; b, W W^T + s^2 I) and posterior p(z|x) are known in closed form (Tipping & Bishop 1999).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from vaerun.data import DigitsSource, to_unit_float
from vaerun.models.autoencoders import VariationalAutoencoder
from vaerun.models.likelihoods import BernoulliLikelihood, GaussianLikelihood
from vaerun.models.networks import MLP

D, K, NOISE = 6, 2, 0.5


@pytest.fixture
def ppca():
    """(model with q set to the exact posterior, data x, analytic log p(x))."""
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, K, generator=generator, dtype=torch.float64))
    scales = torch.tensor([2.0, 0.7], dtype=torch.float64)
    weight, bias = q * scales, torch.randn(D, generator=generator, dtype=torch.float64)
    marginal = MultivariateNormal(bias, weight @ weight.T + NOISE**2 * torch.eye(D, dtype=torch.float64))
    x = marginal.sample((64,)).reshape(64, 1, 1, D)

    model = VariationalAutoencoder(
        MLP(hidden=[]), GaussianLikelihood(NOISE, bounded=False), K, (1, 1, D)
    ).double()
    m_diag = scales**2 + NOISE**2  # W^T W + s^2 I is diagonal: orthogonal columns
    posterior_map = weight.T / m_diag[:, None]  # M^-1 W^T
    encoder, decoder = model.encoder[-1], model.decoder[0]
    with torch.no_grad():
        decoder.weight.copy_(weight)
        decoder.bias.copy_(bias)
        encoder.weight.zero_()
        encoder.weight[:K] = posterior_map
        encoder.bias[:K] = -posterior_map @ bias
        encoder.bias[K:] = torch.log(NOISE**2 / m_diag)
    return model, x, marginal.log_prob(x.reshape(64, D))


def test_the_fixture_is_the_exact_posterior(ppca):
    model, x, _ = ppca
    mu, logvar = model.posterior_parameters(x)
    weight = model.decoder[0].weight
    precision = weight.T @ weight / NOISE**2 + torch.eye(K, dtype=torch.float64)
    mean = (
        torch.linalg.solve(precision, weight.T @ (x.reshape(64, D) - model.decoder[0].bias).T) / NOISE**2
    ).T
    torch.testing.assert_close(mu, mean)
    torch.testing.assert_close(logvar.exp(), torch.linalg.inv(precision).diagonal().expand(64, K))


def test_elbo_equals_log_likelihood_at_the_exact_posterior(ppca):
    model, x, exact = ppca
    torch.manual_seed(0)
    # The single-sample importance ratio is exactly log p(x) for every z ...
    torch.testing.assert_close(model.log_likelihood(x, x, num_samples=1), exact)
    # ... and the training objective (analytic KL + Monte-Carlo reconstruction) averages to it.
    repeats = x.repeat(4000, 1, 1, 1)
    elbo = model.loss_terms(repeats, repeats)["elbo"]
    assert elbo.item() == pytest.approx(exact.mean().item(), abs=0.05)


def test_the_iwae_in_cpu_passes_gives_each_image_its_own_estimate(ppca, monkeypatch):
    """Passes of 3 decoder rows (one image, 3 samples at a time) instead of one pass: at the exact
    posterior every importance weight is p(x), so each image's estimate is its own exact log p(x)."""
    from vaerun.models import objectives

    model, x, exact = ppca
    monkeypatch.setattr(objectives, "CPU_PASS_NUMBERS", 3 * D)
    assert objectives.cpu_pass_shape(len(x), 7, 5, D) == (1, 3)
    torch.testing.assert_close(model.log_likelihood(x, x, num_samples=7, chunk_size=5), exact)


def test_iwae_with_a_poor_posterior_converges_to_the_analytic_value(ppca):
    model, x, exact = ppca
    with torch.no_grad():  # a worse q: shifted means, doubled variances
        model.encoder[-1].bias[:K] += 0.5
        model.encoder[-1].bias[K:] += math.log(2.0)
    torch.manual_seed(0)
    elbo = model.log_likelihood(x, x, num_samples=1).mean()  # one-sample ELBO estimate
    iwae = model.log_likelihood(x, x, num_samples=20_000, chunk_size=2000).mean()
    assert exact.mean() - elbo > 0.2  # the bound is loose at k=1 ...
    assert iwae.item() == pytest.approx(exact.mean().item(), abs=0.05)  # ... and tight at large k


@pytest.fixture(scope="module")
def trained_vae():
    torch.manual_seed(0)
    splits = DigitsSource().load()
    train, test = to_unit_float(splits.train.images), to_unit_float(splits.test.images)
    model = VariationalAutoencoder(MLP(hidden=[128]), BernoulliLikelihood(), 4, (1, 8, 8))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        for batch in train[torch.randperm(len(train))].split(64):
            optimizer.zero_grad()
            model.loss_terms(batch, batch)["loss"].backward()
            optimizer.step()
    return model.eval(), test


@torch.no_grad()
def test_iwae_bounds_the_elbo_and_tightens_with_k(trained_vae):
    model, x = trained_vae
    torch.manual_seed(1)
    repeats = 20  # the ELBO averaged over many samples, to compare against estimates of small MC error
    elbo = torch.stack([model.loss_terms(x, x)["elbo"] for _ in range(repeats)]).mean()
    estimates = [model.log_likelihood(x, x, num_samples=k).mean() for k in (1, 10, 100, 1000)]
    assert estimates[0].item() == pytest.approx(elbo.item(), abs=0.3)  # k = 1 is the ELBO
    for smaller, larger in itertools.pairwise(estimates):
        assert larger >= smaller - 0.05
    assert estimates[-1] > elbo + 0.1  # a real gap (~0.3 nats here), well above the noise (~0.02)
