"""Markov chain Monte Carlo in latent space: three Metropolis-Hastings kernels (Hamiltonian Monte Carlo,
the Metropolis-adjusted Langevin algorithm and random-walk Metropolis), step sizes adapted toward a target
acceptance rate, and annealed importance sampling (AIS, Neal 2001) of log p(x).

A kernel is a function with ``hmc_step``'s signature returning an ``MCMCStep``; ``KERNELS`` names them
(``model.mcmc_kernel``, ``eval.ais_kernel``) with the acceptance rate each is best tuned to.

Pure functions on tensors. A log-density maps codes (..., K) to (...); every leading position is its own
chain (e.g. (chains, images)), so one call runs thousands of chains at once; step sizes are shared by
groups of chains (see ``adapt_step_size``).
Gradients with respect to z are taken here, whatever the caller's grad mode; the caller's parameters get
none.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

LogDensity = Callable[[Tensor], Tensor]
#: codes -> (log-density, its gradient): what a kernel evaluates at each proposal
Evaluate = Callable[[Tensor], tuple[Tensor, Tensor]]


def value_and_grad(log_density: LogDensity, z: Tensor) -> tuple[Tensor, Tensor]:
    """log_density(z) and its gradient with respect to z, both detached."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        value = log_density(z)
        (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad.detach()


@dataclass
class MCMCStep:
    z: Tensor  # the chains' new states (..., K)
    log_density: Tensor  # at z (...)
    grad: Tensor  # of the log-density at z (..., K): the next transition of the same target starts from it
    accept_prob: Tensor  # the Metropolis acceptance probability of each chain's proposal (...)
    accepted: Tensor  # whether each chain moved to its proposal (...)


def hmc_step(
    z: Tensor,
    log_density: LogDensity | None,
    step_size: Tensor | float,
    leapfrog_steps: int,
    generator: torch.Generator | None = None,
    current: tuple[Tensor, Tensor] | None = None,
    evaluate: Evaluate | None = None,
) -> MCMCStep:
    """One HMC transition per chain: a fresh Gaussian momentum, ``leapfrog_steps`` leapfrog steps, and a
    Metropolis correction, so the kernel leaves exp(log_density) invariant (detailed balance holds for
    the leapfrog's volume-preserving, reversible map). ``current``: the log-density and its gradient at
    ``z`` where a previous transition of the same target computed them (one pass fewer). ``evaluate``:
    computes (log_density(z), its gradient) in place of autograd on ``log_density`` (AIS keeps the terms
    of its sum apart this way)."""
    evaluate, step, (value, start_grad) = _start(z, log_density, step_size, current, evaluate)
    momentum = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    proposal, p, grad = z.detach(), momentum + 0.5 * step * start_grad, start_grad
    for i in range(leapfrog_steps):
        proposal = proposal + step * p
        proposed, grad = evaluate(proposal)
        p = p + (step if i + 1 < leapfrog_steps else 0.5 * step) * grad
    log_ratio = (proposed - 0.5 * p.square().sum(-1)) - (value - 0.5 * momentum.square().sum(-1))
    return _metropolis(z, (value, start_grad), proposal, (proposed, grad), log_ratio, generator)


def mala_step(
    z: Tensor,
    log_density: LogDensity | None,
    step_size: Tensor | float,
    leapfrog_steps: int = 1,
    generator: torch.Generator | None = None,
    current: tuple[Tensor, Tensor] | None = None,
    evaluate: Evaluate | None = None,
) -> MCMCStep:
    """One Metropolis-adjusted Langevin transition (Roberts & Tweedie 1996): the proposal
    z' = z + (eps^2 / 2) grad log pi(z) + eps xi, xi ~ N(0, I), accepted with probability
    min(1, pi(z') q(z | z') / (pi(z) q(z' | z))), q the proposal's Gaussian. ``leapfrog_steps``: unused
    (the signature is every kernel's)."""
    evaluate, step, (value, grad) = _start(z, log_density, step_size, current, evaluate)
    noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    proposal = z.detach() + 0.5 * step.square() * grad + step * noise
    proposed, proposed_grad = evaluate(proposal)
    backward = z.detach() - proposal - 0.5 * step.square() * proposed_grad  # = step * (reverse move's noise)
    log_backward = -0.5 * (backward / step).square().sum(-1)
    log_ratio = proposed - value + log_backward + 0.5 * noise.square().sum(-1)
    return _metropolis(z, (value, grad), proposal, (proposed, proposed_grad), log_ratio, generator)


def rwmh_step(
    z: Tensor,
    log_density: LogDensity | None,
    step_size: Tensor | float,
    leapfrog_steps: int = 1,
    generator: torch.Generator | None = None,
    current: tuple[Tensor, Tensor] | None = None,
    evaluate: Evaluate | None = None,
) -> MCMCStep:
    """One random-walk Metropolis-Hastings transition: z' = z + eps xi, xi ~ N(0, I), accepted with
    probability min(1, pi(z') / pi(z)) (the proposal is symmetric). It needs no gradient; the gradient is
    still carried, as every kernel's, so that kernels are interchangeable (one backward pass per step)."""
    evaluate, step, (value, grad) = _start(z, log_density, step_size, current, evaluate)
    proposal = z.detach() + step * torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    proposed, proposed_grad = evaluate(proposal)
    return _metropolis(z, (value, grad), proposal, (proposed, proposed_grad), proposed - value, generator)


def _start(
    z: Tensor,
    log_density: LogDensity | None,
    step_size: Tensor | float,
    current: tuple[Tensor, Tensor] | None,
    evaluate: Evaluate | None,
) -> tuple[Evaluate, Tensor, tuple[Tensor, Tensor]]:
    """What every kernel begins with: the function giving (log-density, gradient), the step size broadcast
    to (..., 1) against chains z (..., K), and the log-density and gradient at z (``current`` if given)."""
    if evaluate is None:
        if log_density is None:
            raise ValueError("an MCMC kernel needs a log_density or an evaluate function")
        evaluate = functools.partial(value_and_grad, log_density)
    step = torch.as_tensor(step_size, dtype=z.dtype, device=z.device).expand(z.shape[:-1]).unsqueeze(-1)
    return _finite_codes_only(evaluate), step, current if current is not None else evaluate(z)


def _finite_codes_only(evaluate: Evaluate) -> Evaluate:
    """``evaluate`` at the chains whose codes are finite; -inf and a zero gradient at those a diverging
    trajectory took to inf or NaN (a step size too large for a sharp target), which the Metropolis step
    then rejects. Evaluated there, they would be NaN, which a torch distribution's log_prob refuses with
    an error that would end the whole run."""

    def evaluate_finite(codes: Tensor) -> tuple[Tensor, Tensor]:
        finite = torch.isfinite(codes).all(dim=-1)
        value, grad = evaluate(torch.where(finite[..., None], codes, 0.0))
        return value.masked_fill(~finite, -math.inf), grad.masked_fill(~finite[..., None], 0.0)

    return evaluate_finite


def _metropolis(
    z: Tensor,
    at_z: tuple[Tensor, Tensor],
    proposal: Tensor,
    at_proposal: tuple[Tensor, Tensor],
    log_ratio: Tensor,
    generator: torch.Generator | None,
) -> MCMCStep:
    """Each chain moves to its proposal with probability min(1, exp(log_ratio))."""
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf).clamp(max=0.0)  # a diverged proposal: rejected
    uniform = torch.rand(log_ratio.shape, generator=generator, dtype=z.dtype, device=z.device)
    accepted = torch.log(uniform) < log_ratio
    return MCMCStep(
        z=torch.where(accepted[..., None], proposal, z.detach()),
        log_density=torch.where(accepted, at_proposal[0], at_z[0]),
        grad=torch.where(accepted[..., None], at_proposal[1], at_z[1]),
        accept_prob=log_ratio.exp(),
        accepted=accepted,
    )


