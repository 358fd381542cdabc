"""Vector quantisation (van den Oord et al. 2017): the nearest of K codebook vectors for each encoder
output, the codebook kept as exponential moving averages of the vectors assigned to each code (Razavi et
al. 2019's VQ-VAE-2 update), and codes nobody uses restarted at encoder outputs (Dhariwal et al. 2020).

The math is in small functions on tensors; ``EMACodebook`` holds the state and wires them."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


def nearest_codes(vectors: Tensor, codebook: Tensor) -> Tensor:
    """The index of the codebook row nearest each vector in Euclidean distance: (M, D), (K, D) -> (M,).
    |v - e|^2 = |v|^2 - 2 v.e + |e|^2, and |v|^2 is the same for every code, so it is left out."""
    distances = (codebook * codebook).sum(dim=1) - 2.0 * vectors @ codebook.T
    return distances.argmin(dim=1)


def code_counts(indices: Tensor, num_codes: int) -> Tensor:
    """How many vectors each code was assigned, as floats (K,)."""
    return torch.bincount(indices.flatten(), minlength=num_codes).to(torch.float32)


def code_sums(vectors: Tensor, indices: Tensor, num_codes: int) -> Tensor:
    """The sum of the vectors assigned to each code (K, D)."""
    sums = vectors.new_zeros(num_codes, vectors.shape[1])
    return sums.index_add_(0, indices, vectors)


def ema_codebook(cluster_size: Tensor, vector_sum: Tensor, epsilon: float = 1e-5) -> Tensor:
    """Each code at the mean of the vectors assigned to it, from the moving averages of their count and
    sum; the counts Laplace-smoothed (Sonnet's VQ-VAE-EMA) so that an unused code divides by no zero."""
    total = cluster_size.sum()
    smoothed = (cluster_size + epsilon) / (total + cluster_size.numel() * epsilon) * total
    return vector_sum / smoothed.unsqueeze(1)


def perplexity(counts: Tensor) -> Tensor:
    """exp of the entropy of the codes' frequencies: K when every code is used equally, 1 when one is."""
    probabilities = counts / counts.sum().clamp_min(1.0)
    entropy = -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum()
    return torch.exp(entropy)


def straight_through(vectors: Tensor, quantized: Tensor) -> Tensor:
    """The quantized values forward, the identity's gradient backward (to the encoder)."""
    return vectors + (quantized - vectors).detach()


class EMACodebook(nn.Module):
    """K code vectors of size D. ``quantize`` snaps vectors to their nearest codes; in training,
    ``update`` moves each code toward the mean of the vectors assigned to it (decay ``decay`` per step)
    and restarts the codes whose moving count fell below ``restart_below`` at random vectors of the batch.
    The first ``update`` sets the codebook to random vectors of that batch. Under DDP the counts and sums
    are summed over the processes, so every process keeps the same codebook."""

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, restart_below: float = 0.1) -> None:
        super().__init__()
        self.num_codes, self.dim = int(num_codes), int(dim)
        self.decay, self.restart_below = float(decay), float(restart_below)
        self.register_buffer("codebook", torch.randn(self.num_codes, self.dim) / self.num_codes)
        self.register_buffer("cluster_size", torch.zeros(self.num_codes))
        self.register_buffer("vector_sum", torch.zeros(self.num_codes, self.dim))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        #: codes restarted since the counter was last read (for the training log)
        self.register_buffer("restarts", torch.zeros(()), persistent=False)

    def quantize(self, vectors: Tensor) -> tuple[Tensor, Tensor]:
        """(M, D) -> the nearest codes' vectors (M, D) and their indices (M,)."""
        indices = nearest_codes(vectors.float(), self.codebook)
        return self.codebook[indices].to(vectors.dtype), indices

    def embed(self, indices: Tensor) -> Tensor:
        """Indices of any shape -> their code vectors, with a last dimension D."""
        return self.codebook[indices]

    @torch.no_grad()
    def update(self, vectors: Tensor, indices: Tensor) -> None:
        vectors = vectors.detach().float()
        if not bool(self.initialised):
            self._initialise(vectors)
            indices = nearest_codes(vectors, self.codebook)
        counts = code_counts(indices, self.num_codes)
        sums = code_sums(vectors, indices, self.num_codes)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.lerp_(counts, 1.0 - self.decay)
        self.vector_sum.lerp_(sums, 1.0 - self.decay)
        self.codebook.copy_(ema_codebook(self.cluster_size, self.vector_sum))
        self._restart_dead_codes(vectors)

    @staticmethod
    def _random_rows(vectors: Tensor, count: int) -> Tensor:
        """``count`` rows of ``vectors`` drawn with replacement (a batch may hold fewer than K); under DDP
        the first process's, so that every process starts and restarts its codes alike."""
        rows = vectors[torch.randint(len(vectors), (count,), device=vectors.device)]
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(rows, src=0)
        return rows

    def _initialise(self, vectors: Tensor) -> None:
        start = self._random_rows(vectors, self.num_codes)
        self.codebook.copy_(start)
        # each code counted as used once (as Jukebox's): codes stay where they start until used, and
        # one that batches leave unused falls below ``restart_below`` within a few steps and restarts
        self.cluster_size.fill_(1.0)
        self.vector_sum.copy_(start)
        self.initialised.fill_(True)

    def _restart_dead_codes(self, vectors: Tensor) -> None:
        dead = self.cluster_size < self.restart_below
        count = int(dead.sum())
        if count == 0:
            return
        fresh = self._random_rows(vectors, count)
        self.codebook[dead] = fresh
        self.cluster_size[dead] = self.restart_below
        self.vector_sum[dead] = fresh * self.restart_below
        self.restarts += count
