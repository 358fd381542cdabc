"""Start-up work of Hydra's that vae-run does without, behind one function: Hydra composes the whole
config once more before every command only to read ``hydra.mode`` (run or multirun), a quarter of a
second. No shipped config sets it (tests/test_adapters.py checks, and that Hydra's internal method is
still the one replaced here); where nothing else could set it (no --config-dir, no ``hydra.mode=`` on the
command line) the mode is the command line's own (``-m`` or not), as it would be anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _mode_of_the_command_line(self: Any, config_name: str | None, overrides: list[str]) -> None:
    return None  # Hydra then runs, or multiruns with -m


@contextlib.contextmanager
def without_mode_composition(folders: list[Path], overrides: list[str]) -> Iterator[None]:
    """Inside: Hydra takes the run mode from the command line, unless a config of the user's could set
    it (``folders`` beyond the package's, or ``hydra.mode`` among the overrides)."""
    if len(folders) > 1 or any(o.lstrip("+~").startswith("hydra.mode") for o in overrides):
        yield
        return
    from hydra._internal.hydra import Hydra

    composing = Hydra.get_mode
    Hydra.get_mode = _mode_of_the_command_line
    try:
        yield
    finally:
        Hydra.get_mode = composing
