"""The VAE's approximate posterior q(z|x): a diagonal Gaussian q0, optionally pushed through normalising
flows whose parameters the encoder predicts along with q0's (amortised).

A posterior family (``configs/posterior/*.yaml``) is a small recipe: ``context_features(latent_dim)`` says
how many numbers the encoder outputs beyond q0's mean and log-variance, and ``build(latent_dim)`` makes the
flow, an ``nn.Module`` mapping (z0, context) to (z, log|det dz/dz0|). The sample and its density:

    z0 ~ q0 = N(mu, diag sigma^2),   z = T(z0),   log q(z|x) = log q0(z0|x) - log|det dT/dz0|,

exact for every sample drawn, so the IWAE bound, the Monte Carlo KL and AIS (run on z0, the target pulled
back through T) all use the flow's q. Planar flows are not invertible in closed form: q's density is known
at its own samples only, which is all those estimators need. MetFlow (vaerun.metflow) is the other kind of
family: a Markov chain from q0 whose draws need the target p(x, z) itself (``is_chain``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from vaerun.config_checks import check_posterior


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
    #: a Markov chain (vaerun.metflow) rather than a map: its draws need the target p(x, z)
    is_chain = False
    #: a map along the gradient of log p(x, z) (vaerun.hamiltonian)
    uses_target_gradient = False

    def distribution(
        self, base: Distribution, module: nn.Module, context: Tensor, log_target: Callable[[Tensor], Tensor]
    ) -> FlowPosterior:
        """q(z|x) for one batch: q0, the map, the encoder's context; the target is not needed."""
        return FlowPosterior(base, module, context)


