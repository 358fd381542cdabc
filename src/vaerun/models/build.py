"""A model from its ``ModelSpec`` (``_target_`` entries for Hydra's ``instantiate``), as the LightningModule
and ``vaerun.load`` both build it: a checkpoint's hyperparameters rebuild the architecture."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate

from vaerun.core.errors import ConfigError
from vaerun.core.spec import ModelSpec
from vaerun.models.autoencoders import Autoencoder


def build_autoencoder(spec: ModelSpec) -> Autoencoder:
    return instantiate(
        spec.model,
        architecture=instantiate(spec.encoder),
        likelihood=instantiate(spec.likelihood),
        prior=instantiate(spec.prior),
        posterior=instantiate(spec.posterior),
        latent_dim=spec.latent,
        image_shape=list(spec.image_shape),
    )


def check_buildable(config: Mapping[str, Any]) -> None:
    """Raise the ConfigError the config's model refuses itself with (``model=vqvae encoder=mlp``), before
    Lightning is imported and the data read: the model is built on the meta device, with no memory for its
    weights and no arithmetic, where the config gives the image shape and no ``ckpt`` replaces the model.
    Only a ConfigError is an answer here; anything else the run's own build meets again and reports with
    its context."""
    image_shape = config["data"].get("image_shape")
    if config.get("ckpt") is not None or image_shape is None:
        return
    try:
        with torch.device("meta"):
            build_autoencoder(ModelSpec.from_config(config, image_shape))
    except Exception as err:  # Hydra's instantiate chains a part's own refusal as the cause
        refused = err if isinstance(err, ConfigError) else err.__cause__
        if isinstance(refused, ConfigError):
            raise refused from None
