"""The math of the objectives: small pure functions on tensors, and the decoder likelihoods p(x|z).

Conventions: images are (N, C, H, W) in [0, 1]; every per-image quantity is summed over pixels (or latent
dimensions) and returned with shape (N,), in nats. Averaging over images is left to the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution


def _sum_pixels(values: Tensor) -> Tensor:
    """Sum over the last three dimensions (C, H, W): (..., C, H, W) -> (...)."""
    return values.sum(dim=(-3, -2, -1))


def kl_normal_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) in closed form, summed over the latent dimensions."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a sample of q(z|x) through which gradients flow."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """log Bernoulli(x | sigmoid(logits)) per image; x may be grey levels in [0, 1] (the usual relaxation)."""
    # x l - log(1 + e^l), the negative of binary_cross_entropy_with_logits, written out because it
    # broadcasts: the IWAE scores (k, N, ...) logits against (N, ...) images without k copies of them.
    return _sum_pixels(x * logits - F.softplus(logits))


def gaussian_log_prob(mean: Tensor, x: Tensor, std: float) -> Tensor:
    """log N(x | mean, std^2 I) per image."""
    log_density = -0.5 * ((x - mean) / std).square() - math.log(std) - 0.5 * math.log(2 * math.pi)
    return _sum_pixels(log_density)


def squared_error(mean: Tensor, x: Tensor) -> Tensor:
    """Mean squared error per pixel, per image."""
    return (mean - x).square().flatten(start_dim=1).mean(dim=1)


class BernoulliLikelihood:
    """p(x|z) = Bernoulli(sigmoid(out)) per pixel, where out is the decoder's output (logits)."""

    def log_prob(self, decoder_output: Tensor, x: Tensor) -> Tensor:
        return bernoulli_log_prob(decoder_output, x)

    def mean(self, decoder_output: Tensor) -> Tensor:
        return torch.sigmoid(decoder_output)


class GaussianLikelihood:
    """p(x|z) = N(mean, std^2) per pixel, with mean = sigmoid(out) so that it stays in the image range
    [0, 1]; with ``bounded=False``, mean = out (a linear decoder is then probabilistic PCA)."""

    def __init__(self, std: float = 0.1, bounded: bool = True) -> None:
        if not std > 0:
            raise ValueError(f"likelihood.std must be > 0, got {std!r}")
        self.std = float(std)
        self.bounded = bounded

    def log_prob(self, decoder_output: Tensor, x: Tensor) -> Tensor:
        return gaussian_log_prob(self.mean(decoder_output), x, self.std)

    def mean(self, decoder_output: Tensor) -> Tensor:
        return torch.sigmoid(decoder_output) if self.bounded else decoder_output


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z | 0, I), summed over the last dimension."""
    return -0.5 * (z.square() + math.log(2 * math.pi)).sum(dim=-1)


def iwae_log_likelihood(
    posterior: Distribution,
    log_joint: Callable[[Tensor], Tensor],
    num_samples: int,
    chunk_size: int = 64,
) -> Tensor:
    """Burda et al.'s importance-weighted estimate of log p(x), per image:

        log (1/k) sum_i p(x, z_i) / q(z_i | x),   z_i ~ q(z | x),

    a lower bound in expectation that tightens as k grows (k = 1 is the ELBO's single-sample estimate).
    ``posterior`` is q(z|x) with batch shape (N,); ``log_joint(z)`` maps samples (n, N, K) to log p(x, z)
    of shape (n, N). Samples are drawn ``chunk_size`` at a time and the log-sum-exp is accumulated, so
    memory stays bounded whatever k is.
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"num_samples and chunk_size must be >= 1, got {num_samples} and {chunk_size}")
    total: Tensor | None = None
    for start in range(0, num_samples, chunk_size):
        z = posterior.sample((min(chunk_size, num_samples - start),))
        log_weights = log_joint(z) - posterior.log_prob(z)
        chunk = torch.logsumexp(log_weights, dim=0)
        total = chunk if total is None else torch.logaddexp(total, chunk)
    return total - math.log(num_samples)


def bits_per_dim(nats_per_image: Tensor | float, num_dims: int) -> Tensor | float:
    """Nats per image -> bits per dimension (pixel x channel)."""
    return nats_per_image / (num_dims * math.log(2))
