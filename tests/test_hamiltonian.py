"""The Hamiltonian VAE's posterior: a volume-preserving flow, its cooling schedule, a density that is
normalised on the space extended by the momentum, and gradients that reach every learned part."""

import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from vaerun.models.objectives import iwae_log_likelihood
from vaerun.models.posteriors.hamiltonian import (
    Hamiltonian,
    HamiltonianFlow,
    HamiltonianPosterior,
    gradient,
    leapfrog,
    tempering_schedule,
)

K = 2


def correlated_gaussian() -> MultivariateNormal:
    return MultivariateNormal(
        torch.tensor([0.5, -0.3], dtype=torch.float64),
        torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64),
    )


def flow(steps: int, step_size: float = 0.3, beta0: float = 0.4) -> HamiltonianFlow:
    return HamiltonianFlow(K, steps, step_size, beta0).double()


def test_the_cooling_schedule_runs_from_beta0_to_one_and_only_rises():
    betas = torch.stack(tempering_schedule(torch.tensor(0.3), 4))
    torch.testing.assert_close(betas[[0, -1]], torch.tensor([0.3, 1.0]))
    assert (betas.diff() > 0).all()


def test_a_leapfrog_step_keeps_volume_and_runs_back_with_the_momentum_reversed():
    target = correlated_gaussian()
    step = torch.tensor([0.3, 0.2], dtype=torch.float64)

    def one_step(state):
        z, rho = state[:K], state[K:]
        z, rho, _ = leapfrog(z, rho, gradient(target.log_prob, z), step, target.log_prob)
        return torch.cat([z, rho])

    start = torch.tensor([1.0, -2.0, 0.5, 0.7], dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(one_step, start)
    torch.testing.assert_close(torch.linalg.det(jacobian), torch.tensor(1.0, dtype=torch.float64))
    end = one_step(start)
    back = one_step(torch.cat([end[:K], -end[K:]]))
    torch.testing.assert_close(torch.cat([back[:K], -back[K:]]), start)


def test_the_whole_flow_from_q0_sample_and_momentum_draw_keeps_volume():
    """The momentum's scaling by 1/sqrt(beta0) and the cooling multiply volume by beta0^(-d/2) and
    beta0^(d/2): the map (z0, gamma) -> (zK, rhoK) has Jacobian determinant 1, which is what makes
    log q = log q0(z0) + log N(gamma) - log N(rhoK) exact."""
    hamiltonian, target = flow(3), correlated_gaussian()

    def whole(state):
        z, rho = hamiltonian.move(state[None, :K], state[None, K:], target.log_prob)
        return torch.cat([z[0], rho[0]])

    jacobian = torch.autograd.functional.jacobian(
        whole, torch.tensor([0.2, 1.5, -1.0, 0.3], dtype=torch.float64)
    )
    torch.testing.assert_close(torch.linalg.det(jacobian).abs(), torch.tensor(1.0, dtype=torch.float64))


def test_the_density_is_normalised_so_importance_sampling_finds_the_normaliser():
    """Weights p(zK) N(rhoK) / (q0(z0) N(gamma)) of a normalised target average to 1 (its normaliser): a
    wrong log-determinant (the cooling's, say) would scale them."""
    torch.manual_seed(0)
    target = correlated_gaussian()
    base = Independent(Normal(torch.zeros(1, K, dtype=torch.float64), 1.3 * torch.ones(1, K).double()), 1)
    posterior = HamiltonianPosterior(base, flow(2), torch.zeros(1, 0).double(), target.log_prob)
    with torch.no_grad():
        z, log_q = posterior.rsample_and_log_prob((200_000,))
    weights = torch.exp(target.log_prob(z) - log_q)
    mean, error = weights.mean().item(), weights.std().item() / math.sqrt(len(weights))
    assert abs(mean - 1.0) < 4 * error and error < 0.01


def test_its_iwae_is_a_bound_on_log_p_x_that_tightens_with_k():
    torch.manual_seed(1)
    target = correlated_gaussian()
    base = Independent(Normal(torch.tensor([[0.0, 0.3]]).double(), 0.5 * torch.ones(1, K).double()), 1)
    posterior = HamiltonianPosterior(base, flow(2), torch.zeros(1, 0).double(), target.log_prob)
    with torch.no_grad():
        bounds = [
            torch.stack([iwae_log_likelihood(posterior, target.log_prob, k, 50) for _ in range(200)]).mean()
            for k in (1, 10, 100)
        ]
    assert bounds[0] < bounds[1] < bounds[2] < 0.01  # log p(x) = 0


def test_training_reaches_the_step_sizes_the_temperature_and_q0_and_evaluation_needs_no_graph():
    torch.manual_seed(0)
    target = correlated_gaussian()
    mu = torch.zeros(1, K, dtype=torch.float64, requires_grad=True)
    hamiltonian = flow(2)
    posterior = Hamiltonian(leapfrog_steps=2).distribution(
        Independent(Normal(mu, torch.ones(1, K).double()), 1), hamiltonian, torch.zeros(1, 0), target.log_prob
    )
    z, log_q = posterior.rsample_and_log_prob((64,))
    (target.log_prob(z) - log_q).mean().backward()
    for parameter in (mu, hamiltonian.log_step_size, hamiltonian.beta0_logit):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    with torch.no_grad():
        z, log_q = posterior.rsample_and_log_prob((4,))
    assert not z.requires_grad and not log_q.requires_grad


@pytest.mark.parametrize("settings", [{"leapfrog_steps": 0}, {"step_size": -0.1}, {"beta0": 1.0}])
def test_settings_out_of_range_are_refused_by_name(settings):
    from vaerun.core.checks import ConfigError

    with pytest.raises(ConfigError, match=f"posterior.{next(iter(settings))}"):
        Hamiltonian(**settings)
