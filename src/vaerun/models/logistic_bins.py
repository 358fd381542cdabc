"""The log-mass of a logistic over the bins of a discretized level, several ways with the same numbers.

A bin [lower, upper] of a logistic (location ``means``, log-scale ``log_scales``) has the mass
sigmoid(plus) - sigmoid(minus), plus = (upper - mean) / scale, minus = (lower - mean) / scale. Its log,
exactly and stably wherever the bin lies, is

    log(1 - e^(minus - plus)) - softplus(-plus) - softplus(minus)                               (1)
    = log((1 - e^(minus - plus)) / ((1 + e^-|plus|) (1 + e^-|minus|))) - max(0, -plus, minus)   (2)

whose first term depends on the bin's width over the scale alone. (2) takes one log and two sigmoids where
(1) takes two softplus, each costlier than an exp and a log together; autograd through (2)'s many steps,
though, costs more than through (1)'s. So: ``log_mass`` is (1) for autograd, ``log_mass_in_place`` is (2)
without a graph (a mixture's IWAE), ``log_mass_with_own_gradients`` is (2) with its gradients in closed
form (the ELBO, AIS), and ``log_mass_of_outputs`` the same from the decoder's raw outputs, the location's
tanh and the log-scale's clamp inside (one component: the ELBO's and AIS's usual case);
``log_mass_of_outputs_in_place`` is (2) from them without a graph, in their own buffers (one component's
IWAE). None of them takes the exp of a number far from 0, whose result, subnormal or infinite, some CPUs
take 10 to 50 times as long over (torch's sigmoid does not slow down so).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

#: where the lowest level's bin begins and the highest's ends, on the [-1, 1] scale: over 900 scales out
#: even for the widest logistic the clamp allows (e^7), so the mass beyond is 0 in float32, and finite, so
#: that the tails' gradients are 0 rather than 0 x inf
OPEN_EDGE = 1e6


def bin_edges(x: Tensor, levels: int = 256) -> tuple[Tensor, Tensor]:
    """The upper and lower edges (..., 1) of the bins of images x (N, C, H, W) in [0, 1] on ``levels``
    levels, on the [-1, 1] scale; the edge levels' bins reach out to +-OPEN_EDGE."""
    x = (x * 2 - 1).to(torch.promote_types(x.dtype, torch.float32))
    half_bin = 1.0 / (levels - 1)
    upper = torch.where(x > 1 - half_bin, OPEN_EDGE, x + half_bin).unsqueeze(-1)
    lower = torch.where(x < -1 + half_bin, -OPEN_EDGE, x - half_bin).unsqueeze(-1)
    return upper, lower


def log_mass(means: Tensor, log_scales: Tensor, upper: Tensor, lower: Tensor) -> Tensor:
    """(1) in autograd's plain steps: what the other two are checked against, and what a gradient of a
    gradient (the Hamiltonian posterior's training) differentiates."""
    inverse_scale = torch.exp(-log_scales)
    plus, minus = inverse_scale * (upper - means), inverse_scale * (lower - means)
    log_width = torch.log(-torch.expm1(inverse_scale * (lower - upper)))
    return log_width - F.softplus(-plus) - F.softplus(minus)


def _bin_ends(means: Tensor, log_scales: Tensor, upper: Tensor, lower: Tensor) -> tuple[Tensor, ...]:
    """The inverse scale, plus and minus, each in a buffer of its own."""
    inverse_scale = log_scales.neg().exp_()
    return inverse_scale, (upper - means).mul_(inverse_scale), (lower - means).mul_(inverse_scale)


def _log_mass_from(
    negative_width: Tensor, plus: Tensor, minus: Tensor, spare: Tensor | None = None
) -> Tensor:
    """(2) from e^(minus - plus) - 1, plus and minus, into their buffers (and ``spare``'s, if given)."""
    shift = torch.maximum(minus, plus.neg_(), out=spare).clamp_(min=0)  # max(0, -plus, minus)
    tails = plus.abs_().sigmoid_().mul_(minus.abs_().sigmoid_())  # 1 / ((1 + e^-|plus|)(1 + e^-|minus|))
    return negative_width.mul_(tails).neg_().log_().sub_(shift)


