"""Amortised normalising flows on q0: planar flows (Rezende & Mohamed 2015) and the inverse autoregressive
flow (Kingma et al. 2016), their parameters predicted by the encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaerun.core.checks import check_values
from vaerun.models.posteriors.family import TransformFamily


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
        check_values("posterior", {"flows": flows})
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
        check_values("posterior", {"flows": flows, "hidden": hidden})
        self.flows, self.hidden = int(flows), int(hidden)

    def context_features(self, latent_dim: int) -> int:
        return self.hidden

    def build(self, latent_dim: int) -> nn.Module:
        return InverseAutoregressiveFlow(latent_dim, self.flows, self.hidden)
