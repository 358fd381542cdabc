"""The kinds of value a config key may take: each a rule ``rule(key, value)`` that raises ConfigError naming
the key and what is allowed, phrased one way everywhere ("an integer >= 1", "a number > 0", "a number in
[0, 1]"). ``vaerun.core.checks.rules`` gives each key its rule."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from vaerun.core.errors import ConfigError

Rule = Callable[[str, Any], None]


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _fail(key: str, allowed: str, value: Any) -> None:
    raise ConfigError(f"{key} must be {allowed}, got {value!r}")


def flag(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(key, "true or false", value)


def optional_flag(key: str, value: Any) -> None:
    if value is not None:
        flag(key, value)


def text(key: str, value: Any) -> None:
    if not isinstance(value, str):
        _fail(key, "a string", value)


def optional_text(key: str, value: Any) -> None:
    if value is not None:
        text(key, value)


def path(key: str, value: Any) -> None:
    """A file or folder: "" (``KEY=`` on the command line) would be the working directory."""
    if not isinstance(value, str) or not value.strip():
        _fail(key, "a path (empty, it would be the working directory)", value)


def optional_path(key: str, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        _fail(key, "a path or null (empty, it would be the working directory)", value)


def no_block(key: str, value: Any) -> None:
    """A key that is null, or a block with a ``_target_`` (then its leaves are checked, not the key)."""
    if value is not None:
        _fail(key, "null, or a block with a _target_ (and _partial_: true)", value)


def target(key: str, value: Any) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", value):
        _fail(key, "a dotted import path (module.Class)", value)


def int_at_least(minimum: int, optional: bool = False) -> Rule:
    def rule(key: str, value: Any) -> None:
        if optional and value is None:
            return
        if not is_int(value) or value < minimum:
            _fail(key, f"{'null or ' if optional else ''}an integer >= {minimum}", value)

    return rule


def _bounds(low: float, high: float | None, low_open: bool, high_open: bool) -> str:
    """How every range is said: "> 0", ">= 0", "in [0, 1]", "strictly between 0 and 1"."""
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    if low_open and high_open:
        return f"strictly between {low:g} and {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def number_in(
    low: float,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> Rule:
    """A finite number from low to high (either end excluded where open; no high: unbounded), or null where
    optional."""
    bounds = _bounds(low, high, low_open, high_open)

    def rule(key: str, value: Any) -> None:
        if optional and value is None:
            return
        if (
            not is_number(value)
            or (value <= low if low_open else value < low)
            or (high is not None and (value >= high if high_open else value > high))
        ):
            _fail(key, f"{'null or ' if optional else ''}a number {bounds}", value)

    return rule


def int_in(low: int, high: int, why: str = "") -> Rule:
    def rule(key: str, value: Any) -> None:
        if not is_int(value) or not low <= value <= high:
            _fail(key, f"an integer in [{low}, {high}]{why}", value)

    return rule


def odd_int(key: str, value: Any) -> None:
    if not is_int(value) or value < 1 or value % 2 == 0:
        _fail(key, "an odd integer >= 1", value)


def positive_ints(optional: bool = False) -> Rule:
    """A list of integers >= 1 (the layer sizes of a network); empty allowed where ``optional``."""

    def rule(key: str, value: Any) -> None:
        if value is None:
            return
        ok = isinstance(value, list | tuple) and (optional or len(value) > 0)
        if not ok or not all(is_int(n) and n >= 1 for n in value):
            _fail(key, f"{'a' if optional else 'a non-empty'} list of integers >= 1", value)

    return rule


def unit_interval_list(key: str, value: Any) -> None:
    if not isinstance(value, list | tuple) or not all(is_number(r) and 0 < r < 1 for r in value):
        _fail(key, "a list of numbers strictly between 0 and 1", value)


def variance_samples(key: str, value: Any) -> None:
    if not is_int(value) or value == 1 or value < 0:
        _fail(key, "0 (off) or an integer >= 2", value)


def class_label(key: str, value: Any) -> None:
    """A label, or a class's name (an image folder's sub-folder), which the data resolves to its label."""
    named = isinstance(value, str) and value.strip() != ""
    if value is not None and not named and (not is_int(value) or value < 0):
        _fail(key, "null or a class label (an integer >= 0, or a class's name)", value)


def latent(key: str, value: Any) -> None:
    if not is_int(value) or value < 1:
        _fail(key, "an integer >= 1 (the latent dimension)", value)


def choice(*allowed: Any) -> Rule:
    def rule(key: str, value: Any) -> None:
        if value not in allowed:
            # None as the config files spell it
            _fail(key, f"one of {', '.join('null' if a is None else str(a) for a in allowed)}", value)

    return rule


def _is_seed(value: Any) -> bool:
    return is_int(value) and 0 <= value < 2**32


def seed(key: str, value: Any) -> None:
    if not _is_seed(value):
        _fail(key, "an integer in [0, 2**32 - 1] (numpy's seeds)", value)


def optional_seed(key: str, value: Any) -> None:
    """A seed, or null for none (an Optuna sampler's)."""
    if value is not None and not _is_seed(value):
        _fail(key, "null or an integer in [0, 2**32 - 1] (numpy's seeds)", value)


def batch_limit(key: str, value: Any) -> None:
    """Lightning's limit_*_batches: a count of batches or a fraction of them."""
    if value is not None and not (
        (is_int(value) and value >= 0) or (isinstance(value, float) and 0 <= value <= 1)
    ):
        _fail(key, "null, a number of batches >= 0 or a fraction in [0.0, 1.0]", value)


def val_check_interval(key: str, value: Any) -> None:
    if value is not None and not (
        (is_int(value) and value >= 1) or (isinstance(value, float) and 0 < value <= 1)
    ):
        _fail(key, "null, a number of steps >= 1 or a fraction of the epoch in (0.0, 1.0]", value)


def devices(key: str, value: Any) -> None:
    ok = value == "auto" or (is_int(value) and (value >= 1 or value == -1))
    ok = ok or (isinstance(value, list) and value and all(is_int(n) and n >= 0 for n in value))
    if not ok:
        _fail(key, "auto, -1 (all), a number of devices >= 1 or a list of device indices", value)


def deterministic(key: str, value: Any) -> None:
    if value is not None and value != "warn" and not isinstance(value, bool):
        _fail(key, "null, true, false or warn", value)


def probability_pair(key: str, value: Any) -> None:
    if not (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(is_number(b) and 0 <= b < 1 for b in value)
    ):
        _fail(key, "a pair of numbers in [0, 1)", value)


def mapping_of_targets(key: str, value: Any) -> None:
    """A logger or callbacks group: named entries, each a ``_target_`` and its arguments."""
    if not isinstance(value, Mapping) or not all(
        isinstance(v, Mapping) and "_target_" in v for v in value.values()
    ):
        _fail(key, "named entries, each with a _target_ (see configs/logger, configs/callbacks)", value)
