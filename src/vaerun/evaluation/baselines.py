"""Baselines and diagnostics computed from codes and images: PCA at the model's latent size, and the
number of active latent units. Pure functions on tensors.

PCA is fitted in time and memory that grow with the data, whatever its size: the training images are read
in chunks of rows (never all as floats at once), so memory stays O(chunk x D + D x k) beyond the images.
Where D is small (grey 28 x 28: 784) the D x D covariance is formed and decomposed exactly, O(N D^2 + D^3);
where it is large (colour 64 x 64: 12,288, whose D^3 eigendecomposition alone would take minutes), the
top-k subspace is found by randomized subspace iteration on the covariance (Halko, Martinsson & Tropp
2011, Algorithm 4.4), each pass O(N D l) for l = 2k directions, never forming the covariance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

#: the exact covariance is used up to this many dimensions (a 2048 x 2048 float64 eigh: about a second)
EXACT_MAX_DIMS = 2048
#: rows of the data made float and centred at a time
CHUNK_ROWS = 4096


@dataclass(frozen=True)
class PCA:
    """x ~ mean + (x - mean) V V^T with the top-k principal directions V (D, k) of the training data."""

    mean: Tensor  # (D,)
    components: Tensor  # (D, k), orthonormal columns

    def encode(self, x: Tensor) -> Tensor:
        return (x.flatten(1) - self.mean) @ self.components.to(x.dtype)

    def decode(self, codes: Tensor, shape: tuple[int, ...]) -> Tensor:
        return (codes @ self.components.to(codes.dtype).T + self.mean).reshape(-1, *shape)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x), tuple(x.shape[1:]))


Rows = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class _Data:
    """The rows of ``x`` as the model sees them (``transform``: uint8 images to floats, on the device),
    made a chunk at a time."""

    x: Tensor
    transform: Rows | None = None

    def chunks(self, mean: Tensor | None = None, dtype: torch.dtype = torch.float64) -> Iterator[Tensor]:
        """Flattened, as ``dtype``, centred on ``mean`` where given."""
        for start in range(0, len(self.x), CHUNK_ROWS):
            rows = self.x[start : start + CHUNK_ROWS]
            rows = (self.transform(rows) if self.transform is not None else rows).flatten(1).to(dtype)
            yield rows if mean is None else rows - mean.to(dtype)

    def mean(self) -> Tensor:
        total = sum(rows.sum(dim=0, dtype=torch.float64) for rows in self.chunks(dtype=torch.float32))
        return total / len(self.x)


def _covariance_times(data: _Data, mean: Tensor, directions: Tensor) -> Tensor:
    """(X - mean)^T (X - mean) @ directions (D, l), one pass over the rows, in float32 matmuls summed in
    float64. The rows are not centred themselves (a chunk-sized subtraction per pass): their projections
    are, (X - 1 mean^T) V = X V - 1 (mean^T V), and X^T of those less mean times their sum."""
    directions32, mean32 = directions.float(), mean.float()
    shift = mean32 @ directions32
    total = torch.zeros_like(directions, dtype=torch.float64)
    for rows in data.chunks(dtype=torch.float32):
        projections = rows @ directions32 - shift
        total += (rows.T @ projections - torch.outer(mean32, projections.sum(dim=0))).double()
    return total


def _exact_components(data: _Data, mean: Tensor, k: int) -> Tensor:
    """The top-k eigenvectors of the D x D covariance, accumulated chunk by chunk in float64."""
    dims = mean.numel()
    covariance = torch.zeros(dims, dims, dtype=torch.float64, device=mean.device)
    for rows in data.chunks(mean):
        covariance += rows.T @ rows
    _, vectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
    return vectors[:, -k:].flip(1)


def _randomized_components(
    data: _Data, mean: Tensor, k: int, oversampling: int, power_iterations: int, seed: int
) -> Tensor:
    """The top-k principal directions by randomized subspace iteration on the covariance: a random
    D x l basis, multiplied by the covariance and re-orthonormalised ``power_iterations`` times (each a
    pass over the data), then the exact top-k of the covariance within that subspace (Rayleigh-Ritz)."""
    dims = mean.numel()
    width = min(dims, k + oversampling)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    basis = torch.randn(dims, width, generator=generator, dtype=torch.float64).to(mean.device)
    for _ in range(power_iterations):
        basis, _ = torch.linalg.qr(_covariance_times(data, mean, basis))
    projected = basis.T @ _covariance_times(data, mean, basis)  # l x l: the covariance within the subspace
    _, vectors = torch.linalg.eigh((projected + projected.T) / 2)
    return basis @ vectors[:, -k:].flip(1)


def fit_pca(
    x: Tensor,
    k: int,
    transform: Rows | None = None,
    exact_max_dims: int = EXACT_MAX_DIMS,
    oversampling: int | None = None,
    power_iterations: int = 4,
    seed: int = 0,
) -> PCA:
    """PCA of the rows of ``x`` (images of any shape) at ``k`` components, in float32. ``transform``: what
    makes a chunk of ``x`` the model's input (uint8 images to floats on the device), so the whole set is
    never held as floats. Exact up to ``exact_max_dims`` dimensions, randomized subspace iteration above
    (``oversampling`` extra directions, by default k: the eigenvalues around the k-th of images are close,
    and a subspace twice as wide converges in a few passes; ``power_iterations`` passes over the data;
    seeded, so the same data give the same components)."""
    data = _Data(x, transform)
    mean = data.mean()
    dims = mean.numel()
    k = min(k, dims)
    if dims <= exact_max_dims:
        components = _exact_components(data, mean, k)
    else:
        extra = max(16, k) if oversampling is None else oversampling
        components = _randomized_components(data, mean, k, extra, power_iterations, seed)
    return PCA(mean.float(), components.float())


def active_units(posterior_means: Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions whose E_q[z] varies over the data (Burda et al.): Var_x E_q[z_d] > threshold."""
    return int((posterior_means.var(dim=0) > threshold).sum())
