"""Adaptive gradient clipping (AutoClip, Seetharaman et al. 2020): each step's gradient norm is clipped at a
percentile of the norms of the steps before it. The limit follows norms that grow as training goes on (a
learned likelihood scale that narrows multiplies them tenfold and more within 5 epochs), where a fixed
``gradient_clip_val`` would cut every late step, and it cuts the rare step far above the rest. The norms stay
on the device: no host sync per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

#: how many of the latest steps' norms the percentile is taken over (AutoClip keeps them all; this bounds
#: the per-step cost of the percentile, about 0.1 ms on a CPU, whatever the run's length)
NORM_WINDOW = 10_000


def percentile_limit(norms: Tensor, percentile: float) -> Tensor:
    """The ``percentile`` (0-100] of the recorded norms, NaN entries being slots not yet recorded; +inf while
    none is (the first step is not clipped)."""
    return torch.nanquantile(norms, percentile / 100).nan_to_num(nan=math.inf)


def clip_to_norm_(gradients: list[Tensor], limit: Tensor) -> Tensor:
    """Scale ``gradients`` in place so that their joint 2-norm is at most ``limit``; their norm before."""
    total = torch.nn.utils.get_total_norm(gradients)
    torch._foreach_mul_(gradients, (limit / (total + 1e-6)).clamp(max=1.0))
    return total


class PercentileClipping:
    """The clipping and its record of past norms (saved in checkpoints, so a resumed run clips as the
    uninterrupted one would)."""

    def __init__(self, percentile: float, window: int = NORM_WINDOW) -> None:
        self.percentile = float(percentile)
        self.norms = torch.full((window,), math.nan)
        self.steps = 0

    def clip_(self, parameters: Iterable[Tensor]) -> Tensor:
        """Clip the parameters' gradients at the percentile of the norms so far and record their norm before
        (a non-finite one, a half-precision overflow, as not recorded); that norm."""
        gradients = [p.grad for p in parameters if p.grad is not None]
        if self.norms.device != gradients[0].device:
            self.norms = self.norms.to(gradients[0].device)
        total = clip_to_norm_(gradients, percentile_limit(self.norms, self.percentile))
        self.norms[self.steps % len(self.norms)] = torch.where(total.isfinite(), total, math.nan)
        self.steps += 1
        return total

    def state_dict(self) -> dict[str, Tensor | int]:
        return {"norms": self.norms.cpu(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        self.norms, self.steps = state["norms"].clone(), int(state["steps"])
