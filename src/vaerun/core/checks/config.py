"""The checks of a composed config that span keys or need the data's shape; every key's own type and range
is its rule in ``vaerun.core.checks.rules``.

Pure Python on purpose: a mistake on the command line is answered before torch or Lightning is imported,
and before any directory looks like a run. Each check names the key and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vaerun.core.checkpoints import checkpoint_file
from vaerun.core.checks.packages import missing_package
from vaerun.core.checks.rules import RULES, check_leaves, check_values
from vaerun.core.checks.values import is_int
from vaerun.core.errors import ConfigError
from vaerun.core.names import DEFAULT_POSTERIOR, DEFAULT_PRIOR, DETERMINISTIC_MODELS
from vaerun.core.spec import MODEL_PARTS, conv_depth


def check_block_size(key: str, value: Any, image_shape: tuple[int, ...] | None) -> None:
    """A square block inside the image; its type is the key's rule, its range known once the shape is."""
    if image_shape is None or not is_int(value):
        return
    height, width = image_shape[-2:]
    if not 1 <= value <= min(height, width):
        raise ConfigError(
            f"{key} must be an integer in [1, {min(height, width)}] (the images are {height}x{width}), "
            f"got {value!r}"
        )


def check_corruption(corruption: Mapping[str, Any], image_shape: tuple[int, ...] | None) -> None:
    check_values("corruption", {k: v for k, v in corruption.items() if k != "_target_"})
    if "size" in corruption:
        check_block_size("corruption.size", corruption["size"], image_shape)


def check_flow_training(is_flow: bool, free_bits: Any, estimator: Any) -> None:
    """A flow posterior's KL has no per-dimension split (free bits), and the score function (REINFORCE)
    would need the flow's log q gradient."""
    if is_flow and (free_bits != 0 or estimator != "reparam"):
        raise ConfigError(
            "posterior: a flow trains with model.free_bits=0 and model.estimator=reparam (its KL has no "
            "per-dimension split; the score function would need the flow's log q gradient)"
        )


def check_model(model: Mapping[str, Any], prior: Mapping[str, Any], posterior: Mapping[str, Any]) -> None:
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


def check_encoder(encoder: Mapping[str, Any], image_shape: tuple[int, ...] | None) -> None:
    """A strided conv net halves height and width once per entry of ``channels``."""
    check_values("encoder", {k: v for k, v in encoder.items() if k in ("hidden", "channels")})
    if image_shape is None or "channels" not in encoder:
        return
    if image_shape[-2] == 1:  # a CSV file's rows: (1, 1, columns)
        raise ConfigError(
            f"encoder: rows of {image_shape[-1]} table columns are no images to convolve: use encoder=mlp "
            "(model=vqvae, whose codes are a grid, is for images)"
        )
    channels = encoder["channels"]
    if channels is None:
        if conv_depth(image_shape) == 0:
            raise ConfigError(
                f"encoder.channels=null: the {image_shape[-2]}x{image_shape[-1]} images cannot be halved by "
                "a stride-2 convolution; give encoder.channels=[...], set data.image_size, or use encoder=mlp"
            )
        return
    factor = 2 ** len(channels)
    height, width = image_shape[-2:]
    if height % factor or width % factor:
        raise ConfigError(
            f"encoder.channels={list(channels)}: the conv encoder halves the image {len(channels)} times, "
            f"so height and width must be divisible by {factor}, but the images are {height}x{width}; "
            "use fewer channels entries or encoder=mlp"
        )


def check_checkpoint(key: str, path: Any) -> None:
    """A checkpoint file, or a run directory that holds one (its best)."""
    if path is not None and not str(path).strip():  # ckpt= reads as "", which Path takes for "."
        raise ConfigError(
            f"{key}= is empty: give {key}=PATH (a checkpoint or a run directory), or leave it out"
        )
    if path is not None:
        try:
            checkpoint_file(Path(str(path)).expanduser())
        except FileNotFoundError as err:
            raise ConfigError(f"{key}: {err}") from None


def check_stage(stage: Any, ckpt: Any) -> None:
    if stage in ("eval", "sample") and ckpt is None:
        raise ConfigError(
            f"stage={stage} needs ckpt=PATH (a checkpoint written by a training run, or its run directory)"
        )
    check_checkpoint("ckpt", ckpt)


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
    check_block_size("impute.block_size", cfg["impute"]["block_size"], image_shape)