def log_mass_in_place(means: Tensor, log_scales: Tensor, upper: Tensor, lower: Tensor) -> Tensor:
    """(2) without a graph, each step into a buffer it frees."""
    inverse_scale, plus, minus = _bin_ends(means, log_scales, upper, lower)
    span = lower - upper  # into inverse_scale's buffer where it has the full shape (the IWAE's)
    scaled = inverse_scale.mul_(span) if inverse_scale.shape == plus.shape else inverse_scale * span
    return _log_mass_from(scaled.expm1_(), plus, minus)  # expm1: e^(minus - plus) - 1


def _value_and_gradients(
    means: Tensor, log_scales: Tensor, upper: Tensor, lower: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(2) and its derivatives with respect to the location and the log-scale (``_LogMassWithOwnGradients``
    says how), in nine buffers of the full size, each step after into one of them: a fresh buffer is new
    memory to the process, and costs about as much as a pass of arithmetic over it."""
    inverse_scale, plus, minus = _bin_ends(means, log_scales, upper, lower)
    negative_separation = inverse_scale * (lower - upper)  # not minus - plus: that cancels in the tails
    negative_width = torch.expm1(negative_separation)  # e^(minus - plus) - 1
    width_term = negative_width.add(1).div_(negative_width).mul_(negative_separation)  # r (plus - minus)
    below_plus, above_minus = plus.neg().sigmoid_(), torch.sigmoid(minus)
    # d/dlog_scale: -plus (sigmoid(-plus) + r) + minus (sigmoid(minus) + r)
    log_scale_gradient = torch.mul(above_minus, minus).sub_(width_term)
    log_scale_gradient.sub_(torch.mul(below_plus, plus, out=width_term))
    location_gradient = above_minus.sub_(below_plus).mul_(inverse_scale)
    value = _log_mass_from(negative_width, plus, minus, spare=below_plus)
    return value, location_gradient, log_scale_gradient


class _LogMassWithOwnGradients(torch.autograd.Function):
    """(2), with the gradients on the location and the log-scale computed beside the value: d/dplus =
    sigmoid(-plus) + r, d/dminus = -sigmoid(minus) - r, r = e^(minus - plus) / (1 - e^(minus - plus)) the
    width's, and plus, minus scale with 1 / scale. A gradient of this gradient (``create_graph``) goes
    through ``log_mass`` again, so that it is a true second derivative."""

    @staticmethod
    def forward(ctx, means: Tensor, log_scales: Tensor, upper: Tensor, lower: Tensor) -> Tensor:
        value, location_gradient, log_scale_gradient = _value_and_gradients(means, log_scales, upper, lower)
        ctx.save_for_backward(means, log_scales, upper, lower, location_gradient, log_scale_gradient)
        return value

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        means, log_scales, upper, lower, location_gradient, log_scale_gradient = ctx.saved_tensors
        wanted = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():  # create_graph: differentiate (1) itself, so the result has a graph
            inputs = [tensor for tensor, needed in zip((means, log_scales), wanted, strict=True) if needed]
            with torch.enable_grad():
                values = log_mass(means, log_scales, upper, lower)
            found = iter(torch.autograd.grad(values, inputs, grad, create_graph=True))
            return (*(next(found) if needed else None for needed in wanted), None, None)
        return (
            (grad * location_gradient).sum_to_size(means.shape) if wanted[0] else None,
            (grad * log_scale_gradient).sum_to_size(log_scales.shape) if wanted[1] else None,
            None,
            None,
        )


def log_mass_with_own_gradients(means: Tensor, log_scales: Tensor, upper: Tensor, lower: Tensor) -> Tensor:
    """(2) for autograd, its backward two multiplications (``_LogMassWithOwnGradients``)."""
    return _LogMassWithOwnGradients.apply(means, log_scales, upper, lower)


class LogisticOutputs(NamedTuple):
    """How a decoder's raw outputs become a logistic's location and log-scale: location = tanh(raw) where
    ``bounded`` (else the raw output), log-scale = clamp(raw + ``log_scale_offset``, *``log_scale_range``)."""

    bounded: bool
    log_scale_offset: float
    log_scale_range: tuple[float, float]

    def started(self, raw_means: Tensor, raw_log_scales: Tensor) -> tuple[Tensor, Tensor]:
        """The locations and log-scales in autograd's plain steps where there is a graph (the likelihood's
        general path, and ``log_mass_of_outputs``'s reference and second derivative)."""
        means = fast_tanh(raw_means) if self.bounded else raw_means
        return means, torch.add(raw_log_scales, self.log_scale_offset).clamp_(*self.log_scale_range)


class _LogMassOfOutputs(torch.autograd.Function):
    """``_LogMassWithOwnGradients`` from the decoder's raw outputs, stacked (..., 2, C, H, W, 1) as it outputs
    them: the tanh and the log-scale's shift and clamp inside, so that their backward steps are two
    multiplications into the gradients already there, and the gradient on both comes back in one buffer
    laid out as the outputs are (autograd would first make one for each and then join them)."""

    @staticmethod
    def forward(ctx, raw: Tensor, upper: Tensor, lower: Tensor, outputs: LogisticOutputs) -> Tensor:
        raw_means, raw_log_scales = raw.unbind(-5)
        means = fast_tanh(raw_means) if outputs.bounded else raw_means  # a new buffer: no graph in here
        log_scales = torch.add(raw_log_scales, outputs.log_scale_offset)
        low, high = outputs.log_scale_range
        inside = (log_scales >= low).logical_and_(log_scales <= high)  # the clamp's gradient: 1 within
        clamped = log_scales.clamp_(low, high)
        value, location_gradient, log_scale_gradient = _value_and_gradients(means, clamped, upper, lower)
        log_scale_gradient.mul_(inside)
        if outputs.bounded:  # tanh' = 1 - tanh^2, into the locations' buffer
            location_gradient.mul_(means.square_().neg_().add_(1))
        ctx.outputs = outputs
        ctx.save_for_backward(raw, upper, lower, location_gradient, log_scale_gradient)
        return value

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        raw, upper, lower, location_gradient, log_scale_gradient = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the plain steps, so the result has a graph
            with torch.enable_grad():
                values = log_mass(*ctx.outputs.started(*raw.unbind(-5)), upper, lower)
            return torch.autograd.grad(values, raw, grad, create_graph=True)[0], None, None, None
        gradient = torch.empty_like(raw)
        for part, own in zip(gradient.unbind(-5), (location_gradient, log_scale_gradient), strict=True):
            if own.shape == part.shape:
                torch.mul(grad, own, out=part)
            else:  # the values broadcast beyond the outputs' shape
                part.copy_((grad * own).sum_to_size(part.shape))
        return gradient, None, None, None


def log_mass_of_outputs(raw: Tensor, upper: Tensor, lower: Tensor, outputs: LogisticOutputs) -> Tensor:
    """The bins' log-masses from the decoder's raw outputs (..., 2, C, H, W, 1) (``_LogMassOfOutputs``)."""
    return _LogMassOfOutputs.apply(raw, upper, lower, outputs)


def log_mass_of_outputs_in_place(
    raw: Tensor, upper: Tensor, lower: Tensor, outputs: LogisticOutputs
) -> Tensor:
    """``log_mass_of_outputs`` without a graph, in ``raw``'s buffers and one more (the IWAE's): ``raw`` is
    overwritten. Each bin's ends from the bounded location's sigmoid, edge - tanh(r) = (edge + 1) - 2
    sigmoid(2r), which spares a buffer and two passes of the tanh; the log-scales become the inverse scales
    where they are. Over the IWAE's 32-px passes, a new buffer cost about as much as three passes in place
    (the decoder and the likelihood together took 48 ms against 52 on the 2-core Xeon, a one-off check)."""
    means, log_scales = raw.unbind(-5)
    if outputs.bounded:
        halves = means.mul_(2).sigmoid_()
        minus = torch.sub(lower + 1, halves, alpha=2)
        plus = torch.sub(upper + 1, halves, alpha=2, out=means)
    else:
        minus = torch.sub(lower, means)
        plus = torch.sub(upper, means, out=means)
    low, high = outputs.log_scale_range
    inverse_scale = log_scales.add_(outputs.log_scale_offset).clamp_(low, high).neg_().exp_()
    plus.mul_(inverse_scale)
    minus.mul_(inverse_scale)
    return _log_mass_from(inverse_scale.mul_(lower - upper).expm1_(), plus, minus)  # e^(minus - plus) - 1


def fast_tanh(x: Tensor) -> Tensor:
    """tanh, for the bounded locations; without a graph as 2 sigmoid(2x) - 1: the same to float32's
    rounding, and on some CPUs (AMD EPYC, AVX2) in a third of torch.tanh's time, over the IWAE's k x N x D
    locations."""
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.tanh(x)
    return torch.mul(x, 2).sigmoid_().mul_(2).sub_(1)  # one new buffer, each step after into it
