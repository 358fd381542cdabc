"""The deterministic autoencoder (AE; the DAE is an AE fed corrupted inputs) and the protocols of the parts
every model is built from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from vaerun.models.latent_paths import lerp
from vaerun.models.likelihoods import squared_error
from vaerun.models.networks import detach_features_of_output_channels, zero_output_channels
from vaerun.models.posteriors.family import PosteriorFamily
from vaerun.models.priors import GaussianPrior


class Architecture(Protocol):
    def encoder(self, image_shape: Sequence[int], out_features: int) -> nn.Module: ...
    def decoder(self, latent_dim: int, image_shape: Sequence[int]) -> nn.Module: ...


class Likelihood(Protocol):
    """May add ``log_prob_(decoder_output, x)``: log_prob's numbers, free to overwrite the output (the
    IWAE's log-joint calls it on the decoding it has just made)."""

    values: str  # what log_prob is of (vaerun.models.likelihoods: binary, levels or density)

    def output_channels(self, channels: int) -> int: ...
    def channels_started_at_zero(self, channels: int) -> slice | None: ...
    def channels_on_detached_features(self, channels: int) -> slice | None: ...
    def log_prob(self, decoder_output: Tensor, x: Tensor) -> Tensor: ...
    def mean(self, decoder_output: Tensor) -> Tensor: ...


