"""The Bernoulli and Gaussian decoder likelihoods (vaerun.models.likelihoods) against torch.distributions,
and where bits/dim are bits; the discretized logistic's tests are in test_discretized_logistic."""

import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal

from vaerun.models.likelihoods import (
    BINARY,
    DENSITY,
    LEVELS,
    BernoulliLikelihood,
    GaussianLikelihood,
    bernoulli_log_prob,
    dequantization_nats,
    gaussian_log_prob,
    squared_error,
)


def test_bernoulli_log_prob_matches_torch_distributions(generator):
    logits = torch.randn(4, 1, 8, 8, generator=generator)
    x = (torch.rand(4, 1, 8, 8, generator=generator) > 0.5).float()
    expected = Independent(Bernoulli(logits=logits), 3).log_prob(x)
    torch.testing.assert_close(bernoulli_log_prob(logits, x), expected)


def test_bernoulli_log_prob_of_many_samples_per_image_matches_torch_distributions(generator):
    """The IWAE's shapes: logits of k samples (k, N, ...) or (a, b, N, ...) against images (N, ...)."""
    x = (torch.rand(4, 1, 8, 8, generator=generator) > 0.5).float()
    for leading in [(3,), (2, 3), (1,)]:
        logits = torch.randn(*leading, 4, 1, 8, 8, generator=generator, requires_grad=True)
        got = bernoulli_log_prob(logits, x)
        expected = Independent(Bernoulli(logits=logits), 3).log_prob(x.expand_as(logits))
        torch.testing.assert_close(got, expected)
        (grad,) = torch.autograd.grad(got.sum(), logits)  # HMC takes gradients through it
        (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
        torch.testing.assert_close(grad, expected_grad)


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


def test_a_learned_gaussian_std_is_read_from_the_decoder_per_pixel(generator):
    likelihood = GaussianLikelihood(learn_std=True)
    location, log_std = (
        torch.randn(2, 3, 4, 4, generator=generator),
        -torch.rand(2, 3, 4, 4, generator=generator),
    )
    x = torch.rand(2, 3, 4, 4, generator=generator)
    expected = Independent(Normal(torch.sigmoid(location), log_std.exp()), 3).log_prob(x)
    output = torch.cat([location, log_std], dim=1)
    assert likelihood.output_channels(3) == 6
    torch.testing.assert_close(likelihood.log_prob(output, x), expected)
    torch.testing.assert_close(likelihood.mean(output), torch.sigmoid(location))


def test_squared_error_is_per_pixel_mean():
    assert squared_error(torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)).tolist() == [1.0, 1.0]


def test_bits_per_dim_are_given_only_where_they_are_bits_of_the_data():
    assert dequantization_nats(BINARY, binary_data=True, unit_range=True) == 0.0
    assert dequantization_nats(BINARY, binary_data=False, unit_range=True) is None  # a Bernoulli of grey
    assert dequantization_nats(LEVELS, binary_data=False, unit_range=True) == 0.0
    assert dequantization_nats(DENSITY, binary_data=False, unit_range=False) is None  # a table
    assert dequantization_nats(DENSITY, binary_data=True, unit_range=True) is None
    # the density's -log p(x) + log 256 at each level is the -log of the probability of the level's bin
    x = (torch.arange(256, dtype=torch.float64) + 0.5) / 256
    density = Normal(torch.tensor(0.5, dtype=torch.float64), 0.1)
    bins = density.cdf(x + 0.5 / 256) - density.cdf(x - 0.5 / 256)
    dequantized = -density.log_prob(x) + dequantization_nats(DENSITY, False, True)
    torch.testing.assert_close(dequantized, -bins.log(), rtol=1e-4, atol=1e-6)


def test_a_learned_gaussian_std_starts_at_its_initial_std(generator):
    output = torch.cat([torch.randn(2, 3, 4, 4, generator=generator), torch.zeros(2, 3, 4, 4)], dim=1)
    x = torch.rand(2, 3, 4, 4, generator=generator)
    likelihood = GaussianLikelihood(learn_std=True, initial_std=0.05)
    expected = Independent(Normal(torch.sigmoid(output[:, :3]), 0.05), 3).log_prob(x)
    torch.testing.assert_close(likelihood.log_prob(output, x), expected)
