"""Which checkpoint a stage uses, and what of the command line a checkpoint's model keeps."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from vaerun.core.checkpoints import refusal_reason, run_of
from vaerun.core.errors import ConfigError
from vaerun.core.run_files import saved_config, typed_overrides
from vaerun.core.spec import ARCHITECTURE_KEYS
from vaerun.training.module import AutoencoderModule

log = logging.getLogger(__name__)


def load_module(ckpt: str | Path, image_shape: tuple[int, ...]) -> AutoencoderModule:
    """Rebuild the model a checkpoint was trained as; weights_only: a checkpoint cannot run code."""
    try:
        module = AutoencoderModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a truncated or foreign file
        raise ConfigError(
            f"ckpt: {ckpt} is not a loadable vaerun checkpoint ({refusal_reason(err, ckpt)})"
        ) from None
    trained_shape = tuple(module.hparams.image_shape)
    if trained_shape != image_shape:
        raise ConfigError(
            f"ckpt: the checkpoint's model takes images of shape {list(trained_shape)}, but the data "
            f"gives {list(image_shape)}; pick the data set it was trained on{_data_hint(ckpt, module)}"
        )
    return module


def _data_hint(ckpt: str | Path, module: AutoencoderModule) -> str:
    try:
        return _data_of_run(ckpt, module)
    except Exception:  # only a hint: a run folder that cannot be read leaves it out of the refusal
        return ""


def _data_of_run(ckpt: str | Path, module: AutoencoderModule) -> str:
    """The data the checkpoint's run was given, as overrides to type again: those its .hydra folder
    recorded (beside checkpoints/), with a folder's or file's path made absolute, else the data option."""
    run_dir = run_of(Path(ckpt).resolve())
    data = [o for o in typed_overrides(run_dir) if o.startswith(("data=", "data."))]
    saved = saved_config(run_dir)
    path = OmegaConf.select(saved, "data.source.path") if saved is not None else None
    data = [f"data.source.path={path}" if o.startswith("data.source.path=") and path else o for o in data]
    chosen = module.hparams.get("choices", {}).get("data")
    if not data and chosen:
        data = [f"data={chosen}"]
    return f"; its run used {' '.join(data)}" if data else ""


def reconcile_with_checkpoint(cfg: dict[str, Any], module: AutoencoderModule, overridden: set[str]) -> None:
    """The checkpoint defines the model; a corruption typed on the command line replaces the stored one
    (to test a denoiser on another corruption). Other architecture keys typed otherwise than the checkpoint
    has them are reported as ignored."""
    for key in sorted(overridden & set(ARCHITECTURE_KEYS) - {"corruption"}):
        if cfg.get(key) == module.hparams.get(key):
            continue  # typed as the checkpoint has it: nothing is ignored
        stored = module.hparams.get("choices", {}).get(key) or module.hparams.get(key)
        log.warning("%s from the command line is ignored: the checkpoint's model has %s=%s", key, key, stored)
    if "corruption" in overridden:
        module.corruption = instantiate(cfg["corruption"])
        log.info(
            "corruption: using the command line's %s, not the checkpoint's", cfg["corruption"]["_target_"]
        )


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True).get("global_step", 0))
