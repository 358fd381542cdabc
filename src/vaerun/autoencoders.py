"""The models: a deterministic autoencoder (AE, and the DAE, which is an AE fed corrupted inputs) and the
variational autoencoder. Both share one interface, so the LightningModule and the stages never ask which
model they hold:

- ``loss_terms(x_in, target)``: a dict of per-image means; ``loss`` is what training minimises.
- ``encode(x)``: the code used for pictures (the VAE's posterior mean).
- ``decode(z)``: the decoder's raw output; ``mean(z)``: the image it stands for.
- ``generative_prior(codes)``: the Gaussian to draw new codes from (given the training codes).
- ``interpolate(z0, z1, t)``: paths through latent space between codes.
- ``log_likelihood(x_in, target, k)``: an estimate of log p(target), or None for a model without one.
- ``set_training_progress(epochs)``: schedules that follow training (the KL warm-up).
- ``impute(observed, mask, iterations)``: the missing pixels (mask False) filled in, observed ones kept.
- ``anomaly_scores(x, k)``: per-image scores, higher for images unlike the training data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal
from torch.func import functional_call

from vaerun.config_checks import check_value
from vaerun.mcmc import ais_log_likelihood, hmc
from vaerun.objectives import (
    free_bits_kl,
    iwae_log_likelihood,
    normal_log_prob_per_dim,
    reparameterize,
    score_function_surrogate,
    squared_error,
    warmup_weight,
)
from vaerun.priors import GaussianPrior


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
    def output_channels(self, channels: int) -> int: ...
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
        prior: Prior | None = None,
    ) -> None:
        """``prior``: accepted so that every model is built alike; a deterministic autoencoder has none."""
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.image_shape = tuple(int(n) for n in image_shape)
        self.likelihood = likelihood
        self.encoder = architecture.encoder(self.image_shape, self.encoder_outputs_per_latent * latent_dim)
        # the decoder outputs the likelihood's parameters: as many channels per image channel as it needs
        channels, *size = self.image_shape
        self.decoder = architecture.decoder(self.latent_dim, (likelihood.output_channels(channels), *size))

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
        self, x_in: Tensor, target: Tensor, chains: int, temperatures: int, leapfrog_steps: int = 5
    ) -> tuple[Tensor, Tensor] | None:
        """A deterministic autoencoder defines no density p(x)."""
        return None

    def mcmc_posterior_samples(
        self, x_in: Tensor, target: Tensor, steps: int, leapfrog_steps: int = 5
    ) -> tuple[Tensor, Tensor] | None:
        """A deterministic autoencoder has no posterior to sample."""
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
    """q(z|x) = N(mu(x), diag sigma^2(x)), p(z) = the prior (N(0, I) by default); loss = -ELBO =
    -E_q[log p(x|z)] + KL(q || p), one sample of q per image, the KL in closed form where it has one;
    nats per image.

    The loss generalises the ELBO without changing what is reported as ``elbo``: ``beta`` weights the KL
    (beta-VAE, Higgins et al. 2017), ``kl_warmup_epochs`` raises that weight linearly from 0 (Bowman et al.
    2016), ``free_bits`` floors each latent dimension's KL (Kingma et al. 2016), and ``estimator`` picks the
    gradient of the expected log-likelihood."""

    encoder_outputs_per_latent = 2
    interpolate = staticmethod(slerp)

    #: log sigma^2 is kept in this range: exp() of it can neither overflow nor underflow to a zero variance
    logvar_range = (-30.0, 20.0)
    #: the REINFORCE baseline is a running mean of the learning signal with this weight on the newest batch
    baseline_rate = 0.1

    def __init__(
        self,
        architecture: Architecture,
        likelihood: Likelihood,
        latent_dim: int,
        image_shape: Sequence[int],
        prior: Prior | None = None,
        beta: float = 1.0,
        kl_warmup_epochs: float = 0.0,
        free_bits: float = 0.0,
        estimator: str = "reparam",
    ) -> None:
        super().__init__(architecture, likelihood, latent_dim, image_shape)
        check_value("model.estimator", estimator)
        self.prior = prior if prior is not None else GaussianPrior()
        self.beta, self.kl_warmup_epochs = float(beta), float(kl_warmup_epochs)
        self.free_bits = float(free_bits)
        self.estimator = estimator
        # Tensors, not Python floats: a compiled loss reads their new values without recompiling.
        # Not saved: training sets it from the step count at every batch, a resumed run included.
        self.register_buffer(
            "kl_weight", torch.tensor(warmup_weight(self.beta, 0.0, self.kl_warmup_epochs)), persistent=False
        )
        self.register_buffer("reinforce_baseline", torch.zeros(()))

    def set_training_progress(self, epochs_done: float) -> None:
        if self.kl_warmup_epochs > 0:  # else the weight is beta throughout: nothing to do per step
            self.kl_weight.fill_(warmup_weight(self.beta, epochs_done, self.kl_warmup_epochs))

    def standard_codes(self, count: int, generator: torch.Generator) -> Tensor:
        return self.prior.standard_sample((count, self.latent_dim), generator)

    def standard_quantiles(self, probabilities: Tensor) -> Tensor:
        return self.prior.icdf(probabilities)

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
        return self.objective(x_in, target, self.decode)[0]

    def objective(
        self, x_in: Tensor, target: Tensor, decode: Callable[[Tensor], Tensor]
    ) -> tuple[dict[str, Tensor], Tensor]:
        """The loss terms with ``decode`` as the decoder, and the sample z of q they were computed at."""
        mu, logvar, z, output, log_likelihood, kl_per_dim = self._one_sample(x_in, target, decode)
        kl = kl_per_dim.sum(dim=-1)
        # The KL weight rises during the warm-up while training; evaluation always scores the full objective.
        kl_weight = self.kl_weight if self.training else self.beta
        kl_term = free_bits_kl(kl_per_dim, self.free_bits) if self.free_bits > 0 else kl.mean()
        expected_log_likelihood = log_likelihood
        if self.estimator == "reinforce":
            # The learning signal is every term whose value depends on z: log p(x|z), and a Monte Carlo KL.
            signal = log_likelihood if self.prior.closed_form_kl else log_likelihood - kl_weight * kl
            log_q = normal_log_prob_per_dim(z, mu, logvar).sum(dim=-1)
            expected_log_likelihood = score_function_surrogate(
                log_likelihood, log_q, self.reinforce_baseline, signal
            )
            if self.training:
                self.reinforce_baseline.lerp_(signal.detach().mean(), self.baseline_rate)
        loss = -expected_log_likelihood.mean() + kl_weight * kl_term
        mse = squared_error(self.likelihood.mean(output), target)
        terms = {
            "loss": loss,
            "elbo": (log_likelihood - kl).mean(),
            "recon": -log_likelihood.mean(),
            "kl": kl.mean(),
            "mse": mse.mean(),
        }
        if self.kl_warmup_epochs > 0:  # the schedule, for TensorBoard (train/kl_weight)
            terms["kl_weight"] = torch.as_tensor(kl_weight, dtype=loss.dtype, device=loss.device)
        return terms, z

    def _one_sample(
        self, x_in: Tensor, target: Tensor, decode: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One sample z of q(z | x_in) and what the ELBO needs at it: (mu, log sigma^2, z, the decoder's
        output, log p(target | z) per image, the KL per image and dimension)."""
        mu, logvar = self.posterior_parameters(x_in)
        z = reparameterize(mu, logvar)
        if self.estimator == "reinforce":
            z = z.detach()  # no gradient through the sample: the encoder learns from the score function
        output = decode(z)
        log_likelihood = self.likelihood.log_prob(output, target)
        return mu, logvar, z, output, log_likelihood, self.prior.kl_per_dim(mu, logvar, z)

    def impute(self, observed: Tensor, mask: Tensor, iterations: int = 20) -> Tensor:
        """Pseudo-Gibbs sampling (Rezende et al. 2014, appendix F): starting from the missing pixels zeroed,
        ``iterations`` times draw z ~ q(z | current image) and replace the missing pixels by the mean of
        p(x|z), keeping the observed pixels fixed."""
        current = torch.where(mask, observed, 0.0)
        for _ in range(max(1, iterations)):
            current = torch.where(mask, observed, self.mean(self.posterior(current).sample()))
        return current

    def negative_elbo(self, x_in: Tensor, target: Tensor) -> Tensor:
        """-ELBO per image, one sample of q(z | x_in): (N,)."""
        *_, log_likelihood, kl_per_dim = self._one_sample(x_in, target, self.decode)
        return kl_per_dim.sum(dim=-1) - log_likelihood

    def anomaly_scores(self, x: Tensor, iwae_samples: int = 0) -> dict[str, Tensor]:
        """The reconstruction error, -ELBO and, with ``iwae_samples`` > 0, the IWAE estimate of -log p(x)."""
        scores = super().anomaly_scores(x)
        scores["negative_elbo"] = self.negative_elbo(x, x)
        if iwae_samples > 0:
            scores["nll_iwae"] = -self.log_likelihood(x, x, iwae_samples)
        return scores

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x, z) = log p(x|z) + log p(z) for samples z (n, N, K) of the codes of images x (N, ...)."""
        n, batch = z.shape[:2]
        output = self.decode(z.reshape(n * batch, -1))
        output = output.reshape(n, batch, *output.shape[1:])
        return self.likelihood.log_prob(output, x) + self.prior.log_prob(z)  # x broadcasts over n

    def log_likelihood(self, x_in: Tensor, target: Tensor, num_samples: int, chunk_size: int = 64) -> Tensor:
        """The IWAE estimate of log p(target) per image, with q(z | x_in) as the proposal (x_in is what the
        encoder was trained to read; any proposal gives a valid importance-sampling estimate)."""
        return iwae_log_likelihood(
            self.posterior(x_in), lambda z: self.log_joint(target, z), num_samples, chunk_size
        )

    def posterior_log_density(self, target: Tensor) -> Callable[[Tensor], Tensor]:
        """z (N, K) -> log p(target, z) per image: the unnormalised log-density of p(z | target) that HMC
        targets."""
        return lambda z: self.log_joint(target, z[None])[0]

    def annealed_log_likelihood(
        self, x_in: Tensor, target: Tensor, chains: int, temperatures: int, leapfrog_steps: int = 5
    ) -> tuple[Tensor, Tensor]:
        """The AIS estimate of log p(target) per image, annealed from q(z | x_in) through HMC transitions,
        and the mean acceptance rate."""
        return ais_log_likelihood(
            self.posterior(x_in), lambda z: self.log_joint(target, z), chains, temperatures, leapfrog_steps
        )

    def mcmc_posterior_samples(
        self, x_in: Tensor, target: Tensor, steps: int, leapfrog_steps: int = 5
    ) -> tuple[Tensor, Tensor]:
        """One sample of q(z | x_in) per image, and that sample moved toward p(z | target) by ``steps`` HMC
        transitions (step size adapted toward 65% acceptance): what q gets wrong, in pictures."""
        z_q = self.posterior(x_in).sample()
        z, _, _ = hmc(z_q, self.posterior_log_density(target), steps, 0.05, leapfrog_steps)
        return z_q, z

    def generative_prior(self, codes: Tensor | None = None) -> MultivariateNormal:
        """The location and scale of the model's own prior (0 and I; the shape of its standard samples
        comes from ``standard_codes``); the codes are not needed."""
        device = next(self.parameters()).device
        return MultivariateNormal(
            torch.zeros(self.latent_dim, device=device), scale_tril=torch.eye(self.latent_dim, device=device)
        )


class MCMCRefinedVAE(VariationalAutoencoder):
    """A VAE whose decoder learns from codes refined by MCMC (Hoffman 2017; cf. MetVAE, Thin et al. 2020).

    By Fisher's identity, grad_theta log p(x) = E_p(z|x)[grad_theta log p(x, z)]: the decoder's gradient is
    exact at samples of the true posterior, which the ELBO replaces by q. Here ``mcmc_steps`` HMC
    transitions targeting p(z|x) ~ p(x|z) p(z) start from q's sample, and the decoder is trained to
    maximise log p(x|z) at the refined codes; the encoder keeps its ELBO, computed with the decoder's
    weights held fixed. The step size adapts toward ``target_accept`` from batch to batch. The training
    loss is the sum of the two objectives; evaluation scores the plain ELBO, like any VAE."""

    def __init__(
        self,
        *args,
        mcmc_steps: int = 5,
        leapfrog_steps: int = 5,
        step_size: float = 0.05,
        target_accept: float = 0.65,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.mcmc_steps, self.leapfrog_steps = int(mcmc_steps), int(leapfrog_steps)
        self.target_accept = float(target_accept)
        self.register_buffer("mcmc_step_size", torch.tensor(float(step_size)))  # saved: a resume continues it

    def loss_terms(self, x_in: Tensor, target: Tensor) -> dict[str, Tensor]:
        if not self.training or self.mcmc_steps == 0:
            return super().loss_terms(x_in, target)
        fixed = {name: value.detach() for name, value in self.decoder.state_dict(keep_vars=True).items()}
        terms, z_q = self.objective(x_in, target, lambda z: functional_call(self.decoder, fixed, (z,)))

        log_joint = self.posterior_log_density(target)
        z_q = z_q.detach()
        z, step_size, acceptance = hmc(
            z_q, log_joint, self.mcmc_steps, self.mcmc_step_size, self.leapfrog_steps, self.target_accept
        )
        self.mcmc_step_size.copy_(step_size)
        refined = log_joint(z)  # the decoder's gradient: the prior term carries none
        with torch.no_grad():
            # log p(x, z_q) from the encoder's terms (its log p(x|z_q) is -recon), not one more decoder pass
            gain = refined.mean() + terms["recon"] - self.prior.log_prob(z_q).mean()
        terms["loss"] = terms["loss"] - refined.mean()
        terms["mcmc_accept"] = acceptance.mean()
        terms["mcmc_log_joint_gain"] = gain  # how much the chains raised log p(x, z) over q's sample
        terms["mcmc_step_size"] = self.mcmc_step_size.clone()
        return terms