class Prior(Protocol):
    closed_form_kl: bool

    def log_prob(self, z: Tensor) -> Tensor: ...
    def kl_per_dim(self, mu: Tensor, logvar: Tensor, z: Tensor) -> Tensor: ...
    def standard_sample(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor: ...


class Autoencoder(nn.Module):
    """z = g(x), x_hat = f(z); the loss is the likelihood's negative log-probability of the clean image
    (binary cross-entropy for Bernoulli, scaled squared error for Gaussian), summed over pixels."""

    #: paths between codes: straight lines for a code space without a prior
    interpolate = staticmethod(lerp)
    #: whether codes are indices into a codebook (the VQ-VAE): no traversals or manifold of a continuous
    #: latent space; the stages fit a prior over the codes (``generative_prior``) and report their rate
    discrete_codes = False
    #: whether the forward pass itself takes gradients (a posterior that follows log p(x, z)'s), so that
    #: validation and test need autograd and training differentiates twice
    forward_takes_gradients = False

    def __init__(
        self,
        architecture: Architecture,
        likelihood: Likelihood,
        latent_dim: int,
        image_shape: Sequence[int],
        prior: Prior | None = None,
        posterior: PosteriorFamily | None = None,
    ) -> None:
        """``prior``, ``posterior``: accepted so that every model is built alike; a deterministic
        autoencoder has neither."""
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.image_shape = tuple(int(n) for n in image_shape)
        self.likelihood = likelihood
        self.encoder, self.decoder = self.build_networks(architecture, posterior)

    def build_networks(
        self, architecture: Architecture, posterior: PosteriorFamily | None
    ) -> tuple[nn.Module, nn.Module]:
        """The encoder (images to ``encoder_features`` numbers) and the decoder (codes to the likelihood's
        parameters: as many channels per image channel as it needs)."""
        encoder = architecture.encoder(self.image_shape, self.encoder_features(self.latent_dim, posterior))
        return encoder, self.likelihood_decoder(architecture.decoder, self.latent_dim)

    def likelihood_decoder(
        self, build: Callable[[int, tuple[int, ...]], nn.Module], code_size: int
    ) -> nn.Module:
        """``build(code_size, output_shape)``, a decoder from codes to the likelihood's parameters of one
        image, with the output channels the likelihood starts at 0 for every code (its learned Gaussian
        scales) made so: the last layer's weights to them start at 0; those it learns on detached features
        (a faithful discretized logistic's scales) made from them."""
        channels, *size = self.image_shape
        total = self.likelihood.output_channels(channels)
        decoder = build(code_size, (total, *size))
        started_at_zero = self.likelihood.channels_started_at_zero(channels)
        if started_at_zero is not None:
            zero_output_channels(decoder, started_at_zero, total)
        on_detached = self.likelihood.channels_on_detached_features(channels)
        if on_detached is not None:
            detach_features_of_output_channels(decoder, on_detached, total)
        return decoder

    @property
    def code_size(self) -> int:
        """How many numbers one image's code has (``encode``'s second dimension)."""
        return self.latent_dim

    @staticmethod
    def encoder_features(latent_dim: int, posterior: PosteriorFamily | None) -> int:
        """How many numbers the encoder outputs per image: the code."""
        return latent_dim

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def mean(self, z: Tensor) -> Tensor:
        return self.likelihood.mean(self.decode(z))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.mean(self.encode(x))

    def set_training_progress(self, epochs_done: float) -> None:
        """Nothing in a plain autoencoder's loss changes during training."""

    def impute(self, observed: Tensor, mask: Tensor, iterations: int = 1) -> Tensor:
        """One pass: the reconstruction of the image with its missing pixels zeroed (as the pixel-drop
        corruption a denoiser learns from hides them) fills them; observed pixels stay as observed."""
        return torch.where(mask, observed, self.reconstruct(torch.where(mask, observed, 0.0)))

    def anomaly_scores(self, x: Tensor, iwae_samples: int = 0) -> dict[str, Tensor]:
        """Per-image scores, higher for images unlike the training data: the reconstruction error."""
        return {"reconstruction_error": squared_error(self.reconstruct(x), x)}

    def standard_codes(self, count: int, generator: torch.Generator) -> Tensor:
        """Codes of the standardised generative distribution, which ``generative_prior`` shifts and scales."""
        return torch.randn((count, self.latent_dim), generator=generator)

    def sample_codes(
        self, prior: MultivariateNormal, count: int, generator: torch.Generator | None, temperature: float
    ) -> Tensor:
        """New codes: the standardised distribution's, shifted and scaled by the generative prior
        (``generative_prior``), its spread scaled by ``temperature``."""
        standard = self.standard_codes(count, generator).to(prior.loc.device)
        return prior.loc + temperature * standard @ prior.scale_tril.T

    def standard_quantiles(self, probabilities: Tensor) -> Tensor:
        """The quantile function of one dimension of that standardised distribution."""
        return GaussianPrior().icdf(probabilities)

    def loss_terms(self, x_in: Tensor, target: Tensor) -> dict[str, Tensor]:
        output = self.decode(self.encode(x_in))
        recon = -self.likelihood.log_prob(output, target)
        mse = squared_error(self.likelihood.mean(output), target)
        return {"loss": recon.mean(), "recon": recon.mean(), "mse": mse.mean()}

    def log_likelihood(
        self, x_in: Tensor, target: Tensor, num_samples: int, chunk_size: int = 64
    ) -> Tensor | None:
        """A deterministic autoencoder defines no density p(x)."""
        return None

    def annealed_log_likelihood(
        self,
        x_in: Tensor,
        target: Tensor,
        chains: int,
        temperatures: int,
        leapfrog_steps: int = 5,
        kernel: str = "hmc",
    ) -> tuple[Tensor, Tensor] | None:
        """A deterministic autoencoder defines no density p(x)."""
        return None

    def mcmc_posterior_samples(
        self, x_in: Tensor, target: Tensor, steps: int, leapfrog_steps: int = 5
    ) -> tuple[Tensor, Tensor] | None:
        """A deterministic autoencoder has no posterior to sample."""
        return None

    #: whether ``generative_prior`` is fitted to the training images' codes (a VAE has its own prior)
    prior_is_fitted = True

    def generative_prior(self, codes: Tensor) -> MultivariateNormal:
        """A plain AE has no prior: generate from a Gaussian fitted to the codes of the training images."""
        codes = codes.double()
        covariance = torch.atleast_2d(torch.cov(codes.T))
        jitter = 1e-6 * covariance.diagonal().mean().clamp_min(1e-12)
        covariance = covariance + jitter * torch.eye(self.latent_dim, dtype=codes.dtype, device=codes.device)
        fitted = MultivariateNormal(codes.mean(dim=0), covariance_matrix=covariance)
        return MultivariateNormal(fitted.loc.float(), scale_tril=fitted.scale_tril.float())