Kernel = Callable[..., MCMCStep]

#: the kernels by name, each with the acceptance rate its step size is best adapted toward (HMC: Neal 2011's
#: 0.65; MALA: 0.574 and random walk: 0.234, the optimal scalings of Roberts & Rosenthal 2001)
KERNELS: dict[str, tuple[Kernel, float]] = {
    "hmc": (hmc_step, 0.65),
    "mala": (mala_step, 0.574),
    "rwmh": (rwmh_step, 0.234),
}


def adapt_step_size(step_size: Tensor, accept_prob: Tensor, target: float, rate: float = 0.5) -> Tensor:
    """Multiplicative update: a larger step where the chains accept more than ``target``, a smaller one
    where they accept less. A step size is shared by many chains (all of them for a scalar; the chains of
    one image for shape (N,) against chains (n, N)) and follows their mean acceptance: a step size that
    followed its own chain's history would couple it to that chain's state and bias what the chain
    samples (measured: AIS off by 0.3 nats)."""
    shared = accept_prob.mean(dim=tuple(range(accept_prob.dim() - step_size.dim())))
    return step_size * torch.exp(rate * (shared - target))


def run_chains(
    z: Tensor,
    log_density: LogDensity,
    num_steps: int,
    step_size: Tensor | float = 0.1,
    leapfrog_steps: int = 5,
    target_accept: float | None = 0.65,
    generator: torch.Generator | None = None,
    kernel: Kernel = hmc_step,
) -> tuple[Tensor, Tensor, Tensor]:
    """``num_steps`` transitions of ``kernel`` (HMC by default) from ``z``; with a ``target_accept``, the
    step size adapts toward it after every transition (adapt while burning in; pass None for a fixed, exact
    kernel). The step size is shared by every chain (a scalar) or has a shape that the chains' leading
    shape ends with.
    Returns (final states, final step sizes, mean acceptance probability per chain)."""
    step = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
    accept_sum = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
    current = None
    for _ in range(num_steps):
        out = kernel(z, log_density, step, leapfrog_steps, generator, current)
        z, accept_sum, current = out.z, accept_sum + out.accept_prob, (out.log_density, out.grad)
        if target_accept is not None:
            step = adapt_step_size(step, out.accept_prob, target_accept)
    return z, step, accept_sum / max(num_steps, 1)


