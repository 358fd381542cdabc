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

from vaerun.config_checks import check_value


def _sum_pixels(values: Tensor) -> Tensor:
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


def bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """log Bernoulli(x | sigmoid(logits)) per image; x may be grey levels in [0, 1] (the usual relaxation)."""
    # x l - log(1 + e^l), the negative of binary_cross_entropy_with_logits, written out because it
    # broadcasts: the IWAE scores (k, N, ...) logits against (N, ...) images without k copies of them,
    # its x l term as one batched dot product per image (1.6x faster there than the element-wise product;
    # slower for the training step's equal shapes, which keep it).
    if logits.dim() > x.dim():
        dot = torch.einsum("...nd,nd->...n", logits.flatten(-3), x.flatten(-3))
        return dot - F.softplus(logits).flatten(-3).sum(dim=-1)
    return _sum_pixels(x * logits - F.softplus(logits))


def gaussian_log_prob(mean: Tensor, x: Tensor, std: float | Tensor) -> Tensor:
    """log N(x | mean, std^2) per image; ``std`` one number or one per pixel."""
    log_std = torch.log(std) if isinstance(std, Tensor) else math.log(std)
    log_density = -0.5 * ((x - mean) / std).square() - log_std - 0.5 * math.log(2 * math.pi)
    return _sum_pixels(log_density)


def discretized_logistic_log_prob(
    logit_weights: Tensor, means: Tensor, log_scales: Tensor, x: Tensor, levels: int = 256
) -> Tensor:
    """log P(x) per image of a mixture of logistics per sub-pixel, discretized to ``levels`` equally spaced
    values of [0, 1] (Salimans et al. 2017, PixelCNN++, without its coupling of the channels): each level
    gets the logistic's mass over its bin, the lowest and the highest the tails beyond, so the levels'
    probabilities sum to one. Parameters (..., C, H, W, K) for K components, on the [-1, 1] scale; x
    (N, C, H, W) in [0, 1], on the levels (it broadcasts against leading sample dimensions)."""
    x = (x * 2 - 1).unsqueeze(-1)
    half_bin = 1.0 / (levels - 1)
    centred, inverse_scale = x - means, torch.exp(-log_scales)
    plus, minus = inverse_scale * (centred + half_bin), inverse_scale * (centred - half_bin)
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid: the lowest level takes the left tail
    log_survival_minus = -F.softplus(minus)  # log (1 - sigmoid): the highest level the right tail
    mass = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inverse_scale * centred
    # a bin too narrow for the difference of two sigmoids in float32: the density at its centre x its width
    log_density_mid = mid - log_scales - 2 * F.softplus(mid) + math.log(2 * half_bin)
    inner = torch.where(mass > 1e-5, torch.log(mass.clamp_min(1e-12)), log_density_mid)
    edge = torch.where(x > 1 - half_bin, log_survival_minus, inner)
    log_probs = torch.where(x < -1 + half_bin, log_cdf_plus, edge)
    return _sum_pixels(torch.logsumexp(log_probs + F.log_softmax(logit_weights, dim=-1), dim=-1))


def squared_error(mean: Tensor, x: Tensor) -> Tensor:
    """Mean squared error per pixel, per image."""
    return (mean - x).square().flatten(start_dim=1).mean(dim=1)


class BernoulliLikelihood:
    """p(x|z) = Bernoulli(sigmoid(out)) per pixel, where out is the decoder's output (logits)."""

    def output_channels(self, channels: int) -> int:
        """The decoder's output channels per image channel count: one logit per sub-pixel."""
        return channels

    def log_prob(self, decoder_output: Tensor, x: Tensor) -> Tensor:
        return bernoulli_log_prob(decoder_output, x)

    def mean(self, decoder_output: Tensor) -> Tensor:
        return torch.sigmoid(decoder_output)


class GaussianLikelihood:
    """p(x|z) = N(mean, std^2) per pixel, with mean = sigmoid(out) so that it stays in the image range
    [0, 1]; with ``bounded=False``, mean = out (a linear decoder is then probabilistic PCA). ``learn_std``:
    the decoder outputs a standard deviation per pixel too (in ``std_range``), instead of the fixed
    ``std``."""

    def __init__(
        self,
        std: float = 0.1,
        bounded: bool = True,
        learn_std: bool = False,
        std_range: tuple[float, float] = (1e-3, 1.0),
    ) -> None:
        check_value("likelihood.std", std)
        check_value("likelihood.learn_std", learn_std)
        self.std, self.bounded, self.learn_std = float(std), bounded, learn_std
        self.log_std_range = (math.log(std_range[0]), math.log(std_range[1]))

    def output_channels(self, channels: int) -> int:
        return 2 * channels if self.learn_std else channels

    def _split(self, decoder_output: Tensor) -> tuple[Tensor, Tensor | float]:
        if not self.learn_std:
            return decoder_output, self.std
        location, log_std = decoder_output.chunk(2, dim=-3)
        return location, torch.exp(log_std.clamp(*self.log_std_range))

    def log_prob(self, decoder_output: Tensor, x: Tensor) -> Tensor:
        location, std = self._split(decoder_output)
        return gaussian_log_prob(torch.sigmoid(location) if self.bounded else location, x, std)

    def mean(self, decoder_output: Tensor) -> Tensor:
        location, _ = self._split(decoder_output)
        return torch.sigmoid(location) if self.bounded else location


class DiscretizedLogisticLikelihood:
    """p(x|z) for 8-bit images: per sub-pixel, a mixture of ``mixtures`` logistics discretized to the 256
    levels (``discretized_logistic_log_prob``), a proper probability, so -log p(x) in bits per dimension
    is what image papers report. The decoder outputs 3 x mixtures numbers per sub-pixel: the components'
    weights (logits), locations and log-scales."""

    #: log-scales below this are clamped: a logistic narrower than a level brings nothing more
    min_log_scale = -7.0

    def __init__(self, mixtures: int = 1) -> None:
        check_value("likelihood.mixtures", mixtures)
        self.mixtures = int(mixtures)

    def output_channels(self, channels: int) -> int:
        return 3 * self.mixtures * channels

    def _parameters(self, decoder_output: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., 3 K C, H, W) -> weights, locations, log-scales, each (..., C, H, W, K)."""
        *lead, _, height, width = decoder_output.shape
        parts = decoder_output.reshape(*lead, 3, self.mixtures, -1, height, width).movedim(-4, -1)
        weights, locations, log_scales = parts.unbind(dim=-5)
        return weights, locations, log_scales.clamp_min(self.min_log_scale)

    def log_prob(self, decoder_output: Tensor, x: Tensor) -> Tensor:
        return discretized_logistic_log_prob(*self._parameters(decoder_output), x)

    def mean(self, decoder_output: Tensor) -> Tensor:
        """The mixture's mean, on the [0, 1] scale."""
        weights, locations, _ = self._parameters(decoder_output)
        mean = (torch.softmax(weights, dim=-1) * locations).sum(dim=-1)
        return ((mean + 1) / 2).clamp(0, 1)


def gaussian_entropy(logvar: Tensor) -> Tensor:
    """The entropy of N(mu, diag exp(logvar)) in nats, summed over the last dimension."""
    return 0.5 * (1 + math.log(2 * math.pi) + logvar).sum(dim=-1)


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


def bits_per_dim(nats_per_image: Tensor | float, num_dims: int) -> Tensor | float:
    """Nats per image -> bits per dimension (pixel x channel)."""
    return nats_per_image / (num_dims * math.log(2))
