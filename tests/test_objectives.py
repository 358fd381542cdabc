import math

import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from vaerun.objectives import (
    BernoulliLikelihood,
    GaussianLikelihood,
    bernoulli_log_prob,
    gaussian_log_prob,
    kl_normal_standard_normal,
    reparameterize,
    squared_error,
)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


def test_kl_matches_torch_distributions(generator):
    mu = torch.randn(7, 5, generator=generator)
    logvar = torch.randn(7, 5, generator=generator)
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(torch.zeros(5), torch.ones(5)), 1)
    torch.testing.assert_close(kl_normal_standard_normal(mu, logvar), kl_divergence(q, p))


def test_kl_is_zero_only_at_the_prior():
    assert kl_normal_standard_normal(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0
    assert (kl_normal_standard_normal(torch.full((2, 3), 0.1), torch.zeros(2, 3)) > 0).all()


def test_bernoulli_log_prob_matches_torch_distributions(generator):
    logits = torch.randn(4, 1, 8, 8, generator=generator)
    x = (torch.rand(4, 1, 8, 8, generator=generator) > 0.5).float()
    expected = Independent(Bernoulli(logits=logits), 3).log_prob(x)
    torch.testing.assert_close(bernoulli_log_prob(logits, x), expected)


def test_gaussian_log_prob_matches_torch_distributions(generator):
    mean = torch.rand(4, 1, 8, 8, generator=generator)
    x = torch.rand(4, 1, 8, 8, generator=generator)
    expected = Independent(Normal(mean, 0.3), 3).log_prob(x)
    torch.testing.assert_close(gaussian_log_prob(mean, x, 0.3), expected)


def test_likelihoods_read_the_decoder_output_as_logits(generator):
    output = torch.randn(3, 1, 4, 4, generator=generator)
    x = torch.rand(3, 1, 4, 4, generator=generator)
    for likelihood in (BernoulliLikelihood(), GaussianLikelihood(std=0.2)):
        torch.testing.assert_close(likelihood.mean(output), torch.sigmoid(output))
    torch.testing.assert_close(
        GaussianLikelihood(std=0.2).log_prob(output, x), gaussian_log_prob(torch.sigmoid(output), x, 0.2)
    )
    with pytest.raises(ValueError, match="std"):
        GaussianLikelihood(std=0.0)


def test_reparameterize_has_the_posterior_moments_and_passes_gradients(generator):
    mu = torch.tensor([[1.0, -2.0]]).repeat(200_000, 1).requires_grad_()
    logvar = torch.tensor([[0.0, math.log(4.0)]]).repeat(200_000, 1).requires_grad_()
    z = reparameterize(mu, logvar, generator=generator)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 2.0]), atol=0.02, rtol=0)
    z.sum().backward()
    assert torch.all(mu.grad == 1)  # dz/dmu = 1: the gradient flows through the sample


def test_squared_error_is_per_pixel_mean():
    assert squared_error(torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)).tolist() == [1.0, 1.0]
