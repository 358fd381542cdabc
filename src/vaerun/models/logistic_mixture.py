"""A mixture of logistics per sub-pixel, discretized to an 8-bit image's levels: its log-probability per
image (PixelCNN++'s likelihood), and the pieces the discretized-logistic likelihood builds it from.

Conventions as in ``objectives``: images are (N, C, H, W) in [0, 1], per-image values summed over pixels;
the logistics' parameters are on the [-1, 1] scale, (..., C, H, W, K) for K components.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vaerun.models.logistic_bins import bin_edges, log_mass_in_place, log_mass_with_own_gradients
from vaerun.models.objectives import sum_pixels


def discretized_logistic_log_prob(
    logit_weights: Tensor | None,
    means: Tensor,
    log_scales: Tensor,
    x: Tensor,
    levels: int = 256,
    pixel_components: bool = False,
    squared_error_gradients: bool = False,
) -> Tensor:
    """log P(x) per image of a mixture of logistics per sub-pixel, discretized to ``levels`` equally spaced
    values of [0, 1] (Salimans et al. 2017, PixelCNN++; its coupling of the channels: ``pixel_components``):
    each level gets the logistic's mass over its bin, the lowest and the highest the tails beyond, so the
    levels' probabilities sum to one. Parameters (..., C, H, W, K) for K components, on the [-1, 1] scale, the
    log-scales within [-7, 7] (as the likelihood clamps them; ``logit_weights`` may be None for K = 1); x
    (N, C, H, W) in [0, 1], on the levels (it broadcasts against leading sample dimensions).

    A bin's mass is taken in log space, exactly and stably wherever the bin lies (``logistic_bins``: with
    its gradients in closed form, and without a graph in buffers overwritten in place). The edge levels'
    bins reach out to +-OPEN_EDGE, where the same formula gives their tails, so no per-element branch is
    needed over the k x N x D values: the bins' edges are set once per image. PixelCNN++ subtracts the
    sigmoids and, where that difference is lost in float32 (the tails), takes the density at the bin's
    centre times its width instead, which is off by up to a factor exp(width / scale) for logistics
    narrower than a level.

    ``pixel_components``: the components are the pixel's, shared by its channels, as PixelCNN++'s (whose
    channels are coupled: ``couple_channels``): each component's log-masses are summed over the channels
    before the mixture, and ``logit_weights`` is (..., H, W, K). ``squared_error_gradients`` (one component):
    the values as they are, their gradients as ``with_squared_error_gradients`` gives them."""
    upper, lower = bin_edges(x, levels)
    parameters = (means, log_scales) if logit_weights is None else (logit_weights, means, log_scales)
    needs_graph = torch.is_grad_enabled() and any(t.requires_grad for t in parameters)
    if needs_graph:
        log_probs = log_mass_with_own_gradients(means, log_scales, upper, lower)
    else:  # the IWAE's scores
        log_probs = log_mass_in_place(means, log_scales, upper, lower)
    if log_probs.shape[-1] == 1:  # one component: its weight is 1, and the log-sum-exp two passes for nothing
        if squared_error_gradients and needs_graph:
            log_probs = with_squared_error_gradients(log_probs, log_scales)
        return sum_pixels(log_probs.squeeze(-1))
    if squared_error_gradients:
        raise ValueError("squared_error_gradients: one component only")
    if logit_weights is None:
        raise ValueError(f"a mixture of {log_probs.shape[-1]} components needs its logit_weights")
    if pixel_components:
        log_probs = log_probs.sum(dim=-4)  # (..., H, W, K): each component's whole pixel
    mixed = torch.logsumexp(log_probs + F.log_softmax(logit_weights, dim=-1), dim=-1)
    return mixed.flatten(-2).sum(dim=-1) if pixel_components else sum_pixels(mixed)


def with_squared_error_gradients(log_probs: Tensor, log_scales: Tensor) -> Tensor:
    """Per sub-pixel log-probabilities (..., C, H, W, 1) with their values as they are and their gradients
    multiplied by the logistic's variance over the mean variance of the whole batch: beta-NLL with beta = 1
    (Seitzer et al. 2022). A location's gradient is then about the squared error's, not the squared error's
    over the scale squared, which starves the locations of the sub-pixels whose logistics are wide; one
    number for the batch weighs every image's error alike (over each image's own mean, the smooth images'
    errors outweighed the textured ones': 0.0081-0.0087 after 30 epochs on the photo patches, against
    0.0077-0.0078 so, docs/images.md)."""
    variance = torch.exp(2 * log_scales.detach())
    weight = variance / variance.mean()
    return weight * log_probs + (1 - weight) * log_probs.detach()


def channel_pairs(channels: int) -> int:
    """How many coupling coefficients a pixel's channels have per component: one per earlier channel."""
    return channels * (channels - 1) // 2


def couple_channels(locations: Tensor, coefficients: Tensor, values: Tensor | None = None) -> Tensor:
    """PixelCNN++'s coupling of a pixel's channels: each channel's location (..., C, H, W, K) plus
    tanh(coefficient) x the value of each channel before it (green on red, blue on red and green), with
    ``coefficients`` (..., channel_pairs(C), H, W, K) in that order and ``values`` the image on the [-1, 1]
    scale, (N, C, H, W, 1). ``values`` None: the channels' expected values under each component, the coupled
    locations of the channels before in place of their values (the tails folded onto the edge levels
    aside)."""
    coupled: list[Tensor] = []
    pair = 0
    for channel in range(locations.shape[-4]):
        location = locations[..., channel, :, :, :]
        for before in range(channel):
            value = coupled[before] if values is None else values[..., before, :, :, :]
            location = location + torch.tanh(coefficients[..., pair, :, :, :]) * value
            pair += 1
        coupled.append(location)
    return torch.stack(torch.broadcast_tensors(*coupled), dim=-4)  # the first channel has no values in it


def logistic_log_scale(std: float) -> float:
    """The log-scale, on the [-1, 1] scale of ``discretized_logistic_log_prob``, of a logistic whose
    standard deviation is ``std`` in image units ([0, 1]): a logistic's is its scale x pi / sqrt(3)."""
    return math.log(2 * std * math.sqrt(3) / math.pi)
