"""The decoder likelihoods p(x|z): each turns the decoder's output into ``log_prob`` and ``mean``. The
discretized logistic's math is in ``logistic_mixture`` (per image) and ``logistic_bins`` (per bin).

Conventions as in ``objectives``: images are (N, C, H, W) in [0, 1], per-image values summed over pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vaerun.core.checks import check_likelihood, check_value
from vaerun.models.fused_bins import fused_log_prob_of_outputs, fused_log_prob_of_outputs_value
from vaerun.models.logistic_bins import (
    LogisticOutputs,
    bin_edges,
    log_mass_of_outputs,
    log_mass_of_outputs_in_place,
)
from vaerun.models.logistic_mixture import (
    channel_pairs,
    couple_channels,
    discretized_logistic_log_prob,
    logistic_log_scale,
)
from vaerun.models.objectives import sum_pixels


def bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """log Bernoulli(x | sigmoid(logits)) per image; x may be grey levels in [0, 1] (the usual relaxation)."""
    # x l - log(1 + e^l), the negative of binary_cross_entropy_with_logits, written out because it
    # broadcasts: the IWAE scores (k, N, ...) logits against (N, ...) images without k copies of them,
    # its x l term as one batched dot product per image (1.6x faster there than the element-wise product;
    # slower for the training step's equal shapes, which keep it).
    if logits.dim() > x.dim():
        dot = torch.einsum("...nd,nd->...n", logits.flatten(-3), x.flatten(-3))
        return dot - F.softplus(logits).flatten(-3).sum(dim=-1)
    return sum_pixels(x * logits - F.softplus(logits))


def gaussian_log_prob(mean: Tensor, x: Tensor, std: float | Tensor) -> Tensor:
    """log N(x | mean, std^2) per image; ``std`` one number or one per pixel."""
    log_std = torch.log(std) if isinstance(std, Tensor) else math.log(std)
    log_density = -0.5 * ((x - mean) / std).square() - log_std - 0.5 * math.log(2 * math.pi)
    return sum_pixels(log_density)


def squared_error(mean: Tensor, x: Tensor) -> Tensor:
    """Mean squared error per pixel, per image."""
    return (mean - x).square().flatten(start_dim=1).mean(dim=1)


#: what a likelihood's log_prob is of: a probability of binary values, of the 256 levels of 8-bit data, or
#: a density on [0, 1] (dequantization_nats says what each needs to be bits of the data)
BINARY, LEVELS, DENSITY = "binary", "levels", "density"


def dequantization_nats(values: str, binary_data: bool, unit_range: bool) -> float | None:
    """What -log p(x) per dimension needs added, in nats, to be the -log of a probability over the data's
    own values, as image papers report bits/dim; None where it cannot be: a Bernoulli of grey levels is no
    distribution over them, and a density of a table's standardised values has no levels. A density on
    [0, 1] of 8-bit images is one over bins 1/256 wide: -log P(x) = -log p(x) + D log 256 (exact with
    uniform dequantisation noise, a close bound for a smooth density)."""
    if values == BINARY:
        return 0.0 if binary_data else None
    if not unit_range:
        return None
    if values == LEVELS:
        return 0.0
    return None if binary_data else math.log(256)


class BernoulliLikelihood:
    """p(x|z) = Bernoulli(sigmoid(out)) per pixel, where out is the decoder's output (logits)."""

    values = BINARY

    def output_channels(self, channels: int) -> int:
        """The decoder's output channels per image channel count: one logit per sub-pixel."""
        return channels

    def channels_started_at_zero(self, channels: int) -> slice | None:
        """Which of the decoder's output channels start at 0 for every code: none."""
        return None

    def channels_on_detached_features(self, channels: int) -> slice | None:
        """Which of the decoder's output channels its last layer makes from detached features: none."""
        return None

    def log_prob(self, decoder_output: Tensor, x: Tensor) -> Tensor:
        return bernoulli_log_prob(decoder_output, x)

    def mean(self, decoder_output: Tensor) -> Tensor:
        return torch.sigmoid(decoder_output)


