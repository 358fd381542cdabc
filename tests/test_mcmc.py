"""The MCMC kernels target what they claim, and AIS estimates log p(x) (exact on probabilistic PCA)."""

import itertools
import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from vaerun.models.mcmc import KERNELS, adapt_step_size, ais_log_likelihood, hmc_step, run_chains
from vaerun.models.objectives import iwae_log_likelihood

COVARIANCE = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)  # strongly correlated
MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
TARGET = MultivariateNormal(MEAN, COVARIANCE)


def moments_close(z: torch.Tensor, n: int) -> None:
    """Sample mean and covariance of n draws within 5 standard errors of the target's."""
    tolerance = 5 / math.sqrt(n)
    torch.testing.assert_close(z.mean(0), MEAN, atol=tolerance * 1.0, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), COVARIANCE, atol=tolerance * 1.5, rtol=0)


@pytest.mark.parametrize("name", KERNELS)
def test_each_kernel_leaves_a_correlated_gaussian_invariant(name):
    """Chains started at exact samples stay exact samples, whatever the step size (detailed balance)."""
    kernel, _ = KERNELS[name]
    torch.manual_seed(0)
    n = 20_000
    z = TARGET.sample((n,))
    for step_size in (0.05, 0.4, 1.2):  # from tiny to far too large (many rejections): still invariant
        out, moved = z, torch.zeros(n, dtype=torch.bool)
        for _ in range(5):
            step = kernel(out, TARGET.log_prob, step_size, leapfrog_steps=4)
            out, moved = step.z, moved | step.accepted
        moments_close(out, n)
        if step_size == 0.4:  # the chains do move: an identity kernel would pass the above
            assert moved.float().mean() > 0.2


#: transitions to burn in from far away: the random walk, without the gradient, needs the most
BURN_IN = {"hmc": 100, "mala": 300, "rwmh": 600}


@pytest.mark.parametrize("name", KERNELS)
def test_chains_started_far_away_converge_to_the_target_and_adapt_toward_the_acceptance_rate(name):
    kernel, target_accept = KERNELS[name]
    torch.manual_seed(1)
    n = 4000
    start = torch.full((n, 2), 6.0, dtype=torch.float64)
    burned_in, step, _ = run_chains(
        start, TARGET.log_prob, BURN_IN[name], step_size=1.5, target_accept=target_accept, kernel=kernel
    )
    z, _, acceptance = run_chains(
        burned_in, TARGET.log_prob, BURN_IN[name] // 5, step_size=step, target_accept=None, kernel=kernel
    )
    moments_close(z, n)
    # the step size moved from 1.5 toward the kernel's acceptance rate
    assert abs(acceptance.mean().item() - target_accept) < 0.15


