"""Which checkpoint a stage uses, and what of the command line a checkpoint's model keeps."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from vaerun.core.checkpoints import refusal_reason
from vaerun.core.errors import ConfigError
from vaerun.core.spec import ARCHITECTURE_KEYS
from vaerun.training.module import AutoencoderModule

log = logging.getLogger(__name__)


def load_module(ckpt: str | Path, image_shape: tuple[int, ...]) -> AutoencoderModule:
    """Rebuild the model a checkpoint was trained as; weights_only: a checkpoint cannot run code."""
    try:
        module = AutoencoderModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a truncated or foreign file
        raise ConfigError(
            f"ckpt: {ckpt} is not a loadable vaerun checkpoint ({refusal_reason(err)})"
        ) from None
    trained_shape = tuple(module.hparams.image_shape)
    if trained_shape != image_shape:
        raise ConfigError(
            f"ckpt: the checkpoint's model takes images of shape {list(trained_shape)}, but the data "
            f"gives {list(image_shape)}; pick the data set it was trained on"
        )
    return module


def reconcile_with_checkpoint(cfg: dict[str, Any], module: AutoencoderModule, overridden: set[str]) -> None:
    """The checkpoint defines the model; a corruption typed on the command line replaces the stored one
    (to test a denoiser on another corruption). Other architecture keys typed are reported as ignored."""
    for key in sorted(overridden & set(ARCHITECTURE_KEYS) - {"corruption"}):
        stored = module.hparams.get("choices", {}).get(key) or module.hparams.get(key)
        log.warning("%s from the command line is ignored: the checkpoint's model has %s=%s", key, key, stored)
    if "corruption" in overridden:
        module.corruption = instantiate(cfg["corruption"])
        log.info(
            "corruption: using the command line's %s, not the checkpoint's", cfg["corruption"]["_target_"]
        )


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True).get("global_step", 0))
