"""The VAE with two stochastic layers of Burda et al. (2016), trained on the IWAE bound (k = 1: the ELBO)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from vaerun.core.checks import ConfigError, check_value
from vaerun.models.autoencoders.base import Architecture, Likelihood
from vaerun.models.autoencoders.importance_weighted import require_the_plain_bound
from vaerun.models.autoencoders.variational import VariationalAutoencoder
from vaerun.models.likelihoods import squared_error
from vaerun.models.objectives import iwae_bound, normal_log_prob_per_dim, standard_normal_log_prob
from vaerun.models.priors import GaussianPrior

Gaussian = tuple[Tensor, Tensor]  # (mean, log-variance)


class GaussianLayer(nn.Module):
    """h -> (mu, log sigma^2) of a diagonal Gaussian through tanh layers (Burda et al.'s stochastic ones)."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int) -> None:
        super().__init__()
        sizes = [in_features, *hidden]
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(sizes):
            layers += [nn.Linear(n_in, n_out), nn.Tanh()]
        self.body = nn.Sequential(*layers, nn.Linear(sizes[-1], 2 * out_features))
        self.out_features = out_features

    def forward(self, h: Tensor) -> Gaussian:
        mu, logvar = self.body(h).split(self.out_features, dim=-1)
        return mu, logvar.clamp(*VariationalAutoencoder.logvar_range)


def diagonal_log_prob(z: Tensor, gaussian: Gaussian) -> Tensor:
    return normal_log_prob_per_dim(z, *gaussian).sum(dim=-1)


class TwoLayerPosterior:
    """q(z1, z2 | x) = q(z1 | x) q(z2 | z1) over the joint code (z1, z2), batch shape (N,): reparameterised
    draws with their log-density, and the log-density at any code (AIS runs on the joint code)."""

    def __init__(self, lower: Gaussian, upper: Callable[[Tensor], Gaussian]) -> None:
        self.lower, self.upper = lower, upper
        self.lower_dim = lower[0].shape[-1]

    def rsample_and_log_prob(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> tuple[Tensor, Tensor]:
        mu, logvar = self.lower
        z1 = mu + torch.exp(0.5 * logvar) * torch.randn(
            (*sample_shape, *mu.shape), dtype=mu.dtype, device=mu.device
        )
        upper = self.upper(z1)
        z2 = upper[0] + torch.exp(0.5 * upper[1]) * torch.randn_like(upper[0])
        log_q = diagonal_log_prob(z1, self.lower) + diagonal_log_prob(z2, upper)
        return torch.cat([z1, z2], dim=-1), log_q

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        with torch.no_grad():
            return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, z: Tensor) -> Tensor:
        z1, z2 = z[..., : self.lower_dim], z[..., self.lower_dim :]
        return diagonal_log_prob(z1, self.lower) + diagonal_log_prob(z2, self.upper(z1))

    def annealing_problem(
        self, log_density: Callable[[Tensor], Tensor]
    ) -> tuple[TwoLayerPosterior, Callable]:
        """AIS starts at q itself, on the joint code, and anneals to p(x, z1, z2)."""
        return self, log_density

    def mean_and_logvar(self) -> Gaussian:
        """The code of x for pictures: q(z1|x)'s mean and q(z2|z1)'s at it; their log-variances."""
        upper = self.upper(self.lower[0])
        return torch.cat([self.lower[0], upper[0]], -1), torch.cat([self.lower[1], upper[1]], -1)


class TwoLayerVAE(VariationalAutoencoder):
    """Two stochastic layers (Burda et al. 2016, section 5): p(z2) = N(0, I), p(z1 | z2) and q(z2 | z1)
    Gaussian through ``hidden`` tanh layers, p(x | z1) the configured decoder and q(z1 | x) the configured
    encoder. The loss is minus the IWAE bound with ``k`` joint samples per image (k = 1: the ELBO, at a
    sample; ``bound="elbo"``: the ELBO estimated with the k samples), with the reparameterisation
    gradient. ``kl_warmup_epochs`` (with k = 1 or ``bound="elbo"``) weights log p(z1, z2) - log q(z1, z2 | x)
    in the training loss by the VAE's linear warm-up (Sonderby et al. 2016 found it lets the upper layer
    learn). The model's code is the joint (z1, z2): its size is the sum of ``latents`` (the top-level
    ``latent`` is not used); the decoder reads z1, and new images are drawn ancestrally, z2, then z1
    given z2."""

    def __init__(
        self,
        architecture: Architecture,
        likelihood: Likelihood,
        latent_dim: int,
        *args,
        latents: Sequence[int] = (100, 50),
        hidden: Sequence[int] = (100, 100),
        k: int = 1,
        bound: str = "iwae",
        **kwargs,
    ) -> None:
        """``latent_dim`` (the top-level ``latent``) gives way to ``latents``; the rest is the VAE's."""
        latents = [int(n) for n in latents]
        if len(latents) != 2 or min(latents) < 1:
            raise ConfigError(f"model.latents must be two sizes >= 1 (z1, then z2), got {latents}")
        check_value("model.k", k)
        check_value("model.bound", bound)
        prior = kwargs.get("prior")
        if prior is not None and not isinstance(prior, GaussianPrior):
            raise ConfigError("prior: model=vae2 has its own prior, p(z2) p(z1 | z2); use prior=gaussian")
        super().__init__(architecture, likelihood, sum(latents), *args, **kwargs)
        if self.kl_warmup_epochs != 0 and bound != "elbo" and k != 1:
            raise ConfigError(
                "model.kl_warmup_epochs: the warm-up weights the ELBO's KL; with model=vae2 it needs "
                "model.k=1 or model.bound=elbo"
            )
        require_the_plain_bound(self, "vae2", warmup_allowed=True)  # where it is allowed: just above
        self.latents, self.k, self.bound = latents, k, bound
        lower, upper = latents
        self.encoder = architecture.encoder(self.image_shape, 2 * lower)  # q(z1 | x)
        self.decoder = self.likelihood_decoder(architecture.decoder, lower)  # p(x | z1)
        self.inference_upper = GaussianLayer(lower, hidden, upper)  # q(z2 | z1)
        self.generative_upper = GaussianLayer(upper, hidden, lower)  # p(z1 | z2)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z[..., : self.latents[0]])

    def posterior(
        self, x: Tensor, target: Tensor | None = None, decode: Callable[[Tensor], Tensor] | None = None
    ) -> TwoLayerPosterior:
        mu, logvar = self.encoder(x).split(self.latents[0], dim=-1)
        return TwoLayerPosterior((mu, logvar.clamp(*self.logvar_range)), self.inference_upper)

    def code_and_logvar(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.posterior(x).mean_and_logvar()

    def log_prior(self, z: Tensor) -> Tensor:
        """log p(z1 | z2) + log p(z2) of joint codes z (..., K1 + K2)."""
        z1, z2 = z[..., : self.latents[0]], z[..., self.latents[0] :]
        return diagonal_log_prob(z1, self.generative_upper(z2)) + standard_normal_log_prob(z2)

    def _decoded(self, z: Tensor, decode: Callable[[Tensor], Tensor]) -> Tensor:
        """The decoder's outputs for codes z (n, N, K), as (n, N, ...)."""
        output = decode(z.reshape(-1, z.shape[-1]))
        return output.reshape(*z.shape[:2], *output.shape[1:])

    def log_joint(self, x: Tensor, z: Tensor, decode: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """log p(x | z1) + log p(z1 | z2) + log p(z2) for joint codes z (n, N, K1 + K2)."""
        return self.likelihood.log_prob(self._decoded(z, decode or self.decode), x) + self.log_prior(z)

    def objective(
        self, x_in: Tensor, target: Tensor, decode: Callable[[Tensor], Tensor]
    ) -> tuple[dict[str, Tensor], Tensor]:
        z, log_q = self.posterior(x_in).rsample_and_log_prob((self.k,))
        output = self._decoded(z, decode)
        log_likelihood, log_prior = self.likelihood.log_prob(output, target), self.log_prior(z)
        log_weights = log_likelihood + log_prior - log_q
        bound = iwae_bound(log_weights)
        # the warm-up's weight rises while training (k = 1 or bound=elbo); evaluation scores the bound itself
        kl_weight = self.kl_weight if self.training else self.beta
        if self.kl_warmup_epochs > 0 and self.training:
            objective = (log_likelihood + kl_weight * (log_prior - log_q)).mean(dim=0)
        else:
            objective = bound if self.bound == "iwae" else log_weights.mean(dim=0)
        terms = {
            "loss": -objective.mean(),
            "iwae_bound": bound.detach().mean(),
            "elbo": log_weights.detach().mean(),
            "recon": -log_likelihood.detach().mean(),
            "kl": (log_q - log_prior).detach().mean(),
            "mse": squared_error(self.likelihood.mean(output[0].detach()), target).mean(),
        }
        if self.kl_warmup_epochs > 0:  # the schedule, for TensorBoard (train/kl_weight)
            terms["kl_weight"] = torch.as_tensor(kl_weight, dtype=bound.dtype, device=bound.device)
        return terms, z[0].detach()

    def negative_elbo(self, x_in: Tensor, target: Tensor) -> Tensor:
        z, log_q = self.posterior(x_in).rsample_and_log_prob((1,))
        return (log_q - self.log_joint(target, z))[0]

    def sample_codes(
        self, prior: MultivariateNormal, count: int, generator: torch.Generator | None, temperature: float
    ) -> Tensor:
        """Ancestral draws: z2 ~ N(0, I), z1 ~ p(z1 | z2), each spread scaled by ``temperature``."""
        device = next(self.parameters()).device
        z2 = temperature * torch.randn((count, self.latents[1]), generator=generator).to(device)
        mu, logvar = self.generative_upper(z2)
        noise = torch.randn((count, self.latents[0]), generator=generator).to(device)
        return torch.cat([mu + temperature * torch.exp(0.5 * logvar) * noise, z2], dim=-1)
