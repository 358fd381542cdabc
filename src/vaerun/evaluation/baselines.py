"""Baselines and diagnostics computed from codes and images: PCA at the model's latent size, and the
number of active latent units. Pure functions on tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PCA:
    """x ~ mean + (x - mean) V V^T with the top-k principal directions V (D, k) of the training data."""

    mean: Tensor  # (D,)
    components: Tensor  # (D, k), orthonormal columns

    def encode(self, x: Tensor) -> Tensor:
        return (x.flatten(1) - self.mean) @ self.components

    def decode(self, codes: Tensor, shape: tuple[int, ...]) -> Tensor:
        return (codes @ self.components.T + self.mean).reshape(-1, *shape)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x), tuple(x.shape[1:]))


def fit_pca(x: Tensor, k: int) -> PCA:
    """Exact PCA from one symmetric eigendecomposition of the D x D covariance (in float64: D is small
    for images like these, and the covariance of 50k images loses digits in float32)."""
    data = x.flatten(1).double()
    mean = data.mean(dim=0)
    centred = data - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    k = min(k, data.shape[1])
    components = vectors[:, -k:].flip(1)
    return PCA(mean.to(x.dtype), components.to(x.dtype))


def active_units(posterior_means: Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions whose E_q[z] varies over the data (Burda et al.): Var_x E_q[z_d] > threshold."""
    return int((posterior_means.var(dim=0) > threshold).sum())
