"""MetFlow: invertible proposal maps, a kernel that leaves the target invariant, an exact density of the
chain's output, a valid bound, and an unbiased gradient through the accept/reject decisions."""

import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from vaerun.models.objectives import iwae_log_likelihood
from vaerun.models.posteriors.metflow import (
    CouplingMap,
    Innovations,
    MetFlow,
    MetFlowChain,
    MetFlowPosterior,
    log1mexp,
)

K, H = 2, 8


def random_chain(steps: int, seed: int = 0, scale: float = 0.4) -> MetFlowChain:
    """A chain whose maps are far from the identity (they start as it)."""
    torch.manual_seed(seed)
    chain = MetFlowChain(K, steps, H).double()
    with torch.no_grad():
        for parameter in chain.parameters():
            parameter.normal_(0.0, scale)
    return chain


def correlated_gaussian() -> MultivariateNormal:
    return MultivariateNormal(
        torch.tensor([0.5, -0.3], dtype=torch.float64),
        torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64),
    )


def test_a_coupling_map_inverts_in_closed_form_with_the_log_determinant_of_its_jacobian():
    torch.manual_seed(0)
    coupling = CouplingMap(3, 4, 16).double()
    with torch.no_grad():
        for parameter in coupling.parameters():
            parameter.normal_(0.0, 0.5)
    z, conditions = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    y, log_det = coupling(z, conditions)
    back, back_log_det = coupling.inverse(y, conditions)
    torch.testing.assert_close(back, z)
    torch.testing.assert_close(back_log_det, -log_det)
    for i in range(5):
        jacobian = torch.autograd.functional.jacobian(lambda row, i=i: coupling(row, conditions[i])[0], z[i])
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(jacobian).logabsdet)
    assert not torch.allclose(y, z)


def test_log1mexp_is_accurate_at_both_ends_and_its_gradient_stays_finite_at_certainty():
    log_p = torch.tensor([-50.0, -1.0, -0.1, -1e-8], dtype=torch.float64)
    exact = [-math.exp(-50.0), math.log(1 - math.exp(-1.0)), math.log(1 - math.exp(-0.1)), math.log(1e-8)]
    torch.testing.assert_close(log1mexp(log_p), torch.tensor(exact, dtype=torch.float64), rtol=1e-6, atol=0)
    certain = torch.zeros(1, requires_grad=True)
    value = log1mexp(certain)
    value.backward()
    assert value.item() < -60 and torch.isfinite(certain.grad).all()


def test_the_kernel_leaves_a_correlated_gaussian_invariant_from_exact_samples():
    """The direction variable makes each move an involution: with it, MH with any learned map keeps
    the target. (Proposing with T only, never its inverse, drifts: checked as the failing case.)"""
    target = correlated_gaussian()
    chain = random_chain(steps=3)
    context = torch.randn(1, H, dtype=torch.float64)
    torch.manual_seed(1)
    start = target.sample((40_000, 1))
    with torch.no_grad():
        innovations = Innovations.draw(3, start)
        moved = chain.run(start, context, target.log_prob, innovations)
        forward_only = Innovations(innovations.noise, torch.ones_like(innovations.forward))
        drifted = chain.run(start, context, target.log_prob, forward_only)
    assert 0.2 < moved.accepted.double().mean() < 0.95  # the chain moves
    z = moved.z[:, 0]
    torch.testing.assert_close(z.mean(0), target.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), target.covariance_matrix, atol=0.05, rtol=0)
    drift = (drifted.z[:, 0].mean(0) - target.mean).abs().max() + (
        torch.cov(drifted.z[:, 0].T) - target.covariance_matrix
    ).abs().max()
    assert drift > 0.1


@pytest.mark.long
def test_the_density_of_the_chains_output_is_normalised_and_is_the_law_of_its_draws():
    """For fixed noises and directions, log q_K evaluated anywhere integrates to 1 (importance sampling
    from a broad Gaussian), and its moments are those of the chain's own draws with those innovations."""
    chain = random_chain(steps=3, seed=2)
    target = correlated_gaussian()
    context = torch.randn(3, H, dtype=torch.float64)
    base = Independent(Normal(torch.randn(3, K, dtype=torch.float64) * 0.5, 0.8), 1)
    innovations = Innovations.draw(3, torch.zeros(3, K, dtype=torch.float64))
    broad = Independent(Normal(torch.zeros(K, dtype=torch.float64), 2.5), 1)
    torch.manual_seed(3)
    with torch.no_grad():
        y = broad.sample((100_000, 3))
        log_q = chain.log_density(y, target.log_prob(y), context, target.log_prob, base.log_prob, innovations)
        weights = torch.exp(log_q - broad.log_prob(y))
        draws = chain.run(base.sample((100_000,)), context, target.log_prob, innovations).z
    torch.testing.assert_close(weights.mean(0), torch.ones(3, dtype=torch.float64), atol=0.03, rtol=0)
    by_density = (weights[..., None] * y).mean(0)
    torch.testing.assert_close(by_density, draws.mean(0), atol=0.04, rtol=0)
    torch.testing.assert_close((weights[..., None] * y**2).mean(0), (draws**2).mean(0), atol=0.06, rtol=0)


