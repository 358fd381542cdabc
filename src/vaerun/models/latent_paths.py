"""Paths through latent space between codes, for the interpolation pictures."""

from __future__ import annotations

import torch
from torch import Tensor


def lerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Straight lines between codes (N, K) at fractions t (T,): (T, N, K)."""
    t = t.reshape(-1, 1, 1).to(z0)
    return (1 - t) * z0 + t * z1


def slerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Great-circle paths between codes (White 2016): under a Gaussian prior the straight line passes
    through the low-norm centre, where the prior puts little mass; the arc keeps typical norms."""
    t = t.reshape(-1, 1, 1).to(z0)
    cos = torch.nn.functional.cosine_similarity(z0, z1, dim=-1, eps=1e-8).clamp(-1 + 1e-7, 1 - 1e-7)
    omega = torch.arccos(cos)[None, :, None]
    sin = torch.sin(omega)
    near = sin.abs() < 1e-4  # (anti)parallel codes: fall back to the straight line
    arc = (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.where(near, 1.0, sin)
    return torch.where(near, lerp(z0, z1, t), arc)
