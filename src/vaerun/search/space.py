"""The search space from Hydra's own sweep syntax: each swept override becomes an Optuna distribution.

    latent=choice(2,8,16)  or  latent=2,8,16     categorical
    data.batch_size=range(32,257,32)             integers 32 to 256 in steps of 32 (range excludes its end)
    model.beta=interval(0.5,4)                   a float in [0.5, 4]
    optimizer.lr=tag(log,interval(1e-4,1e-2))    the same on a log scale
    encoder.width=tag(int,interval(64,512))      an integer in [64, 512] (with log: on a log scale)

Overrides without a sweep (``data=digits``) are passed to every trial as they are.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

from vaerun.core.checks import check_value
from vaerun.core.errors import ConfigError


@dataclass(frozen=True)
class Dimension:
    """One searched key: its name as the trial's override writes it, and how its value is drawn."""

    key: str  # the override's key, with a leading + or ++ kept (latent, +model.beta)
    kind: str  # "categorical", "int" or "float"
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    @property
    def name(self) -> str:
        """The parameter's name in the study: the config key, without + or ~."""
        return self.key.lstrip("+~")

    def distribution(self) -> Any:
        import optuna

        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)


def dimension(override: Override, groups: Collection[str] = ()) -> Dimension:
    """The Optuna distribution of one swept override; ConfigError (naming the key) for what has none, or
    for a range that reaches values the key's rule refuses (every trial there would fail). A config
    group's options (``groups``: ``logger=choice(csv, tensorboard)``) are Hydra's to refuse."""
    searched, sweep = _dimension(override), override.value()
    if override.key_or_group in groups:
        return searched
    reached = sweep.list if isinstance(sweep, ChoiceSweep) else [searched.low, searched.high]
    for value in reached:
        try:
            check_value(searched.name, value)
        except ConfigError as err:
            hint = ""
            if searched.kind == "float" and "integer" in str(err):
                hint = f"; tag(int, interval({searched.low:g}, {searched.high:g})) draws integers"
            raise ConfigError(
                f"{_as_written(override)}: the search reaches {value!r}, and {err}{hint}"
            ) from None
    return searched


def _dimension(override: Override) -> Dimension:
    key, sweep = override.get_key_element(), override.value()
    if isinstance(sweep, ChoiceSweep):
        # Optuna's categories are numbers, strings, booleans or None; a list or dict (encoder.hidden=
        # choice([256,128],[512,256])) is kept as its text in Hydra's syntax, which the override reads back
        choices = tuple(value if _is_scalar(value) else hydra_text(value) for value in sweep.list)
        if not choices:
            raise ConfigError(f"{key}: choice() needs at least one value")
        return Dimension(key, "categorical", choices=choices)
    if isinstance(sweep, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(f"{key}: range({sweep.start}, {sweep.stop}, {sweep.step}) is empty")
        integers = all(isinstance(value, int) for value in values)
        return Dimension(
            key,
            "int" if integers else "float",
            low=min(values),
            high=max(values),
            step=abs(sweep.step) if len(values) > 1 else None,
        )
    if isinstance(sweep, IntervalSweep):
        assert sweep.start is not None and sweep.end is not None
        low, high = sorted((sweep.start, sweep.end))
        log = "log" in sweep.tags
        if log and low <= 0:
            raise ConfigError(f"{key}: a log-scale interval needs a positive start, got {low:g}")
        if "int" in sweep.tags:
            if int(low) != low or int(high) != high:
                raise ConfigError(
                    f"{key}: tag(int, interval(...)) needs whole-number ends, got {low:g}, {high:g}"
                )
            return Dimension(key, "int", low=int(low), high=int(high), log=log)
        return Dimension(key, "float", low=low, high=high, log=log)
    raise ConfigError(
        f"{key}: the optuna sweeper does not search {type(sweep).__name__}; use choice, range or interval"
    )


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def hydra_text(value: Any) -> str:
    """A value as the override grammar writes it: [512,256], {a:1}."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_text(item)}" for key, item in value.items()) + "}"
    return "null" if value is None else str(value)


def as_override(dimension: Dimension, value: Any) -> str:
    """The trial's command-line override for a drawn value."""
    if isinstance(value, str):
        return f"{dimension.key}={value}"
    if isinstance(value, float):
        return f"{dimension.key}={value!r}"
    return f"{dimension.key}={value}"


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]
    fixed: tuple[str, ...]  # the overrides every trial gets as they are

    def distributions(self) -> dict[str, Any]:
        return {d.name: d.distribution() for d in self.dimensions}

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """A trial's overrides: the fixed ones, then one per searched key with its drawn value."""
        return [*self.fixed, *(as_override(d, params[d.name]) for d in self.dimensions)]


def _as_written(override: Override) -> str:
    if override.input_line:
        return override.input_line
    if override.is_delete():
        return f"{override.get_key_element()}"
    return f"{override.get_key_element()}={override.get_value_element_as_str()}"


def search_space(overrides: list[Override], groups: Collection[str] = ()) -> SearchSpace:
    """The searched dimensions and fixed overrides of a parsed command line (and hydra.sweeper.params);
    a key given twice takes its last value, as Hydra does. ``groups``: the config groups."""
    by_key: dict[str, Override] = {}
    for override in overrides:
        by_key[override.get_key_element()] = override
    dimensions = tuple(dimension(o, groups) for o in by_key.values() if o.is_sweep_override())
    fixed = tuple(_as_written(o) for o in by_key.values() if not o.is_sweep_override())
    if not dimensions:
        raise ConfigError(
            "hydra.sweeper.params: nothing to search; give a key a range, e.g. "
            "'optimizer.lr=tag(log, interval(1e-4, 1e-2))' or 'latent=choice(2, 8, 16)'"
        )
    return SearchSpace(dimensions, fixed)
