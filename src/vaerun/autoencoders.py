"""The models: a deterministic autoencoder (AE, and the DAE, which is an AE fed corrupted inputs) and the
variational autoencoder. Both share one interface, so the LightningModule and the stages never ask which
model they hold:

- ``loss_terms(x_in, target)``: a dict of per-image means; ``loss`` is what training minimises.
- ``encode(x)``: the code used for pictures (the VAE's posterior mean).
- ``decode(z)``: the decoder's raw output; ``mean(z)``: the image it stands for.
- ``generative_prior(codes)``: the Gaussian to draw new codes from (given the training codes).
- ``interpolate(z0, z1, t)``: paths through latent space between codes.
- ``log_likelihood(x_in, target, k)``: an estimate of log p(target), or None for a model without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from vaerun.objectives import (
    iwae_log_likelihood,
    kl_normal_standard_normal,
    reparameterize,
    squared_error,
    standard_normal_log_prob,
)


def lerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Straight lines between codes (N, K) at fractions t (T,): (T, N, K)."""
    t = t.reshape(-1, 1, 1).to(z0)
    return (1 - t) * z0 + t * z1


def slerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Great-circle paths between codes (White 2016): under a Gaussian prior the straight line passes
    through the low-norm centre, where the prior puts little mass; the arc keeps typical norms."""
    t = t.reshape(-1, 1, 1).to(z0)
    cos = torch.nn.functional.cosine_similarity(z0, z1, dim=-1, eps=1e-8).clamp(-1 + 1e-7, 1 - 1e-7)
    omega = torch.arccos(cos)[None, :, None]
    sin = torch.sin(omega)
    near = sin.abs() < 1e-4  # (anti)parallel codes: fall back to the straight line
    arc = (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.where(near, 1.0, sin)
    return torch.where(near, lerp(z0, z1, t), arc)


class Architecture(Protocol):
    def encoder(self, image_shape: Sequence[int], out_features: int) -> nn.Module: ...
    def decoder(self, latent_dim: int, image_shape: Sequence[int]) -> nn.Module: ...


class Likelihood(Protocol):
    def log_prob(self, decoder_output: Tensor, x: Tensor) -> Tensor: ...
    def mean(self, decoder_output: Tensor) -> Tensor: ...


class Autoencoder(nn.Module):
    """z = g(x), x_hat = f(z); the loss is the likelihood's negative log-probability of the clean image
    (binary cross-entropy for Bernoulli, scaled squared error for Gaussian), summed over pixels."""

    #: how many numbers the encoder outputs per latent dimension
    encoder_outputs_per_latent = 1
    #: paths between codes: straight lines for a code space without a prior
    interpolate = staticmethod(lerp)

    def __init__(
        self,
        architecture: Architecture,
        likelihood: Likelihood,
        latent_dim: int,
        image_shape: Sequence[int],
    ) -> None:
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.image_shape = tuple(int(n) for n in image_shape)
        self.likelihood = likelihood
        self.encoder = architecture.encoder(self.image_shape, self.encoder_outputs_per_latent * latent_dim)
        self.decoder = architecture.decoder(self.latent_dim, self.image_shape)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def mean(self, z: Tensor) -> Tensor:
        return self.likelihood.mean(self.decode(z))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.mean(self.encode(x))

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

    def generative_prior(self, codes: Tensor) -> MultivariateNormal:
        """A plain AE has no prior: generate from a Gaussian fitted to the codes of the training images."""
        codes = codes.double()
        covariance = torch.atleast_2d(torch.cov(codes.T))
        jitter = 1e-6 * covariance.diagonal().mean().clamp_min(1e-12)
        covariance = covariance + jitter * torch.eye(self.latent_dim, dtype=codes.dtype, device=codes.device)
        fitted = MultivariateNormal(codes.mean(dim=0), covariance_matrix=covariance)
        return MultivariateNormal(fitted.loc.float(), scale_tril=fitted.scale_tril.float())


class VariationalAutoencoder(Autoencoder):
    """q(z|x) = N(mu(x), diag sigma^2(x)), p(z) = N(0, I); loss = -ELBO = -E_q[log p(x|z)] + KL(q || p),
    one reparameterised sample per image, the KL in closed form; nats per image."""

    encoder_outputs_per_latent = 2
    interpolate = staticmethod(slerp)

    #: log sigma^2 is kept in this range: exp() of it can neither overflow nor underflow to a zero variance
    logvar_range = (-30.0, 20.0)

    def posterior_parameters(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log sigma^2) of q(z|x)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(*self.logvar_range)

    def posterior(self, x: Tensor) -> Distribution:
        mu, logvar = self.posterior_parameters(x)
        return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)

    def encode(self, x: Tensor) -> Tensor:
        return self.posterior_parameters(x)[0]

    def loss_terms(self, x_in: Tensor, target: Tensor) -> dict[str, Tensor]:
        mu, logvar = self.posterior_parameters(x_in)
        output = self.decode(reparameterize(mu, logvar))
        recon = -self.likelihood.log_prob(output, target)
        kl = kl_normal_standard_normal(mu, logvar)
        loss = recon + kl
        mse = squared_error(self.likelihood.mean(output), target)
        return {
            "loss": loss.mean(),
            "elbo": -loss.mean(),
            "recon": recon.mean(),
            "kl": kl.mean(),
            "mse": mse.mean(),
        }

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x, z) = log p(x|z) + log p(z) for samples z (n, N, K) of the codes of images x (N, ...)."""
        n, batch = z.shape[:2]
        output = self.decode(z.reshape(n * batch, -1)).reshape(n, batch, *x.shape[1:])
        return self.likelihood.log_prob(output, x) + standard_normal_log_prob(z)  # x broadcasts over n

    def log_likelihood(self, x_in: Tensor, target: Tensor, num_samples: int, chunk_size: int = 64) -> Tensor:
        """The IWAE estimate of log p(target) per image, with q(z | x_in) as the proposal (x_in is what the
        encoder was trained to read; any proposal gives a valid importance-sampling estimate)."""
        return iwae_log_likelihood(
            self.posterior(x_in), lambda z: self.log_joint(target, z), num_samples, chunk_size
        )

    def generative_prior(self, codes: Tensor | None = None) -> MultivariateNormal:
        """The model's own prior N(0, I); the codes are not needed."""
        device = next(self.parameters()).device
        return MultivariateNormal(
            torch.zeros(self.latent_dim, device=device), scale_tril=torch.eye(self.latent_dim, device=device)
        )
