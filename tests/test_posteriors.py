"""Flow posteriors: exact log-determinants, an autoregressive IAF, and q's density kept honest downstream
(the IWAE bound stays a bound; AIS through the pulled-back target still finds log p(x))."""

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from vaerun.models.mcmc import ais_log_likelihood
from vaerun.models.objectives import iwae_log_likelihood
from vaerun.models.posteriors import IAF, FlowPosterior, Gaussian, Planar
from vaerun.models.posteriors.flows import made_masks

K = 3


def log_det_by_autograd(flow, z0: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """log|det dz/dz0| of each row from autograd's full Jacobian."""
    dets = []
    for i in range(len(z0)):
        row_context = context[i : i + 1]
        jacobian = torch.autograd.functional.jacobian(lambda z, c=row_context: flow(z, c)[0], z0[i : i + 1])
        dets.append(torch.linalg.slogdet(jacobian[0, :, 0, :]).logabsdet)
    return torch.stack(dets)


def flow_and_context(family, seed: int = 0):
    torch.manual_seed(seed)
    flow = family.build(K).double()
    context = torch.randn(6, family.context_features(K), dtype=torch.float64)
    return flow, context


@pytest.mark.parametrize("family", [Planar(flows=3), IAF(flows=3, hidden=8)], ids=["planar", "iaf"])
def test_each_flows_log_determinant_matches_autograds_jacobian(family):
    flow, context = flow_and_context(family)
    z0 = torch.randn(6, K, dtype=torch.float64) * 2
    z, log_det = flow(z0, context)
    assert z.shape == z0.shape and not torch.allclose(z, z0)  # the flow does something
    torch.testing.assert_close(log_det, log_det_by_autograd(flow, z0, context))


def test_an_iaf_step_is_autoregressive_so_its_jacobian_is_triangular():
    flow, context = flow_and_context(IAF(flows=1, hidden=8))
    z0 = torch.randn(1, K, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda z: flow(z, context[:1])[0], z0)[0, :, 0, :]
    assert torch.count_nonzero(torch.triu(jacobian, diagonal=1)) == 0  # output i reads inputs 1..i only
    assert torch.count_nonzero(torch.tril(jacobian, diagonal=-1)) > 0  # and does read them
    to_hidden, hidden_to_hidden, to_output = made_masks(K, 8)
    assert (to_output @ hidden_to_hidden @ to_hidden).triu().count_nonzero() == 0


def test_planar_flows_stay_invertible_whatever_the_encoder_outputs():
    """u_hat is constrained so that w . u_hat >= -1: the map is monotone along w, det > 0."""
    flow, context = flow_and_context(Planar(flows=4))
    context = context * 20  # extreme parameters
    z0 = torch.randn(6, K, dtype=torch.float64)
    _, log_det = flow(z0, context)
    assert torch.isfinite(log_det).all()
    torch.testing.assert_close(log_det, log_det_by_autograd(flow, z0, context))


def test_zero_flow_parameters_give_back_the_gaussian():
    """A planar flow with all its parameters 0 is the identity: q is q0 and log q its Gaussian density."""
    family = Planar(flows=2)
    flow = family.build(K)
    base = Independent(Normal(torch.randn(6, K), torch.rand(6, K) + 0.5), 1)
    q = FlowPosterior(base, flow, torch.zeros(6, family.context_features(K)))
    z, log_q = q.rsample_and_log_prob((4,))
    torch.testing.assert_close(log_q, base.log_prob(z))
    assert Gaussian().context_features(K) == 0


def linear_gaussian_model(seed: int = 0):
    """z ~ N(0, I_K), x | z ~ N(Wz + b, 0.5^2 I_4): exact log p(x) = log N(x; b, W W^T + 0.25 I), and
    a diagonal Gaussian near the exact posterior (its mean, 1.5 times its marginal std): (log p(x, z),
    exact log p(x), that Gaussian)."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(4, K, generator=generator, dtype=torch.float64)
    bias = torch.randn(4, generator=generator, dtype=torch.float64)
    marginal = MultivariateNormal(bias, weight @ weight.T + 0.25 * torch.eye(4, dtype=torch.float64))
    torch.manual_seed(seed)
    x = marginal.sample((6,))

    def log_joint(z):  # (n, N, K) -> (n, N)
        return Normal(z @ weight.T + bias, 0.5).log_prob(x).sum(-1) + Normal(0.0, 1.0).log_prob(z).sum(-1)

    covariance = torch.linalg.inv(torch.eye(K, dtype=torch.float64) + weight.T @ weight / 0.25)
    mean = (x - bias) @ weight @ covariance / 0.25
    near = Independent(Normal(mean, 1.5 * covariance.diagonal().sqrt()), 1)
    return log_joint, marginal.log_prob(x), near


@pytest.mark.parametrize("family", [Planar(flows=3), IAF(flows=2, hidden=8)], ids=["planar", "iaf"])
def test_the_iwae_of_a_flow_posterior_stays_a_lower_bound_that_tightens_with_k(family):
    log_joint, exact, near = linear_gaussian_model()
    flow, context = flow_and_context(family, seed=1)
    q = FlowPosterior(near, flow, 0.1 * context)  # a mild flow on a base near the posterior
    with torch.no_grad():
        bounds = {
            k: torch.stack([iwae_log_likelihood(q, log_joint, k) for _ in range(200)]).mean(0)
            for k in (1, 10)
        }
    assert (bounds[1] < bounds[10]).all()  # the ELBO (k = 1) is the loosest
    assert (bounds[10] < exact + 0.01).all()  # a bound in expectation


@pytest.mark.parametrize("family", [Planar(flows=3), IAF(flows=2, hidden=8)], ids=["planar", "iaf"])
def test_a_flow_posteriors_log_density_is_normalised(family):
    """Importance sampling of a normalised density N(0, 0.5^2 I) from q finds its integral, 1, only if
    log q is q's true log-density (q is broader than the target, so the weights are bounded)."""
    flow, context = flow_and_context(family, seed=2)
    q = FlowPosterior(
        Independent(Normal(torch.zeros(6, K, dtype=torch.float64), 1.0), 1), flow, 0.1 * context
    )
    target = Independent(Normal(torch.zeros(K, dtype=torch.float64), 0.5), 1)
    with torch.no_grad():
        log_integral = iwae_log_likelihood(q, target.log_prob, 40_000, chunk_size=10_000)
    torch.testing.assert_close(log_integral, torch.zeros(6, dtype=torch.float64), atol=0.05, rtol=0)


@pytest.mark.long
def test_ais_from_a_flow_posterior_runs_on_the_base_and_finds_the_exact_log_likelihood():
    log_joint, exact, _ = linear_gaussian_model()
    flow, context = flow_and_context(IAF(flows=2, hidden=8), seed=1)
    q = FlowPosterior(Independent(Normal(torch.zeros(6, K, dtype=torch.float64), 1.0), 1), flow, context)
    torch.manual_seed(0)
    estimate, _ = ais_log_likelihood(q.base, q.pull_back(log_joint), num_chains=256, num_temperatures=200)
    torch.testing.assert_close(estimate, exact, atol=0.1, rtol=0)
