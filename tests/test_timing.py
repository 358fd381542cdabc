"""IntervalTimer: the summed time of repeated blocks (tests/test_gpu.py times GPU work by its events)."""

import torch

from vaerun.training import timing
from vaerun.training.timing import IntervalTimer


def test_on_a_cpu_the_intervals_are_summed_by_the_wall_clock_and_reading_adds_nothing(monkeypatch):
    ticks = iter([10.0, 10.5, 20.0, 20.25])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    timer = IntervalTimer()
    assert timer.seconds == 0.0
    for _ in range(2):
        with timer.interval(torch.device("cpu")):
            pass
    assert timer.seconds == 0.75 and timer.seconds == 0.75
