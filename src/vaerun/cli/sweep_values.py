"""The values of a multirun's command line, each checked by its key's rule before the first run starts.

A run checks its whole config when it starts, so a value no config can take (``-m latent=2,8,x``) would
otherwise be found only when the sweep reaches its run, after the runs before it, possibly hours of jobs on
a cluster. Every value typed on the command line, each value of a sweep (``2,8,x``, ``choice(...)``,
``range(...)``) included, goes through its key's own rule first: a refused one ends the command with one
line before any run starts or any sweep folder is made. A value that only a whole config refuses (a block
larger than the images) still fails its run alone, and the sweep goes on (docs/sweeps.md).

Choices of a config group (``model=ae,vae``, ``logger=csv``) are options, not values: Hydra refuses an
option a group does not have before the first run. Values that interpolate (``${oc.env:SEED}``) are judged
in the run, where they resolve. ``resume=true`` is refused in any multirun: it moves a run into an earlier
run's directory, out of the sweep's folder; a sweep continues with the same command into its folder. Pure
Python and Hydra: decided before torch is imported.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override, RangeSweep
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vaerun.core.checks import check_value
from vaerun.core.errors import ConfigError, exit_with_error

#: resume=true moves a run into the directory of an earlier one: a sweep's jobs would leave its folder
RESUME_IN_A_SWEEP = (
    "resume=true continues one run; a sweep (or a search) continues with the same command into its folder, "
    "hydra.sweep.dir=outputs/multirun/DATE/TIME: its finished runs are skipped and its killed ones resume"
)

#: the sweeper whose runs are the command line's values: another (vaerun's optuna) checks its own space
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def check_command_line_values(overrides: list[str], groups: Collection[str]) -> None:
    """ConfigError, naming the override as typed, for the first value its key's rule refuses; ``groups``:
    the config groups, whose options are not checked here."""
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key in groups or override.is_delete():
            continue
        for value in _values_taken(override):
            if isinstance(value, str) and "${" in value:
                continue  # resolved in the run
            try:
                check_value(key, value)
            except ConfigError as err:
                raise ConfigError(f"{override.input_line}: {err}; no run started") from None


def _values_taken(override: Override) -> Iterator[Any]:
    """Each value the override gives its key over the sweep; none for the sweeps that draw them (interval,
    glob), which a basic sweep does not take."""
    if not override.is_sweep_override():
        yield override.value()
    elif isinstance(override.value(), ChoiceSweep | RangeSweep):
        yield from override.sweep_iterator()


class SweepValuesChecked(Callback):
    """Hydra callback: before a multirun makes its folder or starts a run, ``resume=true`` refused, and for a
    basic sweep every value of its command line checked by its key's rule; the first refused ends the
    command with one line."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("resume") is True:
            exit_with_error(RESUME_IN_A_SWEEP)
        if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            return
        groups = set(config.hydra.runtime.choices)
        try:
            check_command_line_values(list(config.hydra.overrides.task), groups)
        except ConfigError as err:
            exit_with_error(str(err))