class Identity(nn.Module):
    """No flow: q is the diagonal Gaussian itself."""

    def forward(self, z0: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        return z0, z0.new_zeros(z0.shape[:-1])


class Gaussian(TransformFamily):
    """q(z|x) = N(mu(x), diag sigma^2(x)): the VAE of Kingma & Welling."""

    is_flow = False

    def context_features(self, latent_dim: int) -> int:
        return 0

    def build(self, latent_dim: int) -> nn.Module:
        return Identity()


def planar_map(z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """One planar flow f(z) = z + u_hat tanh(w.z + b) (Rezende & Mohamed 2015) on z (..., N, K) with
    per-image parameters u, w (N, K), b (N,): (f(z), log|1 + u_hat . psi(z)|), psi = tanh'(w.z + b) w.
    u_hat = u + (m(w.u) - w.u) w / |w|^2, m(a) = -1 + softplus(a), keeps w.u_hat >= -1: f invertible."""
    wu = (w * u).sum(-1, keepdim=True)
    u_hat = u + (F.softplus(wu) - 1 - wu) * w / w.square().sum(-1, keepdim=True).clamp_min(1e-12)
    activation = (z * w).sum(-1) + b
    tanh = torch.tanh(activation)
    slope = 1 - tanh.square()  # tanh'
    log_det = torch.log((1 + slope * (w * u_hat).sum(-1)).abs().clamp_min(1e-12))
    return z + u_hat * tanh[..., None], log_det


class PlanarFlow(nn.Module):
    """``flows`` planar maps, each with its (u, w, b) read from the encoder's context for the image."""

    def __init__(self, latent_dim: int, flows: int) -> None:
        super().__init__()
        self.latent_dim, self.flows = latent_dim, flows

    def forward(self, z0: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        k = self.latent_dim
        params = context.unflatten(-1, (self.flows, 2 * k + 1))  # (N, flows, 2K + 1)
        z, log_det = z0, z0.new_zeros(z0.shape[:-1])
        for i in range(self.flows):
            u, w, b = params[:, i, :k], params[:, i, k : 2 * k], params[:, i, 2 * k]
            z, step_log_det = planar_map(z, u, w, b)
            log_det = log_det + step_log_det
        return z, log_det


class Planar(TransformFamily):
    """K planar flows on q0's sample, amortised: the encoder outputs each flow's u, w, b per image."""

    def __init__(self, flows: int = 8) -> None:
        check_posterior({"flows": flows})
        self.flows = int(flows)

    def context_features(self, latent_dim: int) -> int:
        return self.flows * (2 * latent_dim + 1)

    def build(self, latent_dim: int) -> nn.Module:
        return PlanarFlow(latent_dim, self.flows)


def made_masks(latent_dim: int, hidden: int) -> tuple[Tensor, Tensor, Tensor]:
    """MADE's masks (Germain et al. 2015) for inputs in order 1..K, two hidden layers: (hidden x K,
    hidden x hidden, K x hidden). Hidden unit j has degree j mod K (0 to K-1) and sees the units of degree
    <= its own; output i sees the hidden units of degree < i. So output i depends on inputs 1..i-1 only
    (and on the context, which reaches every output through the degree-0 units)."""
    inputs = torch.arange(1, latent_dim + 1)
    degrees = torch.arange(hidden) % latent_dim
    return (
        (degrees[:, None] >= inputs[None, :]).float(),
        (degrees[:, None] >= degrees[None, :]).float(),
        (inputs[:, None] > degrees[None, :]).float(),
    )


class MaskedLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, mask: Tensor) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class AutoregressiveStep(nn.Module):
    """One IAF step (Kingma et al. 2016): [m, s] = MADE(z, h); sigma = sigmoid(s);
    z' = sigma * z + (1 - sigma) * m; log|det| = sum log sigma (the Jacobian is triangular)."""

    #: added to s at the start so that sigma ~ 0.88: each step begins near the identity (the paper's
    #: forget-gate bias)
    gate_bias = 2.0

    def __init__(self, latent_dim: int, hidden: int) -> None:
        super().__init__()
        to_hidden, hidden_to_hidden, to_output = made_masks(latent_dim, hidden)
        self.inputs = MaskedLinear(latent_dim, hidden, to_hidden)
        self.context = nn.Linear(hidden, hidden)  # the context h enters unmasked
        self.hidden = MaskedLinear(hidden, hidden, hidden_to_hidden)
        self.shift = MaskedLinear(hidden, latent_dim, to_output)
        self.gate = MaskedLinear(hidden, latent_dim, to_output)

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        h = F.elu(self.inputs(z) + self.context(context))
        h = F.elu(self.hidden(h))
        sigma = torch.sigmoid(self.gate(h) + self.gate_bias)
        return sigma * z + (1 - sigma) * self.shift(h), torch.log(sigma).sum(-1)


class InverseAutoregressiveFlow(nn.Module):
    """``flows`` IAF steps, the order of the latent dimensions reversed between steps."""

    def __init__(self, latent_dim: int, flows: int, hidden: int) -> None:
        super().__init__()
        self.steps = nn.ModuleList(AutoregressiveStep(latent_dim, hidden) for _ in range(flows))

    def forward(self, z0: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        z, log_det = z0, z0.new_zeros(z0.shape[:-1])
        for i, step in enumerate(self.steps):
            z, step_log_det = step(z, context)
            log_det = log_det + step_log_det
            if i + 1 < len(self.steps):
                z = z.flip(-1)  # a permutation: |det| = 1
        return z, log_det


class IAF(TransformFamily):
    """Inverse autoregressive flow with MADE layers of ``hidden`` units (Kingma et al. 2016); the encoder
    outputs a context h of ``hidden`` numbers per image that every step reads."""

    def __init__(self, flows: int = 4, hidden: int = 64) -> None:
        check_posterior({"flows": flows, "hidden": hidden})
        self.flows, self.hidden = int(flows), int(hidden)

    def context_features(self, latent_dim: int) -> int:
        return self.hidden

    def build(self, latent_dim: int) -> nn.Module:
        return InverseAutoregressiveFlow(latent_dim, self.flows, self.hidden)