def check_training_loop(steps_per_execution: int, trainer: Mapping[str, Any]) -> None:
    """The Trainer arguments that groups of steps (vaerun.training.step_groups) cannot take or count in
    steps; their types are the keys' rules."""
    if trainer.get("accumulate_grad_batches", 1) != 1:
        raise ConfigError(
            "trainer.accumulate_grad_batches is not supported: vaerun takes one optimizer step per batch "
            "(its optimisation is manual); raise data.batch_size instead"
        )
    if trainer.get("gradient_clip_algorithm") == "percentile":
        clip = trainer.get("gradient_clip_val")
        if clip is None or not 0 < clip <= 100:
            raise ConfigError(
                "trainer.gradient_clip_algorithm=percentile clips at the trainer.gradient_clip_val-th "
                "percentile of the steps' gradient norms so far: give a number in (0, 100], e.g. 99; "
                f"got {clip}"
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


def check_anomaly(stage: Any, normal_class: Any, options: Mapping[str, Any]) -> None:
    if stage == "anomaly" and normal_class is None:
        raise ConfigError(
            "stage=anomaly needs data.normal_class=K: the class the model learns as normal (the test "
            "split's other classes are the anomalies)"
        )
    check_checkpoint("anomaly.background_ckpt", options.get("background_ckpt"))


def check_likelihood(likelihood: Mapping[str, Any]) -> None:
    """Faithful training is defined for one logistic per sub-pixel: a mixture's weights and coupled
    locations move its mean too."""
    if likelihood.get("faithful") and (
        int(likelihood.get("mixtures", 1)) > 1 or likelihood.get("channel_coupling")
    ):
        raise ConfigError(
            "likelihood.faithful=true: one logistic per sub-pixel, without likelihood.mixtures or "
            "likelihood.channel_coupling (a mixture's weights and coupled locations move its mean too)"
        )


#: the top-level keys every run reads: the config groups, and the keys whose values have rules
READ_BY_EVERY_RUN = (
    *MODEL_PARTS,
    *("data", "trainer", "corruption", "optimizer"),
    *("eval", "sample", "impute", "anomaly", "diagnostics"),
    *(key for key in RULES if "." not in key),
)


#: what a data source's path names, for the line that asks for it (data=image_folder and celeba64, data=csv)
PATH_OF_SOURCE = {
    "vaerun.data.ImageFolderSource": ("the folder that holds the images", "DIR"),
    "vaerun.data.CSVSource": ("the CSV file", "FILE.csv"),
}


def _asking_for(key: str, cfg: Mapping[str, Any]) -> str:
    """The line for a key left at ``???``: what to give it, where the config says what it names (a data
    option's ``source.description``, else what its kind of source reads)."""
    source = cfg["data"]["source"]
    if key == "data.source.path" and (named := PATH_OF_SOURCE.get(source.get("_target_"))):
        what, placeholder = named
        what = source.get("description") or what
        return f"{key} must be set to {what}: add {key}={placeholder} to the command"
    return f"{key} must be set: add {key}=VALUE to the command"


def check_config(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError for the first value outside what is allowed."""
    if gone := [key for key in READ_BY_EVERY_RUN if key not in cfg]:
        key = gone[0]
        raise ConfigError(
            f"{key}: missing from the config, and every run reads it (removed with ~{key}, or {key}=[]?)"
        )
    unset = [key for key in missing_values(cfg) if not key.startswith("hydra.")]
    if unset:
        raise ConfigError(_asking_for(unset[0], cfg))
    check_leaves(cfg)
    for name, spec in cfg["logger"].items():
        missing = missing_package(spec["_target_"])
        if missing:
            raise ConfigError(f"logger={name} {missing}")
    if "model_checkpoint" not in cfg["callbacks"]:
        raise ConfigError(
            "callbacks: model_checkpoint is required (its best checkpoint is what eval uses after training): "
            "callbacks=[default,NAME] adds NAME to it"
        )
    check_stage(cfg["stage"], cfg["ckpt"])
    image_shape = check_image_shape(cfg["data"]["image_shape"])
    check_training_loop(cfg["steps_per_execution"], cfg["trainer"])
    check_shape_dependent(cfg, image_shape)
    check_model(cfg["model"], cfg["prior"], cfg["posterior"])
    check_likelihood(cfg["likelihood"])
    if cfg.get("lr_schedule") and cfg["cuda_graphs"]:
        raise ConfigError(
            "lr_schedule: a CUDA graph keeps the learning rate it captured; set cuda_graphs=false"
        )
    if cfg["trainer"].get("gradient_clip_algorithm") == "percentile" and cfg["cuda_graphs"]:
        raise ConfigError(
            "trainer.gradient_clip_algorithm=percentile records each step's norm at a slot a CUDA graph "
            "would keep as captured; set cuda_graphs=false"
        )
    check_anomaly(cfg["stage"], cfg["data"].get("normal_class"), cfg["anomaly"])
