"""One component's discretized logistic from the decoder's raw outputs, its element-wise work fused by
torch.compile: log p(x | outputs) per image with the gradients on the outputs beside it (the ELBO's and
AIS's path, through an autograd Function), and log p(x | outputs) alone (the IWAE's).

The numbers are ``logistic_bins``'s (its form (2)), whose eager steps make about 45 passes over the k x N
x D values and a sum over the sub-pixels. Compiled, the value alone takes one loop, with its gradients
two, bound by the transcendentals: per sub-pixel an exp for the bounded location's tanh, one for the
scale, one for the bin's width over the scale (a series where the bin is narrow: ``bin_width_terms``), one
for each tail and a log (with the gradients, the location's tail terms sigmoid(-plus) and sigmoid(minus)
come from the sigmoids of |plus| and |minus| that the value takes). The kernels compile at their first
call, with symbolic sizes (the estimates' passes vary), and need what torch.compile needs: a C++ compiler
on a CPU, Triton on a GPU. ``compile=true`` turns them on
(``DiscretizedLogisticLikelihood.use_fused_kernels``); docs/speed.md has the numbers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from vaerun.models.logistic_bins import LogisticOutputs, log_mass
from vaerun.models.objectives import sum_pixels


def _as_rows(raw: Tensor, upper: Tensor, lower: Tensor) -> tuple[tuple[int, ...], Tensor, Tensor, Tensor]:
    """The leading shape that raw outputs (..., 2, C, H, W, 1) and the bins (..., C, H, W, 1) broadcast to,
    and the three as rows, one per image and sample: (R, 2, P), (R, P), (R, P) for P sub-pixels. Over rows
    the value alone compiles to one loop; over the outputs' own layout, whose locations and log-scales
    alternate by image, it made three, and took 7 ms where this takes 6 (for 50 x 13 images of 32 px)."""
    lead = torch.broadcast_shapes(raw.shape[:-5], upper.shape[:-4])
    sub_pixels = upper.shape[-4:].numel()
    rows = raw.expand(*lead, *raw.shape[-5:]).reshape(-1, 2, sub_pixels)
    upper_rows, lower_rows = (b.expand(*lead, *b.shape[-4:]).reshape(-1, sub_pixels) for b in (upper, lower))
    return lead, rows, upper_rows, lower_rows


def _bin_ends(rows: Tensor, upper: Tensor, lower: Tensor, outputs: LogisticOutputs) -> tuple[Tensor, ...]:
    """From rows (``_as_rows``): the location, the inverse scale, plus and minus, minus - plus (from the
    bin's width over the scale), and whether the log-scale lies within its clamp."""
    raw_means, raw_log_scales = rows.unbind(1)
    # tanh as 1 - 2 / (1 + e^2r): Inductor's vectorised tanh took 1.6 ms of the value's 6.7-ms kernel (50 x
    # 13 images of 32 px), the exp and the division a quarter of that
    means = 1 - 2 / (1 + torch.exp(2 * raw_means)) if outputs.bounded else raw_means
    log_scales = raw_log_scales + outputs.log_scale_offset
    low, high = outputs.log_scale_range
    inside = (log_scales >= low) & (log_scales <= high)
    inverse_scale = torch.exp(-log_scales.clamp(low, high))
    plus, minus = (upper - means) * inverse_scale, (lower - means) * inverse_scale
    negative_separation = inverse_scale * (lower - upper)  # not minus - plus: that cancels in the tails
    return means, inverse_scale, plus, minus, negative_separation, inside


#: 1 - e^-d = d - d^2/2! + d^3/3! - ...: the series' coefficients, to d^8 (below SERIES_LIMIT its remainder
#: is under 2e-8 of the sum, float32's rounding)
SERIES_COEFFICIENTS = tuple((-1) ** (n + 1) / math.factorial(n) for n in range(1, 9))
SERIES_LIMIT = 0.5


def bin_width_terms(negative_separation: Tensor) -> tuple[Tensor, Tensor]:
    """1 - e^s and e^s for s = minus - plus <= 0, without an expm1: from the series where |s| <
    SERIES_LIMIT (there 1 - e^s would cancel), else from the exp. Inductor's expm1 took 0.9 ms of the
    value kernel's 5.4 more than an exp (50 x 13 images of 32 px); the series is multiplications."""
    separation = -negative_separation
    near = separation < SERIES_LIMIT
    small = torch.where(near, separation, 0.0)  # the series only where it is read
    series = torch.full_like(small, SERIES_COEFFICIENTS[-1])
    for coefficient in reversed(SERIES_COEFFICIENTS[:-1]):
        series = series * small + coefficient
    series = series * small
    exponential = torch.exp(negative_separation)
    return torch.where(near, series, 1 - exponential), torch.where(near, 1 - series, exponential)


def log_prob_and_gradients_of_outputs(
    raw: Tensor, upper: Tensor, lower: Tensor, outputs: LogisticOutputs
) -> tuple[Tensor, Tensor]:
    """log p(x | outputs) per image of raw outputs (..., 2, C, H, W, 1): the bins' log-masses summed over the
    sub-pixels (...,); and the log-masses' derivatives with respect to the raw location and the raw
    log-scale, (..., 2, C, H, W, 1) laid out as the outputs are. The three are made as one stack, so that
    one loop computes all three."""
    lead, rows, upper, lower = _as_rows(raw, upper, lower)
    means, inverse_scale, plus, minus, negative_separation, inside = _bin_ends(rows, upper, lower, outputs)
    width, exponential = bin_width_terms(negative_separation)  # 1 - e^(minus - plus), e^(minus - plus)
    width_term = exponential / width * -negative_separation
    plus_tail, minus_tail = torch.sigmoid(plus.abs()), torch.sigmoid(minus.abs())
    below_plus = torch.where(plus < 0, plus_tail, 1 - plus_tail)  # sigmoid(-plus)
    above_minus = torch.where(minus < 0, 1 - minus_tail, minus_tail)  # sigmoid(minus)
    location_gradient = (above_minus - below_plus) * inverse_scale
    if outputs.bounded:
        location_gradient = location_gradient * (1 - means * means)
    log_scale_gradient = above_minus * minus - width_term - below_plus * plus
    log_scale_gradient = torch.where(inside, log_scale_gradient, 0.0)
    shift = torch.clamp(torch.maximum(minus, -plus), min=0)  # max(0, -plus, minus)
    value = torch.log(width * plus_tail * minus_tail) - shift
    stacked = torch.stack((value, location_gradient, log_scale_gradient), dim=1)
    gradients = stacked.narrow(1, 1, 2).reshape(*lead, *raw.shape[-5:])
    return stacked.select(1, 0).sum(dim=-1).reshape(lead), gradients


def log_prob_of_outputs(raw: Tensor, upper: Tensor, lower: Tensor, outputs: LogisticOutputs) -> Tensor:
    """log p(x | outputs) per image of raw outputs (..., 2, C, H, W, 1) alone."""
    lead, rows, upper, lower = _as_rows(raw, upper, lower)
    _, _, plus, minus, negative_separation, _ = _bin_ends(rows, upper, lower, outputs)
    shift = torch.clamp(torch.maximum(minus, -plus), min=0)
    # the tails' sigmoids over one division: 1 / ((1 + e^-|plus|) (1 + e^-|minus|))
    tails = (1 + torch.exp(-plus.abs())) * (1 + torch.exp(-minus.abs()))
    log_masses = torch.log(bin_width_terms(negative_separation)[0] / tails) - shift
    return log_masses.sum(dim=-1).reshape(lead)


@functools.cache
def _kernel(function: Callable) -> Callable:
    """``function`` compiled, once per process."""
    return torch.compile(function, dynamic=True)


class _FusedLogProbOfOutputs(torch.autograd.Function):
    """``logistic_bins._LogMassOfOutputs``, summed per image, with its forward one compiled kernel: the
    backward is one multiplication into a buffer laid out as the outputs. A gradient of this gradient
    (``create_graph``) goes through the plain steps, as there."""

    @staticmethod
    def forward(ctx, raw: Tensor, upper: Tensor, lower: Tensor, outputs: LogisticOutputs) -> Tensor:
        # detached: the compiler would read a non-leaf's .grad, which warns
        kernel = _kernel(log_prob_and_gradients_of_outputs)
        log_prob, gradients = kernel(raw.detach(), upper.detach(), lower.detach(), outputs)
        ctx.outputs = outputs
        ctx.save_for_backward(raw, upper, lower, gradients)
        return log_prob

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        raw, upper, lower, gradients = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the plain steps, so the result has a graph
            with torch.enable_grad():
                values = sum_pixels(log_mass(*ctx.outputs.started(*raw.unbind(-5)), upper, lower).squeeze(-1))
            return torch.autograd.grad(values, raw, grad, create_graph=True)[0], None, None, None
        gradient = torch.mul(gradients, grad.reshape(*grad.shape, 1, 1, 1, 1, 1))
        return gradient.sum_to_size(raw.shape), None, None, None  # the bins may broadcast beyond raw


def fused_log_prob_of_outputs(raw: Tensor, upper: Tensor, lower: Tensor, outputs: LogisticOutputs) -> Tensor:
    """``logistic_bins.log_mass_of_outputs`` summed per image, fused: for autograd, its gradients computed in
    the kernel."""
    return _FusedLogProbOfOutputs.apply(raw, upper, lower, outputs)


def fused_log_prob_of_outputs_value(
    raw: Tensor, upper: Tensor, lower: Tensor, outputs: LogisticOutputs
) -> Tensor:
    """``logistic_bins.log_mass_of_outputs_in_place`` summed per image, fused, without a graph; ``raw`` is
    left as it is."""
    return _kernel(log_prob_of_outputs)(raw, upper, lower, outputs)
