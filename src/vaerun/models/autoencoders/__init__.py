"""The models: a deterministic autoencoder (AE, and the DAE, which is an AE fed corrupted inputs) and the
variational autoencoder. Both share one interface, so the LightningModule and the stages never ask which
model they hold:

- ``loss_terms(x_in, target)``: a dict of per-image means; ``loss`` is what training minimises.
- ``encode(x)``: the code used for pictures (the VAE's posterior mean).
- ``decode(z)``: the decoder's raw output; ``mean(z)``: the image it stands for.
- ``generative_prior(codes)``: the Gaussian to draw new codes from (given the training codes, where
  ``prior_is_fitted``; a VAE's is its own prior and takes None).
- ``interpolate(z0, z1, t)``: paths through latent space between codes.
- ``log_likelihood(x_in, target, k)``: an estimate of log p(target), or None for a model without one.
- ``set_training_progress(epochs)``: schedules that follow training (the KL warm-up).
- ``impute(observed, mask, iterations)``: the missing pixels (mask False) filled in, observed ones kept.
- ``anomaly_scores(x, k)``: per-image scores, higher for images unlike the training data.

The VQ-VAE's codes are discrete (``discrete_codes``): its ``generative_prior`` is fitted to the codes, and
``rate_bits(prior, codes)`` gives their bits per image.
"""

from vaerun.models.autoencoders.base import Autoencoder
from vaerun.models.autoencoders.hierarchical import TwoLayerVAE
from vaerun.models.autoencoders.importance_weighted import ImportanceWeightedAutoencoder
from vaerun.models.autoencoders.refined import MCMCRefinedVAE
from vaerun.models.autoencoders.variational import VariationalAutoencoder
from vaerun.models.autoencoders.vector_quantized import VQVAE

# the configs and the checkpoints name the models vaerun.models.autoencoders.NAME
__all__ = [
    "VQVAE",
    "Autoencoder",
    "ImportanceWeightedAutoencoder",
    "MCMCRefinedVAE",
    "TwoLayerVAE",
    "VariationalAutoencoder",
]
