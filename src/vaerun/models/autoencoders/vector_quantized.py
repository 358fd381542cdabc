"""The VQ-VAE (van den Oord et al. 2017): a grid of discrete codes, each the nearest of ``codebook_size``
learned vectors, and a prior over the grid fitted after training (vaerun.models.code_prior)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaerun.core.checks import ConfigError
from vaerun.models.autoencoders.base import Architecture, Autoencoder, Likelihood, Prior
from vaerun.models.code_prior import CodePriorFit, GridPixelCNN
from vaerun.models.likelihoods import squared_error
from vaerun.models.posteriors.family import PosteriorFamily
from vaerun.models.priors import GaussianPrior
from vaerun.models.quantization import EMACodebook, code_counts, perplexity, straight_through


class VQVAE(Autoencoder):
    """z_e(x) is a grid of ``latent``-sized vectors (the conv encoder without its linear layer); each is
    replaced by its nearest codebook vector, and the decoder sees those, with the straight-through
    gradient. loss = -log p(x | z_q) + ``commitment`` * |z_e - sg(z_q)|^2 (summed over the grid, per
    image); the codebook follows exponential moving averages of the vectors assigned to each code
    (``decay``) and restarts codes whose moving count falls below ``restart_below`` (vaerun.models.
    quantization). Training logs the codebook's perplexity and the share of codes a batch uses.

    A code, as the stages see it (``encode``), is the grid of code vectors flattened; ``decode`` snaps
    whatever it is given to the codebook first, so interpolations pass through codes. New images come from
    ``generative_prior``: a PixelCNN fitted to the training images' code grids (``code_prior``), which
    also gives the codes' rate in bits per image."""

    discrete_codes = True

    def __init__(
        self,
        architecture: Architecture,
        likelihood: Likelihood,
        latent_dim: int,
        image_shape: Sequence[int],
        prior: Prior | None = None,
        posterior: PosteriorFamily | None = None,
        codebook_size: int = 512,
        commitment: float = 0.25,
        decay: float = 0.99,
        restart_below: float = 0.1,
        code_prior: CodePriorFit | None = None,
    ) -> None:
        if prior is not None and not isinstance(prior, GaussianPrior):
            raise ConfigError(
                "prior: model=vqvae fits its own prior over the codes after training; use prior=gaussian"
            )
        if posterior is not None and (posterior.is_flow or posterior.uses_target_gradient):
            raise ConfigError("posterior: model=vqvae has no posterior to transform; use posterior=gaussian")
        if not hasattr(architecture, "grid_encoder"):
            raise ConfigError(
                "encoder: model=vqvae needs a grid of codes: use encoder=conv or encoder=resnet"
            )
        super().__init__(architecture, likelihood, latent_dim, image_shape)
        self.grid_shape = tuple(architecture.grid_shape(self.image_shape))
        self.codebook = EMACodebook(codebook_size, self.latent_dim, decay, restart_below)
        self.commitment = float(commitment)
        self.code_prior = code_prior if code_prior is not None else CodePriorFit()

    def build_networks(
        self, architecture: Architecture, posterior: PosteriorFamily | None
    ) -> tuple[nn.Module, nn.Module]:
        encoder = architecture.grid_encoder(self.image_shape, self.latent_dim)
        return encoder, self.likelihood_decoder(architecture.grid_decoder, self.latent_dim)

    @property
    def code_positions(self) -> int:
        return math.prod(self.grid_shape)

    @property
    def code_size(self) -> int:
        return self.code_positions * self.latent_dim

    def _vectors(self, x: Tensor) -> Tensor:
        """The encoder's grid as (N, H, W, D)."""
        return self.encoder(x).permute(0, 2, 3, 1)

    def _decode_grid(self, vectors: Tensor) -> Tensor:
        """(N, H, W, D) code vectors -> the decoder's output."""
        return self.decoder(vectors.permute(0, 3, 1, 2))

    def codes(self, x: Tensor) -> Tensor:
        """The code grid's indices, (N, H, W)."""
        vectors = self._vectors(x)
        _, indices = self.codebook.quantize(vectors.reshape(-1, self.latent_dim))
        return indices.view(vectors.shape[:-1])

    def encode(self, x: Tensor) -> Tensor:
        return self.codebook.embed(self.codes(x)).flatten(1)

    def decode(self, z: Tensor) -> Tensor:
        vectors = z.reshape(len(z), *self.grid_shape, self.latent_dim)
        quantized, _ = self.codebook.quantize(vectors.reshape(-1, self.latent_dim))
        return self._decode_grid(quantized.view_as(vectors))

    def loss_terms(self, x_in: Tensor, target: Tensor) -> dict[str, Tensor]:
        vectors = self._vectors(x_in)
        flat = vectors.reshape(-1, self.latent_dim)
        quantized, indices = self.codebook.quantize(flat)
        if self.training:
            self.codebook.update(flat, indices)
        quantized = quantized.view_as(vectors)
        commitment = ((vectors - quantized.detach()) ** 2).flatten(1).sum(dim=1)
        output = self._decode_grid(straight_through(vectors, quantized))
        recon = -self.likelihood.log_prob(output, target)
        counts = code_counts(indices, self.codebook.num_codes)
        terms = {
            "loss": (recon + self.commitment * commitment).mean(),
            "recon": recon.mean(),
            "mse": squared_error(self.likelihood.mean(output), target).mean(),
            "commitment": commitment.mean(),
            "perplexity": perplexity(counts),
            "codes_used": (counts > 0).float().mean(),
        }
        if self.training:  # restarts since the last step (the epoch's mean: restarts per step)
            terms["code_restarts"] = self.codebook.restarts.clone()
            self.codebook.restarts.zero_()
        return terms

    def generative_prior(self, codes: Tensor) -> GridPixelCNN:
        """A PixelCNN over the code grids of ``codes`` (the training images' ``encode``), fitted now."""
        indices = self._indices_of(codes)
        return self.code_prior.fit(indices, self.codebook.num_codes)

    def sample_codes(
        self, prior: GridPixelCNN, count: int, generator: torch.Generator | None, temperature: float
    ) -> Tensor:
        return self.codebook.embed(prior.sample(count, generator, temperature)).flatten(1)

    def rate_bits(self, prior: GridPixelCNN, codes: Tensor) -> Tensor:
        """-log2 p(code grid) under the fitted prior, bits per image, for codes as ``encode`` gives them."""
        return -prior.log_prob(self._indices_of(codes)) / math.log(2.0)

    @property
    def fixed_rate_bits(self) -> float:
        """The bits of the code grid stored without a prior: log2 K per position."""
        return self.code_positions * math.log2(self.codebook.num_codes)

    def _indices_of(self, codes: Tensor) -> Tensor:
        _, indices = self.codebook.quantize(codes.reshape(-1, self.latent_dim))
        return indices.view(len(codes), *self.grid_shape)
