"""The math of the objectives: small pure functions on tensors (KL terms, the IWAE bound, gradient noise).

Conventions: images are (N, C, H, W) in [0, 1]; every per-image quantity is summed over pixels (or latent
dimensions) and returned with shape (N,), in nats. Averaging over images is left to the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Distribution


def sum_pixels(values: Tensor) -> Tensor:
    """Sum over the last three dimensions (C, H, W): (..., C, H, W) -> (...)."""
    return values.sum(dim=(-3, -2, -1))


def kl_normal_standard_normal_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu_d, exp(logvar_d)) || N(0, 1)) in closed form, for each latent dimension: (..., K)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def kl_normal_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) in closed form, summed over the latent dimensions."""
    return kl_normal_standard_normal_per_dim(mu, logvar).sum(dim=-1)


def normal_log_prob_per_dim(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z_d | mu_d, exp(logvar_d)) for each dimension: (..., K)."""
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + math.log(2 * math.pi))


def student_t_log_prob_per_dim(z: Tensor, df: float) -> Tensor:
    """log t_df(z_d) of the standard Student-t (location 0, scale 1) for each dimension: (..., K)."""
    log_normaliser = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return log_normaliser - 0.5 * (df + 1) * torch.log1p(z.square() / df)


def free_bits_kl(kl_per_dim: Tensor, free_bits: float) -> Tensor:
    """The KL term with free bits (Kingma et al. 2016): each latent dimension's KL, averaged over the
    batch, counts as at least ``free_bits`` nats, so the optimiser gains nothing by pushing a dimension's
    KL below the floor (a cure for posterior collapse). (N, K) -> a scalar: the batch's per-image mean."""
    return kl_per_dim.mean(dim=0).clamp_min(free_bits).sum()


def warmup_weight(beta: float, epochs_done: float, warmup_epochs: float) -> float:
    """The KL weight of a linear warm-up: 0 at the start, rising to ``beta`` after ``warmup_epochs``."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, epochs_done / warmup_epochs)


def score_function_surrogate(
    value: Tensor, log_q: Tensor, baseline: Tensor | float = 0.0, signal: Tensor | None = None
) -> Tensor:
    """REINFORCE (the score-function estimator) as a surrogate: its value is ``value`` (f(z) for a sample z
    of q that carries no gradient), and its gradient with respect to q's parameters is
    (f(z) - baseline) * grad log q(z), an unbiased estimate of grad E_q[f] for any baseline that does not
    depend on z. Gradients of f's own parameters (the decoder's) flow through ``value`` unchanged.
    ``signal``: the f(z) that weighs the score where it is more than ``value`` (every term of the loss
    whose value depends on z, such as a Monte Carlo KL that is added to the loss separately)."""
    signal = value if signal is None else signal
    return value + (signal.detach() - baseline) * (log_q - log_q.detach())


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a sample of q(z|x) through which gradients flow."""
    # randn_like without a generator: under torch.compile a batch size that varies (an epoch's short last
    # batch) is symbolic, which randn_like takes and randn(shape, generator=...) refuses on CUDA. The same
    # draws either way.
    eps = (
        torch.randn_like(mu)
        if generator is None
        else torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    )
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_entropy(logvar: Tensor) -> Tensor:
    """The entropy of N(mu, diag exp(logvar)) in nats, summed over the last dimension."""
    return 0.5 * (1 + math.log(2 * math.pi) + logvar).sum(dim=-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z | 0, I), summed over the last dimension."""
    return -0.5 * (z.square() + math.log(2 * math.pi)).sum(dim=-1)


#: on a CPU, the most numbers a decoder pass of an estimate outputs at once (16 MB of float32): glibc hands
#: blocks over 32 MB back to the system when they are freed and page-faults them in again at the next
#: allocation, so every element-wise step of a larger pass pays for fresh pages; the IWAE's likelihood of
#: 3,200 32-px colour samples ran at 9,100 samples/s in one pass and 24,000 in passes of 800
CPU_PASS_NUMBERS = 2**22


def cpu_pass_shape(images: int, samples: int, chunk_size: int, numbers_per_sample: int) -> tuple[int, int]:
    """(images per group, samples per chunk) for an estimate over ``images`` images with ``samples``
    importance samples each, drawn ``chunk_size`` at a time, whose decoder outputs ``numbers_per_sample``
    numbers per sample: groups x chunk decoder rows stay under CPU_PASS_NUMBERS, whole images per group."""
    rows = max(1, CPU_PASS_NUMBERS // numbers_per_sample)
    chunk = max(1, min(chunk_size, samples, rows))
    return max(1, min(images, rows // chunk)), chunk


def iwae_log_likelihood(
    posterior: Distribution,
    log_joint: Callable[[Tensor], Tensor],
    num_samples: int,
    chunk_size: int = 64,
) -> Tensor:
    """Burda et al.'s importance-weighted estimate of log p(x), per image:

        log (1/k) sum_i p(x, z_i) / q(z_i | x),   z_i ~ q(z | x),

    a lower bound in expectation that tightens as k grows (k = 1 is the ELBO's single-sample estimate).
    ``posterior`` is q(z|x) with batch shape (N,): a torch Distribution, or anything with
    ``rsample_and_log_prob`` (a flow posterior, whose density is known at its own draws only);
    ``log_joint(z)`` maps samples (n, N, K) to log p(x, z) of shape (n, N). Samples are drawn
    ``chunk_size`` at a time and the log-sum-exp is accumulated, so memory stays bounded whatever k is.
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"num_samples and chunk_size must be >= 1, got {num_samples} and {chunk_size}")
    total: Tensor | None = None
    for start in range(0, num_samples, chunk_size):
        shape = (min(chunk_size, num_samples - start),)
        if isinstance(posterior, Distribution):
            z = posterior.sample(shape)
            log_q = posterior.log_prob(z)
        else:
            z, log_q = posterior.rsample_and_log_prob(shape)
        log_weights = log_joint(z) - log_q
        chunk = torch.logsumexp(log_weights, dim=0)
        total = chunk if total is None else torch.logaddexp(total, chunk)
    return total - math.log(num_samples)


