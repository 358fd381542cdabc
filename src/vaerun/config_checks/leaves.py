"""The type and range of config keys that the run hands on to other libraries as they are: Lightning's
Trainer, the optimizer, the data sources, the loggers and callbacks, and every ``_target_``.

One rule per key pattern (``fnmatch`` on the dotted key, first match wins); a rule is a function
``rule(key, value)`` that raises ConfigError naming the key and what is allowed, as every check here does.
Keys a user adds (``+trainer.benchmark=true``) that no rule knows are handed on, and what the library then
refuses is answered the same way (vaerun.stages.assembly).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from typing import Any

from vaerun.config_checks.values import ConfigError, is_int, is_number

Rule = Callable[[str, Any], None]

#: Lightning's precisions (its Trainer refuses others) and accelerators
PRECISIONS = (
    "32-true",
    "32",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "64-true",
    "64",
    "transformer-engine",
)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
BINARIZATIONS = ("none", "dynamic", "static")


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


def number_in(low: float, high: float | None = None, low_open: bool = False, optional: bool = False) -> Rule:
    """A finite number in [low, high] (low excluded with ``low_open``), or null where optional."""
    bounds = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"

    def rule(key: str, value: Any) -> None:
        if optional and value is None:
            return
        if (
            not is_number(value)
            or (value <= low if low_open else value < low)
            or (high is not None and value > high)
        ):
            _fail(key, f"{'null or ' if optional else ''}a number in {bounds}", value)

    return rule


def choice(*allowed: Any) -> Rule:
    def rule(key: str, value: Any) -> None:
        if value not in allowed:
            _fail(key, f"one of {', '.join(map(str, allowed))}", value)

    return rule


def seed(key: str, value: Any) -> None:
    if not is_int(value) or not 0 <= value < 2**32:
        _fail(key, "an integer in [0, 2**32 - 1] (numpy's seeds)", value)


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


LEAF_RULES: dict[str, Rule] = {
    # everything built by instantiate
    "*._target_": target,
    "*._partial_": flag,
    "seed": seed,
    "*.seed": seed,
    "*.split_seed": seed,
    "*.binarize_seed": seed,
    # the data
    "data.binarize": choice(*BINARIZATIONS),
    "data.image_size": int_at_least(1, optional=True),
    "data.channels": choice(None, 1, 3),
    "anomaly.background_ckpt": optional_text,
    "data.device_memory_fraction": number_in(0, 1),
    "data.max_host_memory_gb": number_in(0, optional=True),
    "data.source.image_size": int_at_least(1, optional=True),
    "data.source.channels": choice(None, 1, 3),
    "data.source.crop": int_at_least(1, optional=True),
    "data.source.cache_dir": optional_text,
    "data.source.data_dir": text,
    "data.source.system_dir": optional_text,
    "data.source.path": text,
    "data.source.label_column": optional_text,
    "data.source.val_size": int_at_least(0),
    "data.source.test_size": int_at_least(0),
    "data.source.fallback.val_size": int_at_least(0),
    "data.source.fallback.test_size": int_at_least(0),
    "data.source.val_fraction": number_in(0, 1),
    "data.source.test_fraction": number_in(0, 1),
    # the networks
    "encoder.base_channels": int_at_least(1),
    "encoder.blocks": int_at_least(0),
    # the likelihoods
    "likelihood.std": number_in(0, low_open=True),
    "likelihood.bounded": flag,
    "likelihood.learn_std": flag,
    "likelihood.mixtures": int_at_least(1),
    # the optimizer's keyword arguments (torch.optim's names)
    "optimizer.lr": number_in(0, low_open=True),
    "optimizer.betas": probability_pair,
    "optimizer.eps": number_in(0),
    "optimizer.weight_decay": number_in(0),
    "optimizer.momentum": number_in(0),
    "optimizer.dampening": number_in(0),
    "optimizer.alpha": number_in(0),
    "optimizer.fused": optional_flag,
    "optimizer.foreach": optional_flag,
    "optimizer.amsgrad": flag,
    "optimizer.maximize": flag,
    "optimizer.capturable": flag,
    "optimizer.differentiable": flag,
    "optimizer.nesterov": flag,
    # Lightning's Trainer
    "trainer.max_epochs": int_at_least(-1, optional=True),
    "trainer.min_epochs": int_at_least(0, optional=True),
    "trainer.max_steps": int_at_least(-1),
    "trainer.min_steps": int_at_least(0, optional=True),
    "trainer.log_every_n_steps": int_at_least(1),
    "trainer.limit_*_batches": batch_limit,
    "trainer.val_check_interval": val_check_interval,
    "trainer.check_val_every_n_epoch": int_at_least(1, optional=True),
    "trainer.num_sanity_val_steps": int_at_least(-1),
    "trainer.enable_progress_bar": optional_flag,
    "trainer.enable_model_summary": optional_flag,
    "trainer.enable_checkpointing": choice(True),  # checkpoints are how eval, sample and resume work
    "trainer.deterministic": deterministic,
    "trainer.benchmark": optional_flag,
    "trainer.detect_anomaly": flag,
    "trainer.gradient_clip_val": number_in(0, optional=True),
    "trainer.gradient_clip_algorithm": choice("norm", "value", None),
    "trainer.accelerator": choice(*ACCELERATORS),
    "trainer.devices": devices,
    "trainer.num_nodes": int_at_least(1),
    "trainer.strategy": text,
    "trainer.precision": choice(*PRECISIONS),
    "trainer.sync_batchnorm": flag,
    "trainer.reload_dataloaders_every_n_epochs": int_at_least(0),
    "trainer.default_root_dir": choice(None),  # the run directory is Hydra's
    # loggers and callbacks
    "logger": mapping_of_targets,
    "logger.*.name": optional_text,
    "logger.*.version": optional_text,
    "logger.*.default_hp_metric": flag,
    "logger.*.log_graph": flag,
    "logger.*.flush_logs_every_n_steps": int_at_least(1),
    "logger.*.experiment_name": text,
    "logger.*.tracking_uri": optional_text,
    "logger.*.run_name": optional_text,
    "logger.*.tags.*": text,
    "logger.*.project": optional_text,
    "logger.*.offline": flag,
    "logger.*.log_model": choice(True, False, "all"),
    "callbacks": mapping_of_targets,
    "callbacks.*.monitor": optional_text,
    "callbacks.*.mode": choice("min", "max"),
    "callbacks.*.filename": optional_text,
    "callbacks.*.auto_insert_metric_name": flag,
    "callbacks.*.save_top_k": int_at_least(-1),
    "callbacks.*.patience": int_at_least(0),
    "callbacks.*.min_delta": number_in(0),
    "callbacks.*.verbose": flag,
    "callbacks.*.every_n_epochs": int_at_least(0, optional=True),
}

#: keys whose whole subtree is one value (a rule sees the mapping or list, not its leaves)
WHOLE_VALUES = ("logger", "callbacks")


def rule_for(key: str) -> Rule | None:
    return next((rule for pattern, rule in LEAF_RULES.items() if fnmatch.fnmatchcase(key, pattern)), None)


def leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf under a mapping; lists are leaves, and so are empty mappings."""
    if not isinstance(node, Mapping) or not node:
        return [(prefix, node)]
    return [
        leaf
        for name, value in node.items()
        for leaf in leaves(value, f"{prefix}{name}" if not prefix else f"{prefix}.{name}")
    ]


def check_leaves(cfg: Mapping[str, Any]) -> None:
    """Every key that a rule here knows, checked by it."""
    for key in WHOLE_VALUES:
        if key in cfg:
            rule_for(key)(key, cfg[key])
    # shallow keys first: seed=abc is reported as seed, not as data.seed=${seed}
    found = leaves({k: v for k, v in cfg.items() if k != "hydra"})
    for key, value in sorted(found, key=lambda leaf: leaf[0].count(".")):
        rule = rule_for(key)
        if rule is not None:
            rule(key, value)
