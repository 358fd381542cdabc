"""Start-up checks of a composed config, in pure Python: each key's rule (``rules``, made of the kinds of
value in ``values``), and the checks that span keys or need the data's shape (``config``)."""

from vaerun.core.checks.config import (
    check_block_size,
    check_config,
    check_corruption,
    check_encoder,
    check_flow_training,
    check_likelihood,
    check_shape_dependent,
)
from vaerun.core.checks.rules import check_value, check_values, leaves, rule_for
from vaerun.core.checks.values import is_int, is_number
from vaerun.core.errors import ConfigError

__all__ = [
    "ConfigError",
    "check_block_size",
    "check_config",
    "check_corruption",
    "check_encoder",
    "check_flow_training",
    "check_likelihood",
    "check_shape_dependent",
    "check_value",
    "check_values",
    "is_int",
    "is_number",
    "leaves",
    "rule_for",
]
