"""``ckpt=RUN`` without a data option evaluates, samples or trains on further with the data RUN trained on.

The architecture comes from the checkpoint (vaerun.stages.checkpoints); the data comes from the checkpoint's
run too, unless the command line picks a data option (``data=fashion_mnist``); the command line's
``data.KEY=VALUE`` overrides apply on top of the run's data (``data.batch_size=256``,
``data.normal_class=3``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from vaerun.core.checkpoints import run_of
from vaerun.core.errors import ConfigError, first_line
from vaerun.core.run_files import chosen_option, config_path, data_config

_DELETED = object()


def typed_keys(overrides: list[str]) -> list[str]:
    """The keys of Hydra overrides as typed: ``+data.a=1`` -> ``data.a``, ``~data.b`` -> ``data.b``."""
    return [override.split("=", 1)[0].lstrip("+~") for override in overrides]


def with_the_checkpoints_data(
    config: dict[str, Any], overrides: list[str]
) -> tuple[dict[str, Any], str | None]:
    """The config with its data replaced by the checkpoint's run's, and that run's data option (for the log);
    the config as it is, and None, where there is no ``ckpt``, the command line picks a data option, or the
    checkpoint is not in a run directory that saved its config."""
    keys = typed_keys(overrides)
    if config.get("ckpt") is None or "data" in keys:
        return config, None
    run_dir = run_of(Path(config["ckpt"]))
    try:
        data = data_config(run_dir)
    except Exception as err:  # an interpolation of another machine's environment, a damaged file
        raise ConfigError(
            f"ckpt: the data of its run ({config_path(run_dir)}) cannot be read ({first_line(err)}); "
            "pick the data with data=OPTION"
        ) from None
    if data is None:
        return config, None
    for path in (key.split(".")[1:] for key in keys if key.startswith("data.")):
        _set(data, path, _get(config["data"], path))
    return {**config, "data": data}, chosen_option(run_dir, "data") or "?"


def _get(node: Any, path: list[str]) -> Any:
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return _DELETED  # ~data.KEY: deleted from the command line's config
        node = node[part]
    return copy.deepcopy(node)


def _set(node: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if value is _DELETED:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
