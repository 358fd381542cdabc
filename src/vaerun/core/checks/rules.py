"""The type and range of every config key, one rule per key: vaerun's own (latent, stage, the model's,
prior's, posterior's and corruption's parameters, eval, sample, impute, anomaly) and those handed on to
other libraries as they are (Lightning's Trainer, the optimizer, the data sources, the loggers and
callbacks, every ``_target_``).

One rule per key pattern (``fnmatch`` on the dotted key, first match wins); a rule is a function
``rule(key, value)`` that raises ConfigError naming the key and what is allowed. A group's parameters go by
name (``corruption.p``, ``posterior.hidden``), not by option, so a new corruption or network with the usual
parameters is checked without touching this file. Checks that span keys or need the data's shape are named
functions in ``vaerun.core.checks.config``. Keys a user adds (``+trainer.benchmark=true``) that no rule
knows are handed on, and what the library then refuses is answered the same way (vaerun.stages.assembly).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from vaerun.core.checks.values import (
    Rule,
    batch_limit,
    choice,
    class_label,
    deterministic,
    devices,
    flag,
    int_at_least,
    int_in,
    latent,
    mapping_of_targets,
    no_block,
    number_in,
    odd_int,
    optional_flag,
    optional_path,
    optional_seed,
    optional_text,
    path,
    positive_ints,
    probability_pair,
    seed,
    target,
    text,
    unit_interval_list,
    val_check_interval,
    variance_samples,
)
from vaerun.core.names import (
    BINARIZATIONS,
    BOUNDS,
    DIRECTIONS,
    ESTIMATORS,
    IWAE_GRADIENTS,
    KERNEL_NAMES,
    PRUNERS,
    SAMPLERS,
    STAGES,
)

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
#: MetFlow's training follows all 2^steps accept/reject paths and sums each endpoint's density over as
#: many: its cost grows fourfold with each step
MAX_CHAIN_STEPS = 4


RULES: dict[str, Rule] = {
    # the run
    "latent": latent,
    "stage": choice(*STAGES),
    "ckpt": optional_text,
    "force": flag,
    "resume": flag,
    "compile": flag,
    "cuda_graphs": flag,
    "steps_per_execution": int_at_least(1),
    # the model's parts, by parameter name whatever the option
    "model.beta": number_in(0),
    "model.kl_warmup_epochs": number_in(0),
    "model.free_bits": number_in(0),
    "model.estimator": choice(*ESTIMATORS),
    "lr_schedule": no_block,
    "model.k": int_at_least(1),
    "model.latents": positive_ints(),
    "model.hidden": positive_ints(),
    "model.gradient": choice(*IWAE_GRADIENTS),
    "model.bound": choice(*BOUNDS),
    "model.mcmc_steps": int_at_least(0),
    "model.leapfrog_steps": int_at_least(1),
    "model.step_size": number_in(0, low_open=True),
    "model.target_accept": number_in(0, 1, low_open=True, high_open=True, optional=True),
    "model.mcmc_kernel": choice(*KERNEL_NAMES),
    "model.codebook_size": int_at_least(2),
    "model.commitment": number_in(0),
    "model.decay": number_in(0, 1, high_open=True),
    "model.restart_below": number_in(0),
    "model.code_prior.channels": int_at_least(1),
    "model.code_prior.layers": int_at_least(0),
    "model.code_prior.epochs": int_at_least(1),
    "model.code_prior.batch_size": int_at_least(1),
    "model.code_prior.lr": number_in(0, low_open=True),
    "model.code_prior.max_images": int_at_least(1, optional=True),
    "prior.df": number_in(0, low_open=True),
    "prior.pseudo_inputs": int_at_least(1),
    "posterior.flows": int_at_least(1),
    "posterior.hidden": int_at_least(1),
    "posterior.steps": int_in(1, MAX_CHAIN_STEPS, " (training follows all 2^steps accept/reject paths)"),
    "posterior.leapfrog_steps": int_at_least(1),
    "posterior.step_size": number_in(0, low_open=True),
    "posterior.beta0": number_in(0, 1, low_open=True, high_open=True),
    "corruption.p": number_in(0, 1),
    "corruption.sigma": number_in(0, low_open=True),
    "corruption.kernel_size": odd_int,
    "corruption.size": int_at_least(1),  # and at most the image's side: config.check_block_size
    "corruption.std": number_in(0),
    "corruption.clip": flag,
    "corruption.centred": flag,
    "encoder.hidden": positive_ints(optional=True),
    "encoder.channels": positive_ints(),
    # the stages' options
    "eval.iwae_samples": int_at_least(0),
    "eval.iwae_chunk": int_at_least(1),
    "eval.iwae_images": int_at_least(1, optional=True),
    "eval.projector_points": int_at_least(0),
    "eval.ais_temperatures": int_at_least(0),
    "eval.ais_chains": int_at_least(1),
    "eval.ais_images": int_at_least(1),
    "eval.ais_pixels": int_at_least(1, optional=True),
    "eval.ais_leapfrog_steps": int_at_least(1),
    "eval.ais_kernel": choice(*KERNEL_NAMES),
    "sample.num_images": int_at_least(1),
    "sample.num_reconstructions": int_at_least(1),
    "sample.manifold_size": int_at_least(1),
    "sample.num_interpolations": int_at_least(1),
    "sample.traversal_dims": int_at_least(1),
    "sample.interpolation_steps": int_at_least(1),
    "sample.mcmc_steps": int_at_least(0),
    "sample.temperature": number_in(0, low_open=True),
    "impute.rates": unit_interval_list,
    "impute.test_images": int_at_least(1),
    "impute.iterations": int_at_least(1),
    "impute.shown": int_at_least(1),
    "impute.block_size": int_at_least(1, optional=True),  # and at most the image's side
    "anomaly.iwae_samples": int_at_least(0),
    "anomaly.neighbours": int_at_least(0),
    "anomaly.neighbour_references": int_at_least(1, optional=True),
    "diagnostics.gradient_variance_samples": variance_samples,
    # everything built by instantiate
    "*._target_": target,
    "*._partial_": flag,
    "seed": seed,
    "hydra.sweeper.seed": optional_seed,  # before *.seed: an Optuna sampler may go unseeded
    "*.seed": seed,
    "*.split_seed": seed,
    "*.binarize_seed": seed,
    # the data
    "data.binarize": choice(*BINARIZATIONS),
    "data.dequantize": flag,
    "data.batch_size": int_at_least(1),
    "data.normal_class": class_label,
    "data.image_size": int_at_least(1, optional=True),
    "data.channels": choice(None, 1, 3),
    "anomaly.background_ckpt": optional_path,
    "anomaly.background_mutation_rate": number_in(0, 1, optional=True, high_open=True),
    "data.mutation_rate": number_in(0, 1, high_open=True),
    "data.device_memory_fraction": number_in(0, 1),
    # hydra/sweeper=optuna's keys, checked by the sweeper itself (vaerun.cli.study_sweeper)
    "hydra.sweeper.direction": choice(*DIRECTIONS),
    "hydra.sweeper.sampler": choice(*SAMPLERS),
    "hydra.sweeper.pruner": choice(*PRUNERS, None),
    "hydra.sweeper.n_trials": int_at_least(1),
    "hydra.sweeper.n_jobs": int_at_least(1),
    "hydra.sweeper.pruner_startup_trials": int_at_least(0),
    "hydra.sweeper.pruner_warmup_epochs": int_at_least(0),
    "hydra.sweeper.metric": text,
    "hydra.sweeper.study_name": text,
    "hydra.sweeper.storage": optional_text,
    "data.max_host_memory_gb": number_in(0, optional=True),
    "data.source.crop": int_at_least(1, optional=True),
    "data.source.cache_dir": optional_path,
    "data.source.description": optional_text,
    "data.source.data_dir": path,
    "data.source.system_dir": optional_path,
    "data.source.path": path,
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
    "encoder.norm": no_block,
    # the likelihoods
    "likelihood.std": number_in(0, low_open=True),
    "likelihood.bounded": flag,
    "likelihood.one_component_weight": flag,
    "likelihood.channel_coupling": flag,
    "likelihood.faithful": flag,
    "likelihood.learn_std": flag,
    "likelihood.mixtures": int_at_least(1),
    "likelihood.initial_std": number_in(0, 1, low_open=True, optional=True),
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
    "trainer.gradient_clip_algorithm": choice("norm", "value", "percentile", None),
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
    return next((rule for pattern, rule in RULES.items() if fnmatch.fnmatchcase(key, pattern)), None)


def check_value(key: str, value: Any) -> None:
    """The rule of one key, for objects built in Python (a corruption, a likelihood, a prior): the same
    ConfigError (a ValueError) and message as on the command line."""
    rule = rule_for(key)
    if rule is not None:
        rule(key, value)


def check_values(group: str, values: Mapping[str, Any]) -> None:
    """The rules of a group's parameters, given by name (``check_values("posterior", {"hidden": 0})``)."""
    for name, value in values.items():
        check_value(f"{group}.{name}", value)


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
