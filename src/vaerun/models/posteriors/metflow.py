"""MetFlow (Thin et al. 2020): Metropolis-Hastings steps whose proposals are learned invertible maps, as the
VAE's approximate posterior.

Step k draws innovation noise u_k ~ N(0, I) and a direction v_k = +1 or -1 (probability 1/2 each) and
proposes y = T_k^v(z), the map T_k(.; u_k, h) or its inverse: two affine coupling layers (RealNVP, Dinh et
al. 2017) conditioned on u_k and on the context h the encoder outputs for the image. (z, v) -> (T^v z, -v)
is an involution, so accepting with probability

    alpha_k^v(z) = min(1, pi(T^v z) |det dT^v/dz| / pi(z)),   pi(z) = p(x, z),

leaves p(z|x) invariant whatever the maps have learned. Given the noises and directions, the chain's output
has an exact density: step k either stayed at y (probability 1 - alpha at y) or moved there from
x = T_k^{-v}(y), so

    q_k(y) = (1 - alpha_k^v(y)) q_{k-1}(y) + alpha_k^v(x) q_{k-1}(x) |det dT^{-v}/dy|,

and q_K, the density of the last step's output z_K, is a sum over the 2^steps accept/reject paths back
to q0, the encoder's Gaussian; ``log_density`` evaluates it breadth first, with 2^(steps+1) - 2
evaluations of pi. E[log p(x, z_K) - log q_K(z_K | u, v, x)] is then an ELBO on the space extended by
(u, v), whose own densities cancel, and the importance weights p(x, z_K) / q_K(z_K | u, v, x) give the
IWAE bound.

Training takes that ELBO's expectation over the decisions exactly: from each draw of (z0, u, v) the chain
is followed down all 2^steps paths (``paths``), and the ELBO is their sum weighted by each path's probability,
a product of alphas and (1 - alpha)s. Every term is then reparameterised, so the gradient reaches the
maps, the encoder and the decoder through the acceptance probabilities too, with no score-function noise
(sampling one path and adding the decisions' score-function term is unbiased as well, but its variance
stalled training here). The cost is that of 2^steps densities: about 2^(2 steps + 1) evaluations of pi
per image. In shapes, as elsewhere in vaerun, K is the latent size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaerun.core.checks import check_values


def log1mexp(log_p: Tensor) -> Tensor:
    """log(1 - p) from log p <= 0, accurate near both ends (Maechler 2012); -inf at p = 1 with a finite
    gradient, so a branch that is never taken does not poison the backward pass."""
    log_p = log_p.clamp(max=-1e-30)
    return torch.where(log_p > -0.6931, torch.log(-torch.expm1(log_p)), torch.log1p(-torch.exp(log_p)))


class AffineCoupling(nn.Module):
    """y = z * exp(s) + t on the coordinates outside ``mask``, z elsewhere; (s, t) from the masked z and
    the conditions (noise and context). s = tanh(.) keeps each scale in [1/e, e]. log|det dy/dz| = sum s.
    The last layer starts at zero: the identity, whose proposals are always accepted."""

    def __init__(self, mask: Tensor, conditions: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        latent_dim = len(mask)
        self.net = nn.Sequential(
            nn.Linear(latent_dim + conditions, hidden),
            nn.ELU(),
            nn.Linear(hidden, hidden),
            nn.ELU(),
            nn.Linear(hidden, 2 * latent_dim),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _log_scale_and_shift(self, kept: Tensor, conditions: Tensor) -> tuple[Tensor, Tensor]:
        raw_scale, shift = self.net(torch.cat([kept, conditions], dim=-1)).chunk(2, dim=-1)
        free = 1 - self.mask
        return torch.tanh(raw_scale) * free, shift * free

    def forward(self, z: Tensor, conditions: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._log_scale_and_shift(z * self.mask, conditions)
        return z * torch.exp(log_scale) + shift, log_scale.sum(-1)

    def inverse(self, y: Tensor, conditions: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._log_scale_and_shift(y * self.mask, conditions)  # y = z on the mask
        return (y - shift) * torch.exp(-log_scale), -log_scale.sum(-1)


class CouplingMap(nn.Module):
    """Two coupling layers with complementary masks, so that every coordinate moves: an invertible map
    with a closed-form inverse and log-determinant."""

    def __init__(self, latent_dim: int, conditions: int, hidden: int) -> None:
        super().__init__()
        first_half = (torch.arange(latent_dim) < (latent_dim + 1) // 2).float()
        self.layers = nn.ModuleList(
            AffineCoupling(mask, conditions, hidden) for mask in (first_half, 1 - first_half)
        )

    def forward(self, z: Tensor, conditions: Tensor) -> tuple[Tensor, Tensor]:
        log_det = z.new_zeros(z.shape[:-1])
        for layer in self.layers:
            z, layer_log_det = layer(z, conditions)
            log_det = log_det + layer_log_det
        return z, log_det

    def inverse(self, y: Tensor, conditions: Tensor) -> tuple[Tensor, Tensor]:
        log_det = y.new_zeros(y.shape[:-1])
        for layer in reversed(self.layers):
            y, layer_log_det = layer.inverse(y, conditions)
            log_det = log_det + layer_log_det
        return y, log_det


@dataclass
class Innovations:
    """The chain's auxiliary draws: the noise (steps, *batch, K) each map reads and each step's direction
    (steps, *batch), True for T and False for its inverse."""

    noise: Tensor
    forward: Tensor

    @classmethod
    def draw(cls, steps: int, like: Tensor) -> Innovations:
        """Fresh draws for ``steps`` steps from points ``like`` (*batch, K)."""
        noise = like.new_empty((steps, *like.shape)).normal_()
        return cls(noise, like.new_empty((steps, *like.shape[:-1])).uniform_() < 0.5)


@dataclass
class ChainDraw:
    """One run of the chain: its output z (*batch, K), log pi(z), and each step's decision (steps, *batch)."""

    z: Tensor
    log_target: Tensor
    accepted: Tensor


