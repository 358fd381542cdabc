"""Learning-rate schedules, picked with the top-level ``lr_schedule`` key (a ``_target_`` taking the
optimizer; null: a constant rate). Lightning steps them once per epoch."""

from __future__ import annotations

import bisect
import itertools

import torch
from torch.optim.lr_scheduler import LambdaLR


def burda_passes(
    optimizer: torch.optim.Optimizer, passes: int = 8, growth: int = 3, decay: float = 10 ** (-1 / 7)
) -> LambdaLR:
    """Burda et al. (2016)'s schedule: pass i = 0 .. passes-1 lasts growth^i epochs at the optimizer's rate
    times decay^i (8 passes of 3^i epochs, 3,280 in all, the rate falling by 10 over 7 passes); after the
    last pass the last rate stays."""
    ends = list(itertools.accumulate(growth**i for i in range(passes)))

    def factor(epoch: int) -> float:
        return decay ** min(bisect.bisect_right(ends, epoch), passes - 1)

    return LambdaLR(optimizer, factor)