def linear_gaussian_model():
    """z ~ N(0, I_2), x | z ~ N(Wz + b, 0.5^2 I_4): (log p(x, z) for z (n, N, K), exact log p(x))."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(4, K, generator=generator, dtype=torch.float64)
    bias = torch.randn(4, generator=generator, dtype=torch.float64)
    marginal = MultivariateNormal(bias, weight @ weight.T + 0.25 * torch.eye(4, dtype=torch.float64))
    torch.manual_seed(0)
    x = marginal.sample((3,))

    def log_joint(z):
        return Normal(z @ weight.T + bias, 0.5).log_prob(x).sum(-1) + Normal(0.0, 1.0).log_prob(z).sum(-1)

    return log_joint, marginal.log_prob(x)


@pytest.mark.long
def test_the_iwae_of_metflow_is_a_lower_bound_that_tightens_with_k():
    log_joint, exact = linear_gaussian_model()
    chain = random_chain(steps=2, seed=4, scale=0.2)
    base = Independent(Normal(torch.zeros(3, K, dtype=torch.float64), 0.7), 1)
    q = MetFlowPosterior(base, chain, torch.randn(3, H, dtype=torch.float64), log_joint)
    torch.manual_seed(5)
    with torch.no_grad():
        bounds = {}
        for k in (1, 20):
            bounds[k] = torch.stack([iwae_log_likelihood(q, log_joint, k) for _ in range(300)]).mean(0)
        moves = q.draw((1000,))[0].accepted.double().mean()
    assert moves > 0.1
    assert (bounds[1] < bounds[20]).all()
    assert (bounds[20] < exact + 0.01).all()


def test_the_paths_are_every_run_of_the_chain_with_its_probability():
    """From one z0 with fixed innovations, the 2^K endpoints weighted by their paths' probabilities have
    the mean and acceptance of many runs of the chain, and the probabilities sum to 1."""
    log_joint, _ = linear_gaussian_model()
    chain = random_chain(steps=3, seed=8, scale=0.15)
    context = torch.randn(3, H, dtype=torch.float64)
    z0 = torch.randn(3, K, dtype=torch.float64) * 0.5
    innovations = Innovations.draw(3, z0)
    with torch.no_grad():
        z, log_pi, log_prob, accepted = chain.paths(z0, context, log_joint, innovations)
        torch.manual_seed(9)
        runs = chain.run(z0.expand(40_000, 3, K), context, log_joint, innovations)
    weight = log_prob.exp()
    assert z.shape == (8, 3, K) and not torch.allclose(weight, weight[:1])
    torch.testing.assert_close(weight.sum(0), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(log_pi, log_joint(z))
    torch.testing.assert_close((weight[..., None] * z).sum(0), runs.z.mean(0), atol=0.02, rtol=0)
    by_paths = (weight * accepted).sum(0)
    torch.testing.assert_close(by_paths, runs.accepted.double().sum(0).mean(0), atol=0.03, rtol=0)


def test_one_step_paths_give_the_elbo_summed_over_the_decision():
    """One step: E over the decision of f = log p(x, z) - log q_1(z) is alpha f(T z0) + (1 - alpha) f(z0),
    and MetFlowPosterior.paths puts exactly those two terms, with gradients through alpha."""
    log_joint, _ = linear_gaussian_model()
    chain = random_chain(steps=1, seed=6, scale=0.2)
    context = torch.randn(3, H, dtype=torch.float64)
    theta = torch.zeros((), dtype=torch.float64, requires_grad=True)
    base = Independent(Normal(torch.full((3, K), -1.0, dtype=torch.float64) + theta, 0.6), 1)
    torch.manual_seed(7)
    paths = MetFlowPosterior(base, chain, context, log_joint).paths((5,))
    torch.manual_seed(7)
    z0 = base.rsample((5,))
    innovations = Innovations.draw(1, z0)
    proposal, log_det = chain.move(0, z0, innovations.noise[0], innovations.forward[0], context)
    log_alpha = (log_joint(proposal) + log_det - log_joint(z0)).clamp(max=0.0)
    torch.testing.assert_close(paths.z, torch.stack([z0, proposal]))
    torch.testing.assert_close(paths.log_prob[1], log_alpha)
    torch.testing.assert_close(paths.log_prob[0].exp(), 1 - log_alpha.exp())
    assert ((log_alpha > -3) & (log_alpha < -0.05)).any()  # a decision that matters
    elbo = (paths.log_prob.exp() * (paths.log_target - paths.log_q)).sum(0).mean()
    (gradient,) = torch.autograd.grad(elbo, theta)
    assert torch.isfinite(gradient) and gradient != 0


def test_the_family_checks_its_steps_and_builds_a_chain_whose_code_is_q0s_mean():
    family = MetFlow(steps=2, hidden=H)
    assert family.is_flow and family.is_chain and family.context_features(K) == H
    chain = family.build(K)
    mean = torch.randn(4, K)
    torch.testing.assert_close(chain(mean, torch.randn(4, H))[0], mean)
    with pytest.raises(ValueError, match=r"posterior\.steps must be an integer in"):
        MetFlow(steps=0)