class GaussianLikelihood:
    """p(x|z) = N(mean, std^2) per pixel, with mean = sigmoid(out) so that it stays in the image range
    [0, 1]; with ``bounded=False``, mean = out (a linear decoder is then probabilistic PCA). ``learn_std``:
    the decoder outputs a standard deviation per pixel too (in ``std_range``), instead of the fixed
    ``std``; it starts near ``initial_std`` (the decoder's output is its log relative to that; None: the
    log itself, as checkpoints made before the key), since a decoder that starts as wide as the image
    range learns its means slowly: the squared error's weight is 1 / (2 std^2)."""

    values = DENSITY

    def __init__(
        self,
        std: float = 0.1,
        bounded: bool = True,
        learn_std: bool = False,
        std_range: tuple[float, float] = (1e-3, 1.0),
        initial_std: float | None = None,
    ) -> None:
        check_value("likelihood.std", std)
        check_value("likelihood.learn_std", learn_std)
        check_value("likelihood.initial_std", initial_std)
        self.std, self.bounded, self.learn_std = float(std), bounded, learn_std
        self.log_std_range = (math.log(std_range[0]), math.log(std_range[1]))
        self.log_std_offset = 0.0 if initial_std is None else math.log(initial_std)

    def output_channels(self, channels: int) -> int:
        return 2 * channels if self.learn_std else channels

    def channels_started_at_zero(self, channels: int) -> slice | None:
        """The learned log standard deviations' channels (the second half): every pixel starts at
        ``initial_std`` for every code. From the random last layer's spread of scales, the Gaussian was
        still near the mean image after two epochs in two seeds of four on the photo patches, and a
        third's error rose again (docs/images.md)."""
        return slice(channels, 2 * channels) if self.learn_std else None

    def channels_on_detached_features(self, channels: int) -> slice | None:
        return None

    def _split(self, decoder_output: Tensor) -> tuple[Tensor, Tensor | float]:
        if not self.learn_std:
            return decoder_output, self.std
        location, log_std = decoder_output.chunk(2, dim=-3)
        return location, torch.exp((log_std + self.log_std_offset).clamp(*self.log_std_range))

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
    weights (logits), locations and log-scales; for one component only its location and log-scale, unless
    ``one_component_weight`` (the class default, as checkpoints made before the key: their decoders output
    a weight that nothing reads; the config sets false, which makes a 64-px conv decoder's forward and
    backward 6-8% faster). The logistics start near a standard deviation of
    ``initial_std`` in image units (the decoder's output is the log-scale relative to that; None: the
    log-scale itself, as checkpoints made before the key); the configs start them at 0.2, near the
    spread of natural images' levels. Left at the raw output, they start wider than the image range, and a
    logistic's gradient on its location shrinks with its scale: after 5 epochs on 32-px photo patches the
    reconstructions were still grey blobs (MSE 0.054 against 0.015-0.019 from 0.2, unbounded). From 0.1 they
    are narrower than the first residuals, widen first and stall the reconstructions for epochs (0.020-0.029).

    ``bounded``: the locations are tanh of the decoder's output, within the image range, as the Gaussian's
    mean is a sigmoid (False: the output itself, as checkpoints made before the key): 0.3 bits/dim lower
    after 5 epochs on the photo patches in two seeds of three, level in the third (docs/images.md). A
    mixture's components start spread over the range (``_component_offsets``); started alike, five
    components reconstructed half as well as one after 5 epochs.

    ``channel_coupling``: PixelCNN++'s coupling of a pixel's channels. The components are the pixel's, with
    one weight each, and each channel's location adds tanh(coefficient) x the value of each channel before
    it (``couple_channels``); the decoder outputs K weights and K x (2 C + C (C - 1) / 2) numbers per pixel.
    On the photo patches, 30 epochs at batch 32: 4.67 bits/dim against 5.16 uncoupled, at a larger squared
    error (0.0095 against 0.0085): each channel's location is learned given the true values of the channels
    before it, so the luminance all three share is learned from the first channel's logistics alone, and
    the mean image carries its error into the others (docs/images.md).

    ``faithful`` (one component, uncoupled): faithful heteroscedastic training (Stirn et al. 2023). The
    locations get about the squared error's gradient (``with_squared_error_gradients``), and the decoder's
    last layer makes the log-scales from its features detached, so that the layers before it learn the
    mean image alone. The values, the ELBO and the bits are those of the same likelihood; the gradients are
    not the ELBO's. On the photo patches, 30 epochs at batch 32: squared error 0.0081-0.0086 at 5.40-5.52
    bits/dim in three seeds, against 0.0085 at 5.16 on the ELBO (seed 0; docs/images.md)."""

    values = LEVELS

    #: one component from the decoder's raw outputs through fused_bins's compiled kernels, where the eager
    #: steps of logistic_bins make about 45 passes (use_fused_kernels)
    fused_kernels = False

    #: log-scales are clamped to this range: a logistic narrower than a level brings nothing more, nor one
    #: a thousand times wider than the image range, whose bin masses' gradients would under- and overflow
    min_log_scale, max_log_scale = -7.0, 7.0

    def __init__(
        self,
        mixtures: int = 1,
        initial_std: float | None = None,
        bounded: bool = False,
        one_component_weight: bool = True,
        channel_coupling: bool = False,
        faithful: bool = False,
    ) -> None:
        check_value("likelihood.mixtures", mixtures)
        check_value("likelihood.initial_std", initial_std)
        check_value("likelihood.bounded", bounded)
        check_value("likelihood.one_component_weight", one_component_weight)
        check_value("likelihood.channel_coupling", channel_coupling)
        check_value("likelihood.faithful", faithful)
        check_likelihood({"faithful": faithful, "mixtures": mixtures, "channel_coupling": channel_coupling})
        self.faithful = bool(faithful)
        self.mixtures = int(mixtures)
        self.log_scale_offset = 0.0 if initial_std is None else logistic_log_scale(initial_std)
        self.bounded = bool(bounded)
        #: the decoder's numbers per component and sub-pixel: (weight,) location, log-scale
        self.parts = 3 if self.mixtures > 1 or one_component_weight else 2
        self.coupled = bool(channel_coupling)
        self.outputs = LogisticOutputs(
            self.bounded, self.log_scale_offset, (self.min_log_scale, self.max_log_scale)
        )

    def use_fused_kernels(self) -> None:
        """Score one component through torch.compile'd kernels (``fused_bins``): the same numbers in one
        or two loops where the eager steps make about 45 passes. torch.compile needs a C++ compiler on a
        CPU."""
        self.fused_kernels = True

    def output_channels(self, channels: int) -> int:
        if not self.coupled:
            return self.parts * self.mixtures * channels
        # per pixel: the components' weights, and per component each channel's location and log-scale and
        # the coefficients of its coupling to the channels before it
        weights = self.mixtures if self.parts == 3 else 0
        return weights + self.mixtures * (2 * channels + channel_pairs(channels))

    def _channels(self, output_channels: int) -> int:
        for channels in range(1, output_channels + 1):
            if self.output_channels(channels) == output_channels:
                return channels
        raise ValueError(f"{output_channels} decoder channels are no image's discretized-logistic parameters")

    def channels_started_at_zero(self, channels: int) -> slice | None:
        """None: started at 0, the log-scales (the last channels) reconstructed worse after 5 epochs in two
        seeds of three on the photo patches (docs/images.md)."""
        return None

    def channels_on_detached_features(self, channels: int) -> slice | None:
        """``faithful``: the log-scales (the last channels)."""
        return slice((self.parts - 1) * channels, self.parts * channels) if self.faithful else None

    def _parameters(self, decoder_output: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        """(..., 3 K C, H, W) -> weights, locations, log-scales, each (..., C, H, W, K); (..., 2 C, H, W)
        -> None (one component's weight is 1), locations, log-scales."""
        unbound = self._grouped(decoder_output).unbind(dim=-5)
        weights, locations, log_scales = unbound if self.parts == 3 else (None, *unbound)
        return weights, *self._started(locations, log_scales)

    def _grouped(self, decoder_output: Tensor) -> Tensor:
        """(..., parts K C, H, W) -> (..., parts, C, H, W, K), a view."""
        *lead, _, height, width = decoder_output.shape
        return decoder_output.reshape(*lead, self.parts, self.mixtures, -1, height, width).movedim(-4, -1)

    def _coupled_parameters(self, decoder_output: Tensor) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
        """(..., output_channels(C), H, W) -> the pixels' weights (..., H, W, K) (None for one component
        without one), locations and log-scales (..., C, H, W, K), coupling coefficients (..., C(C-1)/2, H,
        W, K)."""
        *lead, total, height, width = decoder_output.shape
        channels = self._channels(total)
        pairs = channel_pairs(channels)
        weight_count = self.mixtures if self.parts == 3 else 0
        weights, rest = decoder_output.split([weight_count, total - weight_count], dim=-3)
        per_component = rest.reshape(*lead, 2 * channels + pairs, self.mixtures, height, width).movedim(
            -3, -1
        )
        locations, log_scales, coefficients = per_component.split([channels, channels, pairs], dim=-4)
        return (
            (weights.movedim(-3, -1) if weight_count else None),
            *self._started(locations, log_scales),
            coefficients,
        )

    def _started(self, locations: Tensor, log_scales: Tensor) -> tuple[Tensor, Tensor]:
        """The locations bounded and spread, the log-scales relative to the initial scale and clamped."""
        if self.bounded and self.mixtures > 1:  # one component starts at 0: no offset to add (a pass in IWAE)
            locations = locations + self._component_offsets(locations)
        return self.outputs.started(locations, log_scales)

    def _component_offsets(self, locations: Tensor) -> Tensor:
        """Where each component's location starts before the tanh: spread evenly over [-1, 1], so that a
        mixture's components start apart, each near a part of the range."""
        return torch.linspace(-1.0, 1.0, self.mixtures, device=locations.device, dtype=locations.dtype)

    def log_prob(self, decoder_output: Tensor, x: Tensor) -> Tensor:
        plain = self.parts == 2 and not (self.coupled or self.faithful)
        if plain and decoder_output.requires_grad and torch.is_grad_enabled():
            # one component with a graph (the ELBO, AIS): its location and log-scale made in one Function
            raw, (upper, lower) = self._grouped(decoder_output), bin_edges(x)
            # inside a compiled training loss, torch.compile fuses the eager steps itself
            if self.fused_kernels and not torch.compiler.is_compiling():
                return fused_log_prob_of_outputs(raw, upper, lower, self.outputs)
            return sum_pixels(log_mass_of_outputs(raw, upper, lower, self.outputs).squeeze(-1))
        if not self.coupled:
            parameters = self._parameters(decoder_output)
            return discretized_logistic_log_prob(*parameters, x, squared_error_gradients=self.faithful)
        weights, locations, log_scales, coefficients = self._coupled_parameters(decoder_output)
        means = couple_channels(locations, coefficients, (x * 2 - 1).unsqueeze(-1))
        return discretized_logistic_log_prob(weights, means, log_scales, x, pixel_components=True)

    def log_prob_(self, decoder_output: Tensor, x: Tensor) -> Tensor:
        """``log_prob``, free to overwrite ``decoder_output`` (the caller's own, as the IWAE's log p(x, z)
        is): one component without a graph takes it in the outputs' buffers (fused: in one kernel)."""
        graph = torch.is_grad_enabled() and decoder_output.requires_grad
        if self.parts == 2 and not (self.coupled or graph):
            raw, (upper, lower) = self._grouped(decoder_output), bin_edges(x)
            if self.fused_kernels:
                return fused_log_prob_of_outputs_value(raw, upper, lower, self.outputs)
            return sum_pixels(log_mass_of_outputs_in_place(raw, upper, lower, self.outputs).squeeze(-1))
        return self.log_prob(decoder_output, x)

    def mean(self, decoder_output: Tensor) -> Tensor:
        """The mean of the mixture of logistics, on the [0, 1] scale: the locations weighted by the
        components' weights. The discretized distribution's own mean differs where a wide logistic's tail
        is folded onto an edge level; on the photo patches' test images, after 30 epochs, that mean moved the
        squared error by under 1% (0.00866 to 0.00861 for one component, 0.00849 to 0.00850 for five)."""
        if self.coupled:
            weights, locations, _, coefficients = self._coupled_parameters(decoder_output)
            locations = couple_channels(locations, coefficients)
            weights = None if weights is None else weights.unsqueeze(-4)  # the pixel's, for each channel
        else:
            weights, locations, _ = self._parameters(decoder_output)
        if self.mixtures == 1:
            mean = locations.squeeze(-1)
        else:
            mean = (torch.softmax(weights, dim=-1) * locations).sum(dim=-1)
        return ((mean + 1) / 2).clamp(0, 1)