def gradient_noise(draws: Tensor) -> tuple[Tensor, Tensor]:
    """Independent draws (S, P) of a stochastic gradient -> (the trace of their covariance, i.e. the summed
    per-coordinate variance; the signal-to-noise ratio |mean|^2 / that trace)."""
    variance = draws.var(dim=0).sum()
    return variance, draws.mean(dim=0).square().sum() / variance.clamp_min(torch.finfo(draws.dtype).tiny)


def bits_per_dim(
    nats_per_image: Tensor | float, num_dims: int, dequantization: float = 0.0
) -> Tensor | float:
    """Nats per image -> bits per dimension (pixel x channel); ``dequantization``: nats per dimension
    added first (vaerun.models.likelihoods.dequantization_nats)."""
    return (nats_per_image / num_dims + dequantization) / math.log(2)


def iwae_bound(log_weights: Tensor) -> Tensor:
    """log (1/k) sum_i w_i per image, from log-weights log w_i = log p(x, z_i) - log q(z_i | x) of (k, N)."""
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


def iwae_surrogate(
    log_joint: Callable[[Tensor], Tensor],
    mu: Tensor,
    logvar: Tensor,
    k: int,
    gradient: str = "reparam",
    bound: str = "iwae",
) -> tuple[Tensor, Tensor, Tensor]:
    """The IWAE bound of a Gaussian q = N(mu, diag exp(logvar)) as a training objective (Burda et al. 2016),
    with k reparameterised samples per image: (surrogate (N,), log-weights (k, N), samples z (k, N, K)).

    The surrogate's value is the bound. Its gradient is the bound's reparameterisation gradient
    (``gradient="reparam"``), or, for ``"dreg"``, the doubly reparameterised one of Tucker et al. (2019): in
    q's parameters, sum_i w~_i^2 d log w_i / d z_i dz_i/dphi (log q evaluated with its parameters held
    fixed, so that only the path through the samples remains, each weighted by the square of its normalised
    weight w~_i); in everything else (the decoder, a learned prior) the usual sum_i w~_i grad log w_i.
    Both are unbiased; DReG's variance in q's parameters does not grow with k as the other's does.
    ``bound="elbo"``: the mean of the k log-weights instead (the ELBO estimated with k samples, Burda et
    al.'s "VAE, k samples"), with the reparameterisation gradient."""
    z = mu + torch.exp(0.5 * logvar) * torch.randn((k, *mu.shape), dtype=mu.dtype, device=mu.device)
    if gradient == "dreg" and bound == "iwae":
        log_q = normal_log_prob_per_dim(z, mu.detach(), logvar.detach()).sum(dim=-1)
    else:
        log_q = normal_log_prob_per_dim(z, mu, logvar).sum(dim=-1)
    log_weights = log_joint(z) - log_q
    if bound == "elbo":
        return log_weights.mean(dim=0), log_weights, z
    bound_value = iwae_bound(log_weights)
    if gradient != "dreg":
        return bound_value, log_weights, z
    normalised = torch.softmax(log_weights.detach(), dim=0)
    if z.requires_grad:  # each sample's path gradient gets one more factor w~_i: w~_i^2 in all
        z.register_hook(lambda grad: grad * normalised.unsqueeze(-1))
    surrogate = (normalised * log_weights).sum(dim=0)
    return bound_value.detach() + surrogate - surrogate.detach(), log_weights, z
