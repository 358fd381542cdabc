"""What every check shares: the error it raises and the type tests of plain config values."""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A config value outside what is allowed; the message names the key."""


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)