def ais_log_likelihood(
    posterior: Distribution,
    log_joint: LogDensity,
    num_chains: int,
    num_temperatures: int,
    leapfrog_steps: int = 5,
    step_size: float = 0.1,
    target_accept: float = 0.65,
    kernel: Kernel = hmc_step,
) -> tuple[Tensor, Tensor]:
    """Annealed importance sampling of log p(x) per image, from q(z|x) to p(x, z) along the geometric path
    pi_b(z) ~ q(z|x)^(1-b) p(x, z)^b, one transition of ``kernel`` (HMC by default) per temperature
    b_1 < ... < b_T = 1:

        log w = sum_t (b_t - b_(t-1)) (log p(x, z_(t-1)) - log q(z_(t-1) | x)),  p(x) = E[w],

    a stochastic lower bound of log p(x) in expectation, tighter than the IWAE bound with as many decoder
    passes when q is poor. ``posterior`` has batch shape (N,); ``log_joint`` maps (n, N, K) to (n, N).
    Returns (log p(x) estimates (N,), mean acceptance probability)."""
    if num_chains < 1 or num_temperatures < 1:
        raise ValueError(f"num_chains and num_temperatures must be >= 1: {num_chains}, {num_temperatures}")
    z = posterior.sample((num_chains,))
    betas = torch.linspace(0.0, 1.0, num_temperatures + 1).tolist()
    log_weights = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
    step = torch.full(z.shape[1:-1], step_size, dtype=z.dtype, device=z.device)  # one per image
    accept_sum = torch.zeros((), dtype=z.dtype, device=z.device)
    # log p(x, z) and its gradient at the chains' states, carried from one temperature to the next: the
    # weight's increment and the transition's start need no decoder pass of their own (log q's terms are
    # cheap), and a rejected proposal keeps the previous ones
    joint, joint_grad = value_and_grad(log_joint, z)
    for previous, beta in itertools.pairwise(betas):
        log_q, log_q_grad = value_and_grad(posterior.log_prob, z)
        log_weights += (beta - previous) * (joint - log_q)
        at_proposal: list[tuple[Tensor, Tensor]] = []

        def annealed(codes: Tensor, beta: float = beta, kept: list = at_proposal) -> tuple[Tensor, Tensor]:
            """pi_beta's log-density and gradient from its terms; the last proposal's joint terms kept."""
            terms = value_and_grad(log_joint, codes)
            q, q_grad = value_and_grad(posterior.log_prob, codes)
            kept[:] = [terms]
            return (1 - beta) * q + beta * terms[0], (1 - beta) * q_grad + beta * terms[1]

        start = ((1 - beta) * log_q + beta * joint, (1 - beta) * log_q_grad + beta * joint_grad)
        out = kernel(z, None, step, leapfrog_steps, current=start, evaluate=annealed)
        (proposed, proposed_grad), moved = at_proposal[0], out.accepted
        joint = torch.where(moved, proposed, joint)
        joint_grad = torch.where(moved[..., None], proposed_grad, joint_grad)
        z, accept_sum = out.z, accept_sum + out.accept_prob.mean()
        step = adapt_step_size(step, out.accept_prob, target_accept)
    log_px = torch.logsumexp(log_weights, dim=0) - math.log(num_chains)
    return log_px, accept_sum / num_temperatures