@dataclass
class ChainPaths:
    """Every accept/reject path of the chain from one z0: the endpoints z (2^steps, *batch, K), their log pi,
    each path's log-probability (they sum to 1 over the first dimension), its number of accepted moves,
    and log q_K at its endpoint."""

    z: Tensor
    log_target: Tensor
    log_prob: Tensor
    accepted: Tensor
    log_q: Tensor


class MetFlowChain(nn.Module):
    """K MetFlow steps, each with its own coupling map conditioned on the step's noise and the context."""

    def __init__(self, latent_dim: int, steps: int, hidden: int) -> None:
        super().__init__()
        self.maps = nn.ModuleList(CouplingMap(latent_dim, latent_dim + hidden, hidden) for _ in range(steps))

    @property
    def steps(self) -> int:
        return len(self.maps)

    def forward(self, z0: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """The deterministic part of the posterior, for pictures: none (the chain's moves are random), so an
        image's code is q0's mean."""
        return z0, z0.new_zeros(z0.shape[:-1])

    def move(
        self, step: int, z: Tensor, noise: Tensor, forward: Tensor, context: Tensor
    ) -> tuple[Tensor, Tensor]:
        """T_step^v(z) and log|det| of it, v = +1 where ``forward`` is True; the noise and directions
        broadcast against z (*, *batch, K), the context (N, H) is each image's."""
        batch = torch.broadcast_shapes(z.shape[:-1], noise.shape[:-1], forward.shape)
        conditions = torch.cat([noise.expand(*batch, -1), context.expand(*batch, context.shape[-1])], dim=-1)
        z = z.expand(*batch, z.shape[-1])
        # both directions, then each image's own: the maps are small beside the decoder
        ahead, ahead_log_det = self.maps[step](z, conditions)
        back, back_log_det = self.maps[step].inverse(z, conditions)
        forward = forward.expand(batch)
        return torch.where(forward[..., None], ahead, back), torch.where(forward, ahead_log_det, back_log_det)

    def run(
        self, z0: Tensor, context: Tensor, log_target: Callable[[Tensor], Tensor], innovations: Innovations
    ) -> ChainDraw:
        """The chain from z0 (*batch, K): propose, accept with probability alpha, once per step."""
        z, log_pi = z0, log_target(z0)
        accepted = []
        for step in range(self.steps):
            noise, forward = innovations.noise[step], innovations.forward[step]
            proposal, log_det = self.move(step, z, noise, forward, context)
            log_pi_proposal = log_target(proposal)
            log_alpha = (log_pi_proposal + log_det - log_pi).clamp(max=0.0)
            accept = torch.rand_like(log_alpha).log() < log_alpha
            z = torch.where(accept[..., None], proposal, z)
            log_pi = torch.where(accept, log_pi_proposal, log_pi)
            accepted.append(accept)
        return ChainDraw(z, log_pi, torch.stack(accepted))

    def paths(
        self, z0: Tensor, context: Tensor, log_target: Callable[[Tensor], Tensor], innovations: Innovations
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Every path of the chain from z0 (*batch, K), breadth first: (endpoints (2^steps, *batch, K), their
        log pi, the paths' log-probabilities, their numbers of accepted moves)."""
        points, log_pi = z0[None], log_target(z0)[None]
        log_prob, accepted = torch.zeros_like(log_pi), torch.zeros_like(log_pi)
        for step in range(self.steps):
            noise, forward = innovations.noise[step], innovations.forward[step]
            proposal, log_det = self.move(step, points, noise, forward, context)
            log_pi_proposal = log_target(proposal)
            log_alpha = (log_pi_proposal + log_det - log_pi).clamp(max=0.0)
            points = torch.cat([points.expand_as(proposal), proposal])
            log_pi = torch.cat([log_pi, log_pi_proposal])
            log_prob = torch.cat([log_prob + log1mexp(log_alpha), log_prob + log_alpha])
            accepted = torch.cat([accepted, accepted + 1])
        return points, log_pi, log_prob, accepted

    def log_density(
        self,
        y: Tensor,
        log_target_y: Tensor,
        context: Tensor,
        log_target: Callable[[Tensor], Tensor],
        log_q0: Callable[[Tensor], Tensor],
        innovations: Innovations,
    ) -> Tensor:
        """log q_K(y | u, v) at points y (*batch, K) whose log pi is ``log_target_y``: the recursion over
        accept/reject paths in the module's docstring, one level per step from the last back to q0, each
        level's evaluations of pi made in one call."""
        points, log_pi, log_weight = y[None], log_target_y[None], torch.zeros_like(log_target_y)[None]
        for step in reversed(range(self.steps)):
            noise, forward = innovations.noise[step], innovations.forward[step]
            proposal, proposal_log_det = self.move(step, points, noise, forward, context)  # T^v(y)
            origin, origin_log_det = self.move(step, points, noise, ~forward, context)  # x = T^{-v}(y)
            log_pi_proposal, log_pi_origin = log_target(torch.cat([proposal, origin])).chunk(2)
            stay = (log_pi_proposal + proposal_log_det - log_pi).clamp(max=0.0)  # alpha(y): rejected at y
            # alpha(x) = min(1, pi(y) |det dT^v/dx| / pi(x)), and |det dT^v/dx| = 1 / |det dT^{-v}/dy|
            came = (log_pi - origin_log_det - log_pi_origin).clamp(max=0.0)
            points = torch.cat([points.expand_as(origin), origin])
            log_pi = torch.cat([log_pi.expand_as(log_pi_origin), log_pi_origin])
            log_weight = torch.cat([log_weight + log1mexp(stay), log_weight + came + origin_log_det])
        return torch.logsumexp(log_weight + log_q0(points), dim=0)


class MetFlowPosterior:
    """q_K(z|x): q0 (``base``, batch shape (N,)) moved by the chain toward ``log_target``, log p(x, z) of
    points (*, N, K); draws with their exact log-densities given the innovations drawn with them."""

    def __init__(
        self, base: Distribution, chain: MetFlowChain, context: Tensor, log_target: Callable[[Tensor], Tensor]
    ) -> None:
        self.base, self.chain, self.context = base, chain, context
        self.log_target = log_target

    def _start(self, sample_shape: torch.Size | tuple[int, ...]) -> tuple[Tensor, Innovations]:
        """Reparameterised draws z0 of q0 and the chain's innovations for them."""
        z0 = self.base.rsample(sample_shape)
        return z0, Innovations.draw(self.chain.steps, z0)

    def _log_q(self, z: Tensor, log_target_z: Tensor, innovations: Innovations) -> Tensor:
        return self.chain.log_density(
            z, log_target_z, self.context, self.log_target, self.base.log_prob, innovations
        )

    def draw(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> tuple[ChainDraw, Tensor]:
        """A run of the chain per draw, and log q_K of its output: (the draw, (*sample_shape, N))."""
        z0, innovations = self._start(sample_shape)
        chain = self.chain.run(z0, self.context, self.log_target, innovations)
        return chain, self._log_q(chain.z, chain.log_target, innovations)

    def paths(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> ChainPaths:
        """Reparameterised draws of z0 and the innovations, and every path of the chain from each, with
        log q_K at every endpoint: what the ELBO's exact expectation over the decisions needs."""
        z0, innovations = self._start(sample_shape)
        z, log_pi, log_prob, accepted = self.chain.paths(z0, self.context, self.log_target, innovations)
        return ChainPaths(z, log_pi, log_prob, accepted, self._log_q(z, log_pi, innovations))

    def rsample_and_log_prob(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> tuple[Tensor, Tensor]:
        """Draws z (*sample_shape, N, K) and log q_K(z | u, v, x) (*sample_shape, N)."""
        chain, log_q = self.draw(sample_shape)
        return chain.z, log_q

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        """Draws of the chain; its density is not needed, so it is not computed."""
        with torch.no_grad():
            z0, innovations = self._start(sample_shape)
            return self.chain.run(z0, self.context, self.log_target, innovations).z

    def annealing_problem(
        self, log_density: Callable[[Tensor], Tensor]
    ) -> tuple[Distribution, Callable[[Tensor], Tensor]]:
        """Where AIS starts and what it anneals to: q0 and the target itself (the chain's q_K has no
        density without its innovations; any start gives a valid AIS estimate)."""
        return self.base, log_density


class MetFlow:
    """``steps`` MetFlow steps on q0's sample, their maps two coupling layers of ``hidden`` units reading
    the step's noise and a context of ``hidden`` numbers the encoder outputs per image."""

    is_flow = True
    is_chain = True
    uses_target_gradient = False

    def __init__(self, steps: int = 2, hidden: int = 64) -> None:
        check_values("posterior", {"steps": steps, "hidden": hidden})
        self.steps, self.hidden = int(steps), int(hidden)

    def context_features(self, latent_dim: int) -> int:
        return self.hidden

    def build(self, latent_dim: int) -> nn.Module:
        return MetFlowChain(latent_dim, self.steps, self.hidden)

    def distribution(
        self, base: Distribution, module: nn.Module, context: Tensor, log_target: Callable[[Tensor], Tensor]
    ) -> MetFlowPosterior:
        return MetFlowPosterior(base, module, context, log_target)
