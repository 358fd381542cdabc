"""The time a repeated piece of the work takes, summed without a host sync per piece on a GPU."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class IntervalTimer:
    """Sums the durations of ``with timer.interval(device):`` blocks: on a CPU by the wall clock; on a CUDA
    device by events recorded on the current stream around the block's work, read once by ``seconds``. A
    sync per block (to time the work rather than its launch) would stall the host until the GPU is idle,
    every block; the events cost one sync for them all."""

    def __init__(self) -> None:
        self._seconds = 0.0
        self._pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def interval(self, device: torch.device) -> Iterator[None]:
        if device.type != "cuda":
            start = time.perf_counter()
            yield
            self._seconds += time.perf_counter() - start
            return
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        yield
        end.record()
        self._pending.append((begin, end))

    @property
    def seconds(self) -> float:
        """The summed time so far (on a GPU: once the recorded work has run)."""
        if self._pending:
            self._pending[-1][1].synchronize()
            self._seconds += sum(begin.elapsed_time(end) for begin, end in self._pending) / 1000
            self._pending.clear()
        return self._seconds
