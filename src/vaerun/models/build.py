"""A model from its ``ModelSpec`` (``_target_`` entries for Hydra's ``instantiate``), as the LightningModule
and ``vaerun.load`` both build it: a checkpoint's hyperparameters rebuild the architecture."""

from __future__ import annotations

from hydra.utils import instantiate

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