@pytest.mark.long
@pytest.mark.parametrize("name", KERNELS)
def test_ais_recovers_the_exact_log_likelihood_of_a_linear_gaussian_model(name):
    """z ~ N(0, I_2), x | z ~ N(Wz + b, s^2 I_5): log p(x) = log N(x; b, W W^T + s^2 I). Starting from a
    deliberately poor q (the prior), AIS must close the gap that a plain importance estimate leaves."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 2, generator=generator, dtype=torch.float64) * 2
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    noise = 0.3
    marginal = MultivariateNormal(bias, weight @ weight.T + noise**2 * torch.eye(5, dtype=torch.float64))
    torch.manual_seed(0)
    x = marginal.sample((8,))
    exact = marginal.log_prob(x)

    def log_joint(z):  # (n, N, 2) -> (n, N)
        mean = z @ weight.T + bias
        likelihood = Normal(mean, noise).log_prob(x).sum(-1)
        return likelihood + Normal(0.0, 1.0).log_prob(z).sum(-1)

    prior_as_q = Independent(Normal(torch.zeros(8, 2, dtype=torch.float64), 1.0), 1)
    kernel, target_accept = KERNELS[name]
    temperatures = 500 if name == "hmc" else 2000  # one gradient per temperature against HMC's five
    estimate, acceptance = ais_log_likelihood(
        prior_as_q, log_joint, 512, temperatures, kernel=kernel, target_accept=target_accept
    )
    assert (estimate - exact).abs().max() < 0.2 and (estimate - exact).abs().mean() < 0.1
    assert abs(acceptance - target_accept) < 0.3
    # plain importance sampling (IWAE) from the same q, with as many samples as AIS has chains, is far off
    iwae = iwae_log_likelihood(prior_as_q, log_joint, num_samples=512)
    assert (exact - iwae).abs().mean() > 5 * (exact - estimate).abs().mean()


def test_a_transition_reusing_the_previous_ones_density_and_gradient_is_the_same_transition():
    start = torch.zeros(100, 2, dtype=torch.float64)
    first = hmc_step(start, TARGET.log_prob, 0.3, 3, torch.Generator().manual_seed(0))
    again = hmc_step(first.z, TARGET.log_prob, 0.3, 3, torch.Generator().manual_seed(1))
    reused = hmc_step(
        first.z, TARGET.log_prob, 0.3, 3, torch.Generator().manual_seed(1), (first.log_density, first.grad)
    )
    torch.testing.assert_close(reused.z, again.z)
    torch.testing.assert_close(reused.log_density, TARGET.log_prob(reused.z))


def test_ais_carries_the_joint_terms_across_temperatures_and_decodes_once_per_leapfrog_step():
    """The plain algorithm evaluates log p(x, z) afresh for every weight and every transition's start; the
    carried terms must give the same estimate with 2 passes fewer per temperature."""
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    x = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    calls = []

    def log_joint(z):
        calls.append(1)
        return Normal(z @ weight.T, 0.5).log_prob(x).sum(-1) + Normal(0.0, 1.0).log_prob(z).sum(-1)

    q = Independent(Normal(torch.zeros(4, 2, dtype=torch.float64), 1.0), 1)
    temperatures, leapfrog_steps = 20, 3
    torch.manual_seed(0)
    estimate, _ = ais_log_likelihood(q, log_joint, 6, temperatures, leapfrog_steps)
    assert len(calls) == 1 + temperatures * leapfrog_steps

    torch.manual_seed(0)  # the plain algorithm, with the same random numbers
    z = q.sample((6,))
    log_weights = torch.zeros(6, 4, dtype=torch.float64)
    step = torch.full((4,), 0.1, dtype=torch.float64)
    betas = torch.linspace(0.0, 1.0, temperatures + 1).tolist()
    for previous, beta in itertools.pairwise(betas):
        log_weights += (beta - previous) * (log_joint(z) - q.log_prob(z))
        out = hmc_step(z, lambda c, b=beta: (1 - b) * q.log_prob(c) + b * log_joint(c), step, leapfrog_steps)
        z, step = out.z, adapt_step_size(step, out.accept_prob, 0.65)
    plain = torch.logsumexp(log_weights, dim=0) - math.log(6)
    torch.testing.assert_close(estimate, plain, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", KERNELS)
def test_a_trajectory_that_diverges_to_nan_is_rejected_not_an_error(name):
    """A step size far too large for a sharp target sends the leapfrog to inf and NaN; a torch distribution
    refuses NaN in log_prob. The diverged chains stay where they were, the others move on."""
    kernel, _ = KERNELS[name]
    sharp = Independent(Normal(torch.zeros(2), 1e-3), 1)  # validates its arguments, as torch's do by default
    z = torch.zeros(4, 2)
    step = torch.tensor([1e-4, 1e-4, 1e3, 1e3])  # the last two chains' trajectories blow up
    torch.manual_seed(0)
    out = kernel(z, sharp.log_prob, step, 20)
    assert torch.isfinite(out.z).all() and torch.isfinite(out.log_density).all()
    assert not out.accepted[2:].any() and torch.equal(out.z[2:], z[2:]) and (out.accept_prob[2:] == 0).all()
    assert out.accepted[:2].any()  # small steps on the same target still move
    # AIS: the step adapts per image; one started far too large diverges at first and then shrinks
    posterior = Independent(Normal(torch.zeros(3, 2), 1.0), 1)
    estimate, _ = ais_log_likelihood(posterior, sharp.log_prob, 8, 10, step_size=1e3, kernel=kernel)
    assert torch.isfinite(estimate).all()
