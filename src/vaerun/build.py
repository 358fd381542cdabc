"""A model from its config dicts (``_target_`` entries for Hydra's ``instantiate``), as the LightningModule
and ``vaerun.load`` both build it: the checkpoint's hyperparameters rebuild the architecture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.utils import instantiate

from vaerun.autoencoders import Autoencoder
from vaerun.config_checks import DEFAULT_POSTERIOR


def build_autoencoder(
    model: dict[str, Any],
    encoder: dict[str, Any],
    likelihood: dict[str, Any],
    prior: dict[str, Any],
    latent: int,
    image_shape: Sequence[int],
    posterior: dict[str, Any] | None = None,
) -> Autoencoder:
    """``posterior`` None: the Gaussian (checkpoints from before the posterior group have none)."""
    return instantiate(
        model,
        architecture=instantiate(encoder),
        likelihood=instantiate(likelihood),
        prior=instantiate(prior),
        posterior=instantiate(posterior if posterior is not None else {"_target_": DEFAULT_POSTERIOR}),
        latent_dim=latent,
        image_shape=list(image_shape),
    )
