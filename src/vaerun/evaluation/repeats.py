"""Runs that repeat one config with another seed: grouped, so that a sweep's summary shows each config's
mean and spread over its seeds rather than a line that zigzags from seed to seed."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from vaerun.evaluation.run_records import RunRecord

#: override keys whose values repeat a config rather than change it
REPEAT_KEYS = ("seed",)


def config_key(record: RunRecord, keys: Sequence[str]) -> tuple[str, ...]:
    """What tells a run's config apart from the others' in a sweep: its model and its values of ``keys``."""
    return (record.model, *(record.overrides.get(key, "") for key in keys))


def by_config(records: Sequence[RunRecord], keys: Sequence[str]) -> dict[tuple[str, ...], list[RunRecord]]:
    """The runs grouped by ``config_key``, in the order the configs first appear."""
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for record in records:
        groups.setdefault(config_key(record, keys), []).append(record)
    return groups


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """The mean of the values and their sample standard deviation (NaN for one value: no spread to tell)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan
