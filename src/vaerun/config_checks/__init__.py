"""Start-up checks of a composed config.

Pure Python on purpose: a mistake on the command line is answered before torch or Lightning is imported,
and before any directory looks like a run. Each check names the key and what is allowed.
The checks go by parameter name (a corruption's ``p``, a conv encoder's ``channels``), not by option name,
so a new corruption or network with the usual parameters is checked without touching this file.
The keys handed on to other libraries as they are (the Trainer's, the optimizer's, the loggers') have
one rule each in ``leaves``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vaerun.config_checks.leaves import BINARIZATIONS, check_leaves, flag, rule_for
from vaerun.config_checks.values import ConfigError, is_int, is_number
from vaerun.trackers import missing_package

__all__ = [
    "BINARIZATIONS",
    "ConfigError",
    "check_config",
    "check_flow_training",
    "check_posterior",
    "check_shape_dependent",
    "check_value",
    "is_int",
]

STAGES = ("all", "train", "eval", "sample", "impute", "anomaly")
#: the VAE's gradient estimators: reparam (z = mu + sigma * eps) or reinforce (the score function)
ESTIMATORS = ("reparam", "reinforce")
#: models with no prior p(z): a prior other than the default is a mistake with them
DETERMINISTIC_MODELS = ("vaerun.autoencoders.Autoencoder",)
DEFAULT_PRIOR = "vaerun.priors.GaussianPrior"
DEFAULT_POSTERIOR = "vaerun.posteriors.Gaussian"
#: the config groups a model is built from (vaerun.build), whatever else goes with them
MODEL_PARTS = ("model", "encoder", "likelihood", "prior", "posterior")
#: the MCMC kernels (vaerun.mcmc.KERNELS, named here without importing torch)
KERNEL_NAMES = ("hmc", "mala", "rwmh")


def check_latent(latent: Any) -> None:
    if not is_int(latent) or latent < 1:
        raise ConfigError(f"latent must be an integer >= 1 (the latent dimension), got {latent!r}")


def _probability(key: str, value: Any, image_shape: tuple[int, ...]) -> None:
    if not is_number(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key} must be a number in [0, 1], got {value!r}")


def _positive(key: str, value: Any, image_shape: tuple[int, ...]) -> None:
    if not is_number(value) or value <= 0:
        raise ConfigError(f"{key} must be a number > 0, got {value!r}")


def _non_negative(key: str, value: Any, image_shape: tuple[int, ...]) -> None:
    if not is_number(value) or value < 0:
        raise ConfigError(f"{key} must be a number >= 0, got {value!r}")


def _odd_kernel(key: str, value: Any, image_shape: tuple[int, ...]) -> None:
    if not is_int(value) or value < 1 or value % 2 == 0:
        raise ConfigError(f"{key} must be an odd integer >= 1, got {value!r}")


def _block_size(key: str, value: Any, image_shape: tuple[int, ...] | None) -> None:
    if image_shape is None:  # the range is known once the data is loaded
        check_positive_int(key, value)
        return
    height, width = image_shape[-2:]
    if not is_int(value) or not 1 <= value <= min(height, width):
        raise ConfigError(
            f"{key} must be an integer in [1, {min(height, width)}] (the images are {height}x{width}), "
            f"got {value!r}"
        )


def _flag(key: str, value: Any, image_shape: tuple[int, ...]) -> None:
    flag(key, value)


CORRUPTION_RULES: dict[str, Callable[[str, Any, tuple[int, ...]], None]] = {
    "p": _probability,
    "sigma": _positive,
    "kernel_size": _odd_kernel,
    "size": _block_size,
    "std": _non_negative,
    "clip": _flag,
    "centred": _flag,
}


def _open_unit_interval(key: str, value: Any, image_shape: tuple[int, ...]) -> None:
    if not is_number(value) or not 0.0 < value < 1.0:
        raise ConfigError(f"{key} must be a number strictly between 0 and 1, got {value!r}")


def _optional_open_unit_interval(key: str, value: Any, image_shape: tuple[int, ...]) -> None:
    if value is not None:
        _open_unit_interval(key, value, image_shape)


def _count(key: str, value: Any, image_shape: tuple[int, ...]) -> None:
    check_non_negative_int(key, value)


def _positive_count(key: str, value: Any, image_shape: tuple[int, ...]) -> None:
    check_positive_int(key, value)


def _estimator(key: str, value: Any, image_shape: tuple[int, ...]) -> None:
    check_choice(key, value, ESTIMATORS)


def _kernel(key: str, value: Any, image_shape: tuple[int, ...]) -> None:
    check_choice(key, value, KERNEL_NAMES)


MODEL_RULES: dict[str, Callable[[str, Any, tuple[int, ...]], None]] = {
    "beta": _non_negative,
    "kl_warmup_epochs": _non_negative,
    "free_bits": _non_negative,
    "estimator": _estimator,
    "mcmc_steps": _count,
    "leapfrog_steps": _positive_count,
    "step_size": _positive,
    "target_accept": _optional_open_unit_interval,
    "mcmc_kernel": _kernel,
}

PRIOR_RULES: dict[str, Callable[[str, Any, tuple[int, ...]], None]] = {"df": _positive}

#: MetFlow's training follows all 2^steps accept/reject paths and sums each endpoint's density over as
#: many: its cost grows fourfold with each step
MAX_CHAIN_STEPS = 4


def _chain_steps(key: str, value: Any, image_shape: tuple[int, ...]) -> None:
    if not is_int(value) or not 1 <= value <= MAX_CHAIN_STEPS:
        raise ConfigError(
            f"{key} must be an integer in [1, {MAX_CHAIN_STEPS}] (training follows all 2^steps "
            f"accept/reject paths), got {value!r}"
        )


POSTERIOR_RULES: dict[str, Callable[[str, Any, tuple[int, ...]], None]] = {
    "flows": _positive_count,
    "hidden": _positive_count,
    "steps": _chain_steps,
    "leapfrog_steps": _positive_count,
    "step_size": _positive,
    "beta0": _open_unit_interval,
}


def _check_by_name(
    group: str,
    values: Mapping[str, Any],
    rules: Mapping[str, Callable[[str, Any, tuple[int, ...]], None]],
    image_shape: tuple[int, ...],
) -> None:
    for name, value in values.items():
        rule = rules.get(name)
        if rule is not None:
            rule(f"{group}.{name}", value, image_shape)


def check_corruption(corruption: Mapping[str, Any], image_shape: tuple[int, ...] | None) -> None:
    _check_by_name("corruption", corruption, CORRUPTION_RULES, image_shape)


def check_posterior(posterior: Mapping[str, Any]) -> None:
    _check_by_name("posterior", posterior, POSTERIOR_RULES, ())


def check_flow_training(is_flow: bool, free_bits: Any, estimator: Any) -> None:
    """A flow posterior's KL has no per-dimension split (free bits), and the score function (REINFORCE)
    would need the flow's log q gradient."""
    if is_flow and (free_bits != 0 or estimator != "reparam"):
        raise ConfigError(
            "posterior: a flow trains with model.free_bits=0 and model.estimator=reparam (its KL has no "
            "per-dimension split; the score function would need the flow's log q gradient)"
        )


def check_model(model: Mapping[str, Any], prior: Mapping[str, Any], posterior: Mapping[str, Any]) -> None:
    _check_by_name("model", model, MODEL_RULES, ())
    _check_by_name("prior", prior, PRIOR_RULES, ())
    check_posterior(posterior)
    deterministic = model.get("_target_") in DETERMINISTIC_MODELS
    if deterministic and prior.get("_target_") != DEFAULT_PRIOR:
        raise ConfigError(
            f"prior: {prior.get('_target_')} is for a VAE (model=vae, beta_vae, vae_mcmc); a deterministic "
            "autoencoder has no prior (its samples come from a Gaussian fitted to its codes)"
        )
    flow = posterior.get("_target_") != DEFAULT_POSTERIOR
    if deterministic and flow:
        raise ConfigError(
            f"posterior: {posterior.get('_target_')} is for a VAE (model=vae, beta_vae, vae_mcmc); a "
            "deterministic autoencoder has no posterior"
        )
    check_flow_training(flow, model.get("free_bits", 0), model.get("estimator", "reparam"))


def check_image_shape(image_shape: Any) -> tuple[int, ...] | None:
    """None: the shape comes from the data (a CSV file's columns); the checks that need it wait for it."""
    if image_shape is None:
        return None
    shape = tuple(image_shape) if isinstance(image_shape, list | tuple) else ()
    if len(shape) != 3 or not all(is_int(n) and n >= 1 for n in shape):
        raise ConfigError(f"data.image_shape must be [channels, height, width] or null, got {image_shape!r}")
    return shape


def conv_depth(image_shape: Sequence[int], smallest: int = 4) -> int:
    """How many stride-2 layers a conv net with ``channels: null`` has: one per halving of height and
    width while both stay even and the result at least ``smallest`` pixels (28 px: 2, 32: 3, 64: 4)."""
    height, width = image_shape[-2:]
    depth = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) // 2 >= smallest:
        height, width, depth = height // 2, width // 2, depth + 1
    return depth


def check_encoder(encoder: Mapping[str, Any], image_shape: tuple[int, ...] | None) -> None:
    """A strided conv net halves height and width once per entry of ``channels``."""
    for key, least in (("hidden", 0), ("channels", 1)):  # an MLP may be linear; a conv net needs a layer
        sizes = encoder.get(key)
        if sizes is not None and (
            not isinstance(sizes, list | tuple)
            or len(sizes) < least
            or not all(is_int(n) and n >= 1 for n in sizes)
        ):
            entries = "a list" if least == 0 else "a non-empty list"
            raise ConfigError(f"encoder.{key} must be {entries} of integers >= 1, got {sizes!r}")
    if "channels" in encoder and encoder["channels"] is None and image_shape is not None:
        if conv_depth(image_shape) == 0:
            raise ConfigError(
                f"encoder.channels=null: the {image_shape[-2]}x{image_shape[-1]} images cannot be halved by "
                "a stride-2 convolution; give encoder.channels=[...], set data.image_size, or use encoder=mlp"
            )
        return
    channels = encoder.get("channels")
    if channels is None or image_shape is None:
        return
    factor = 2 ** len(channels)
    height, width = image_shape[-2:]
    if height % factor or width % factor:
        raise ConfigError(
            f"encoder.channels={list(channels)}: the conv encoder halves the image {len(channels)} times, "
            f"so height and width must be divisible by {factor}, but the images are {height}x{width}; "
            "use fewer channels entries or encoder=mlp"
        )


def check_stage(stage: Any, ckpt: Any) -> None:
    check_choice("stage", stage, STAGES)
    if stage in ("eval", "sample") and ckpt is None:
        raise ConfigError(f"stage={stage} needs ckpt=PATH (a checkpoint written by a training run)")
    if ckpt is not None and not Path(str(ckpt)).expanduser().is_file():
        raise ConfigError(f"ckpt: no such file: {ckpt}")


def check_positive_int(key: str, value: Any) -> None:
    if not is_int(value) or value < 1:
        raise ConfigError(f"{key} must be an integer >= 1, got {value!r}")


def check_non_negative_int(key: str, value: Any) -> None:
    if not is_int(value) or value < 0:
        raise ConfigError(f"{key} must be an integer >= 0, got {value!r}")


def check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")


def missing_values(node: Any, prefix: str = "") -> list[str]:
    """The keys left at OmegaConf's mandatory-value marker ``???`` (such as data=csv's data.source.path)."""
    if isinstance(node, Mapping):
        return [key for name, value in node.items() for key in missing_values(value, f"{prefix}{name}.")]
    return [prefix.rstrip(".")] if node == "???" else []


def check_shape_dependent(cfg: Mapping[str, Any], image_shape: tuple[int, ...] | None) -> None:
    """The checks of the corruption, the encoder and the imputation block, which need the data's shape for
    part of their work; where the config leaves the shape to the data (``data.image_shape: null``, None
    here) they run again once the data is loaded."""
    check_corruption(cfg["corruption"], image_shape)
    check_encoder(cfg["encoder"], image_shape)
    if cfg["impute"]["block_size"] is not None:
        _block_size("impute.block_size", cfg["impute"]["block_size"], image_shape)


def check_training_loop(steps_per_execution: Any, trainer: Mapping[str, Any]) -> None:
    """The Trainer arguments that groups of steps (vaerun.step_groups) cannot take or count in steps; their
    types are the leaves' rules."""
    check_positive_int("steps_per_execution", steps_per_execution)
    if trainer.get("accumulate_grad_batches", 1) != 1:
        raise ConfigError(
            "trainer.accumulate_grad_batches is not supported: vaerun takes one optimizer step per batch "
            "(its optimisation is manual); raise data.batch_size instead"
        )
    interval = trainer.get("val_check_interval")
    if is_int(interval) and interval % steps_per_execution:
        raise ConfigError(
            f"trainer.val_check_interval={interval} must be a multiple of steps_per_execution="
            f"{steps_per_execution} (the steps run in groups of that many): give "
            f"{_multiples_around(interval, steps_per_execution)}, a fraction of the epoch (0.25), "
            "or set steps_per_execution=1"
        )


def _multiples_around(value: int, factor: int) -> str:
    below = value // factor * factor
    return f"{below} or {below + factor}" if below else str(factor)


def check_config(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError for the first value outside what is allowed."""
    unset = [key for key in missing_values(cfg) if not key.startswith("hydra.")]
    if unset:
        raise ConfigError(f"{unset[0]} must be set: add {unset[0]}=VALUE to the command")
    check_leaves(cfg)
    for name, spec in cfg["logger"].items():
        missing = missing_package(spec["_target_"])
        if missing:
            raise ConfigError(f"logger={name} {missing}")
    if "model_checkpoint" not in cfg["callbacks"]:
        raise ConfigError(
            "callbacks: model_checkpoint is required (the best checkpoint is what eval uses after training, "
            "last.ckpt what a re-run resumes from): callbacks=[default,NAME] adds NAME to it"
        )
    check_latent(cfg["latent"])
    check_stage(cfg["stage"], cfg["ckpt"])
    for key in ("force", "resume", "compile", "cuda_graphs"):
        flag(key, cfg[key])
    image_shape = check_image_shape(cfg["data"]["image_shape"])
    check_positive_int("data.batch_size", cfg["data"]["batch_size"])
    check_training_loop(cfg["steps_per_execution"], cfg["trainer"])
    check_shape_dependent(cfg, image_shape)
    check_model(cfg["model"], cfg["prior"], cfg["posterior"])
    check_choice("eval.ais_kernel", cfg["eval"]["ais_kernel"], KERNEL_NAMES)
    for key in ("num_images", "num_reconstructions", "manifold_size", "num_interpolations", "traversal_dims"):
        check_positive_int(f"sample.{key}", cfg["sample"][key])
    check_positive_int("sample.interpolation_steps", cfg["sample"]["interpolation_steps"])
    check_non_negative_int("sample.mcmc_steps", cfg["sample"]["mcmc_steps"])
    check_non_negative_int("eval.iwae_samples", cfg["eval"]["iwae_samples"])
    check_positive_int("eval.iwae_chunk", cfg["eval"]["iwae_chunk"])
    check_non_negative_int("eval.projector_points", cfg["eval"]["projector_points"])
    check_non_negative_int("eval.ais_temperatures", cfg["eval"]["ais_temperatures"])
    for key in ("ais_chains", "ais_images", "ais_leapfrog_steps"):
        check_positive_int(f"eval.{key}", cfg["eval"][key])
    samples = cfg["diagnostics"]["gradient_variance_samples"]
    if not is_int(samples) or samples == 1 or samples < 0:
        raise ConfigError(
            f"diagnostics.gradient_variance_samples must be 0 (off) or an integer >= 2, got {samples!r}"
        )
    _positive("sample.temperature", cfg["sample"]["temperature"], image_shape)
    check_impute(cfg["impute"])
    check_anomaly(cfg["stage"], cfg["data"].get("normal_class"), cfg["anomaly"])


def check_impute(options: Mapping[str, Any]) -> None:
    """impute.block_size is checked with the shapes (check_shape_dependent)."""
    rates = options["rates"]
    if not isinstance(rates, list | tuple) or not all(is_number(r) and 0 < r < 1 for r in rates):
        raise ConfigError(f"impute.rates must be a list of numbers strictly between 0 and 1, got {rates!r}")
    for key in ("images", "iterations", "num_images"):
        check_positive_int(f"impute.{key}", options[key])


def check_anomaly(stage: Any, normal_class: Any, options: Mapping[str, Any]) -> None:
    if normal_class is not None and (not is_int(normal_class) or normal_class < 0):
        raise ConfigError(
            f"data.normal_class must be null or a class label (an integer >= 0), got {normal_class!r}"
        )
    if stage == "anomaly" and normal_class is None:
        raise ConfigError(
            "stage=anomaly needs data.normal_class=K: the class the model learns as normal (the test "
            "split's other classes are the anomalies)"
        )
    check_non_negative_int("anomaly.iwae_samples", options["iwae_samples"])
    background = options.get("background_ckpt")
    if background is not None and not Path(str(background)).expanduser().is_file():
        raise ConfigError(f"anomaly.background_ckpt: no such file: {background}")


def check_value(key: str, value: Any, image_shape: tuple[int, ...] | None = None) -> None:
    """The start-up rule of one key, for objects built in Python (a corruption, a likelihood, a prior):
    the same ConfigError (a ValueError) and message as on the command line."""
    group, _, name = key.partition(".")
    by_name = {
        "corruption": CORRUPTION_RULES,
        "model": MODEL_RULES,
        "prior": PRIOR_RULES,
        "posterior": POSTERIOR_RULES,
    }.get(group, {})
    if name in by_name:
        by_name[name](key, value, image_shape)
    elif (rule := rule_for(key)) is not None:
        rule(key, value)
