"""The priors: densities, the Monte Carlo KL against numerical integration, reproducible samples."""

import math

import pytest
import torch
from scipy import stats

from vaerun.models.objectives import kl_normal_standard_normal_per_dim, reparameterize
from vaerun.models.priors import GaussianPrior, StudentTPrior


def numerical_kl(mu: float, logvar: float, log_p) -> float:
    """KL(N(mu, e^logvar) || p) in one dimension by the trapezoid rule on a fine grid."""
    sigma = math.exp(0.5 * logvar)
    z = torch.linspace(mu - 12 * sigma, mu + 12 * sigma, 200_001, dtype=torch.float64)
    log_q = torch.distributions.Normal(mu, sigma).log_prob(z)
    return torch.trapezoid(log_q.exp() * (log_q - log_p(z)), z).item()


@pytest.mark.parametrize("prior", [GaussianPrior(), StudentTPrior(df=3.0)])
def test_the_kl_per_dimension_is_right_in_expectation(prior):
    """Closed form (Gaussian) or one-sample Monte Carlo (Student-t): averaged over samples of q, the KL
    matches numerical integration."""
    torch.manual_seed(0)
    mu = torch.tensor([[0.0, 1.5, -2.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, -1.0, -3.0]], dtype=torch.float64)
    n = 400_000
    z = reparameterize(mu.expand(n, 3), logvar.expand(n, 3))
    estimate = prior.kl_per_dim(mu.expand(n, 3), logvar.expand(n, 3), z).mean(0)
    want = [
        numerical_kl(m, v, lambda z: prior.log_prob(z[:, None]))
        for m, v in zip(mu[0].tolist(), logvar[0].tolist(), strict=True)
    ]
    torch.testing.assert_close(estimate, torch.tensor(want, dtype=torch.float64), atol=0.01, rtol=0.01)


def test_the_gaussian_prior_kl_is_the_closed_form():
    mu, logvar = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(
        GaussianPrior().kl_per_dim(mu, logvar, torch.randn(4, 2)),
        kl_normal_standard_normal_per_dim(mu, logvar),
    )


def test_student_t_samples_are_reproducible_and_have_its_distribution():
    prior = StudentTPrior(df=3.0)
    first = prior.standard_sample((100_000, 2), torch.Generator().manual_seed(1))
    again = prior.standard_sample((100_000, 2), torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, again)
    for threshold in (1.0, 3.0, 6.0):  # the tails too: P(|z| > 6) is 30x the Gaussian's P(|z| > 3)
        frequency = (first.abs() > threshold).float().mean().item()
        assert frequency == pytest.approx(2 * stats.t.sf(threshold, 3.0), rel=0.05, abs=2e-4)


def test_a_student_t_prior_needs_positive_degrees_of_freedom():
    with pytest.raises(ValueError, match=r"prior\.df"):
        StudentTPrior(df=0)


def test_quantiles_of_the_standard_prior_dimensions():
    p = torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)
    torch.testing.assert_close(
        GaussianPrior().icdf(p), torch.tensor([-1.6449, 0.0, 1.6449], dtype=torch.float64), atol=1e-4, rtol=0
    )
    # heavier tails: the manifold and traversals of a Student-t VAE reach further out
    torch.testing.assert_close(
        StudentTPrior(3.0).icdf(p),
        torch.tensor([-2.3534, 0.0, 2.3534], dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )
