"""The VAE's approximate posterior q(z|x): a diagonal Gaussian q0, optionally pushed through normalising
flows whose parameters the encoder predicts along with q0's (amortised).

A posterior family (``configs/posterior/*.yaml``) is a small recipe: ``context_features(latent_dim)`` says
how many numbers the encoder outputs beyond q0's mean and log-variance, and ``build(latent_dim)`` makes the
flow, an ``nn.Module`` mapping (z0, context) to (z, log|det dz/dz0|). The sample and its density:

    z0 ~ q0 = N(mu, diag sigma^2),   z = T(z0),   log q(z|x) = log q0(z0|x) - log|det dT/dz0|,

exact for every sample drawn, so the IWAE bound, the Monte Carlo KL and AIS (run on z0, the target pulled
back through T) all use the flow's q. Planar flows are not invertible in closed form: q's density is known
at its own samples only, which is all those estimators need. MetFlow
(vaerun.models.posteriors.metflow) is the other kind of family: a Markov chain from q0 whose draws need
the target p(x, z) itself (``is_chain``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.distributions import Distribution


class PosteriorFamily(Protocol):
    is_flow: bool
    is_chain: bool
    #: its draws follow the gradient of log p(x, z) (the Hamiltonian VAE's), at evaluation too
    uses_target_gradient: bool

    def context_features(self, latent_dim: int) -> int: ...
    def build(self, latent_dim: int) -> nn.Module: ...
    def distribution(
        self, base: Distribution, module: nn.Module, context: Tensor, log_target: Callable[[Tensor], Tensor]
    ) -> Any: ...


class FlowPosterior:
    """q(z|x) = T # q0: draws with their exact log-densities; ``base`` is q0, batch shape (N,)."""

    def __init__(self, base: Distribution, flow: nn.Module, context: Tensor) -> None:
        self.base, self.flow, self.context = base, flow, context

    def transform(self, z0: Tensor) -> tuple[Tensor, Tensor]:
        """(z, log|det dz/dz0|) for base draws z0 (..., N, K)."""
        return self.flow(z0, self.context)

    def rsample_and_log_prob(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> tuple[Tensor, Tensor]:
        """Reparameterised draws z (*sample_shape, N, K) and log q(z|x) (*sample_shape, N)."""
        z0 = self.base.rsample(sample_shape)
        z, log_det = self.transform(z0)
        return z, self.base.log_prob(z0) - log_det

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        with torch.no_grad():
            return self.rsample_and_log_prob(sample_shape)[0]

    def pull_back(self, log_density: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        """z0 -> log_density(T(z0)) + log|det dT/dz0|: the density on z0 whose image under T is the given
        one; its normaliser is the same (so AIS from q0 to it estimates the same log p(x))."""

        def pulled(z0: Tensor) -> Tensor:
            z, log_det = self.transform(z0)
            return log_density(z) + log_det

        return pulled

    def annealing_problem(
        self, log_density: Callable[[Tensor], Tensor]
    ) -> tuple[Distribution, Callable[[Tensor], Tensor]]:
        """Where AIS starts and what it anneals to: q0, and the target pulled back through the flow, so
        that the chains start at q itself."""
        return self.base, self.pull_back(log_density)


class TransformFamily:
    """A posterior family whose q is q0 pushed through a deterministic map (``build``)."""

    is_flow = True
    #: a Markov chain (vaerun.models.posteriors.metflow) rather than a map: its draws need the target p(x, z)
    is_chain = False
    #: a map along the gradient of log p(x, z) (vaerun.models.posteriors.hamiltonian)
    uses_target_gradient = False

    def distribution(
        self, base: Distribution, module: nn.Module, context: Tensor, log_target: Callable[[Tensor], Tensor]
    ) -> FlowPosterior:
        """q(z|x) for one batch: q0, the map, the encoder's context; the target is not needed."""
        return FlowPosterior(base, module, context)
