"""The Hamiltonian VAE's posterior (Caterini, Doucet & Sejdinovic 2018): a flow made of HMC's leapfrog
steps, with no accept/reject, so that every part of it has a known Jacobian.

q0's sample z0 and a Gaussian momentum are moved by ``leapfrog_steps`` leapfrog steps along the gradient of
log p(x, z), with learned per-dimension step sizes, and the momentum is cooled after each step from an
initial inverse temperature beta0 (learned, in (0, 1)) to 1:

    z0 ~ q0(z|x),  gamma ~ N(0, I),  rho0 = gamma / sqrt(beta0)
    K times: a leapfrog step (volume-preserving), then rho <- sqrt(beta_{k-1} / beta_k) rho

The leapfrog steps keep volume and the cooling multiplies it by beta0^(d/2) in all, which cancels the
scaling of gamma, so the ELBO on the space extended by the momentum is

    E[log p(x, zK) + log N(rhoK; 0, I) - log q0(z0|x) - log N(gamma; 0, I)],

that is the flow posterior's form with log q(zK|x) = log q0(z0|x) - log_det, log_det =
log N(rhoK; 0, I) - log N(gamma; 0, I): the Monte Carlo KL, the IWAE bound (on the extended space) and
sampling use it unchanged. Unlike an amortised flow, each step reads the decoder through the gradient of
log p(x, z), so the moves refine every image's code toward p(z|x) where the encoder falls short; training
backpropagates through those gradients (second derivatives of the decoder). AIS starts from q0, the
pictures place an image at q0's mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaerun.core.checks import check_values
from vaerun.models.posteriors.family import FlowPosterior, TransformFamily

LogDensity = Callable[[Tensor], Tensor]


def tempering_schedule(beta0: Tensor, steps: int) -> list[Tensor]:
    """Inverse temperatures beta_0 = beta0, ..., beta_K = 1 on the quadratic schedule of Caterini et al.:
    1 / sqrt(beta_k) = (1 - 1 / sqrt(beta0)) (k / K)^2 + 1 / sqrt(beta0)."""
    start = beta0.rsqrt()
    return [((1 - start) * (k / steps) ** 2 + start).pow(-2) for k in range(steps + 1)]


def gradient(log_density: LogDensity, z: Tensor) -> Tensor:
    """grad_z log_density(z), itself differentiable while gradients are being recorded (training reaches the
    decoder and the step sizes through it); under torch.no_grad it is computed and detached."""
    recording = torch.is_grad_enabled()
    with torch.enable_grad():
        if not z.requires_grad:
            z = z.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_density(z).sum(), z, create_graph=recording)
    return grad


def leapfrog(
    z: Tensor, rho: Tensor, grad: Tensor, step_size: Tensor, log_density: LogDensity
) -> tuple[Tensor, Tensor, Tensor]:
    """One leapfrog step of H(z, rho) = -log_density(z) + |rho|^2 / 2 from (z, rho), ``grad`` the gradient of
    log_density at z: the new (z, rho) and the gradient there."""
    rho = rho + 0.5 * step_size * grad
    z = z + step_size * rho
    grad = gradient(log_density, z)
    return z, rho + 0.5 * step_size * grad, grad


class HamiltonianFlow(nn.Module):
    """The learned parts: log step sizes (one per latent dimension) and beta0's logit. ``forward`` is the
    identity (the code of an image for pictures is q0's mean); ``move`` is the flow itself."""

    def __init__(self, latent_dim: int, leapfrog_steps: int, step_size: float, beta0: float) -> None:
        super().__init__()
        self.leapfrog_steps = leapfrog_steps
        self.log_step_size = nn.Parameter(torch.full((latent_dim,), math.log(step_size)))
        self.beta0_logit = nn.Parameter(torch.tensor(math.log(beta0 / (1 - beta0))))

    def forward(self, z0: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        return z0, z0.new_zeros(z0.shape[:-1])

    def move(self, z0: Tensor, gamma: Tensor, log_density: LogDensity) -> tuple[Tensor, Tensor]:
        """(zK, rhoK) from q0's sample z0 and the standard momentum draw gamma."""
        beta0 = torch.sigmoid(self.beta0_logit)
        betas = tempering_schedule(beta0, self.leapfrog_steps)
        step_size = self.log_step_size.exp()
        z, rho, grad = z0, gamma * beta0.rsqrt(), gradient(log_density, z0)
        for k in range(1, self.leapfrog_steps + 1):
            z, rho, grad = leapfrog(z, rho, grad, step_size, log_density)
            rho = rho * (betas[k - 1] / betas[k]).sqrt()
        return z, rho


class HamiltonianPosterior(FlowPosterior):
    """q(z|x) of the Hamiltonian VAE for one batch: its draws need the target p(x, z), whose log-density
    ``log_target`` takes z (..., N, K) to (..., N)."""

    def __init__(
        self, base: Distribution, flow: HamiltonianFlow, context: Tensor, log_target: LogDensity
    ) -> None:
        super().__init__(base, flow, context)
        self.log_target = log_target

    def transform(self, z0: Tensor) -> tuple[Tensor, Tensor]:
        """(zK, log_det) for q0's draws z0 (..., N, K), with a fresh momentum each: log q = log q0(z0) -
        log_det on the space extended by the momentum."""
        gamma = torch.randn_like(z0)
        z, rho = self.flow.move(z0, gamma, self.log_target)
        return z, 0.5 * (gamma.square().sum(-1) - rho.square().sum(-1))

    def annealing_problem(self, log_density: LogDensity) -> tuple[Distribution, LogDensity]:
        """AIS anneals from q0 to the target: the flow is random (its momentum), not a map to pull back."""
        return self.base, log_density


class Hamiltonian(TransformFamily):
    """``leapfrog_steps`` tempered leapfrog steps on q0's sample; ``step_size`` and ``beta0`` are the
    learned step sizes' and initial inverse temperature's starting values."""

    uses_target_gradient = True

    def __init__(self, leapfrog_steps: int = 2, step_size: float = 0.05, beta0: float = 0.5) -> None:
        check_values("posterior", {"leapfrog_steps": leapfrog_steps, "step_size": step_size, "beta0": beta0})
        self.leapfrog_steps, self.step_size, self.beta0 = int(leapfrog_steps), float(step_size), float(beta0)

    def context_features(self, latent_dim: int) -> int:
        return 0

    def build(self, latent_dim: int) -> nn.Module:
        return HamiltonianFlow(latent_dim, self.leapfrog_steps, self.step_size, self.beta0)

    def distribution(
        self, base: Distribution, module: nn.Module, context: Tensor, log_target: LogDensity
    ) -> HamiltonianPosterior:
        return HamiltonianPosterior(base, module, context, log_target)
