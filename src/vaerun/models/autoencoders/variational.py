"""The variational autoencoder, with a Gaussian or flow posterior (vaerun.models.posteriors) and any prior."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor
from torch.distributions import Independent, MultivariateNormal, Normal

from vaerun.core.checks import ConfigError, check_flow_training, check_value
from vaerun.models.autoencoders.base import Architecture, Autoencoder, Likelihood, Prior
from vaerun.models.latent_paths import slerp
from vaerun.models.likelihoods import squared_error
from vaerun.models.mcmc import KERNELS, ais_log_likelihood, run_chains
from vaerun.models.networks import running_statistics
from vaerun.models.objectives import (
    cpu_pass_shape,
    free_bits_kl,
    gaussian_entropy,
    iwae_log_likelihood,
    normal_log_prob_per_dim,
    reparameterize,
    score_function_surrogate,
    warmup_weight,
)
from vaerun.models.posteriors.family import FlowPosterior, PosteriorFamily
from vaerun.models.posteriors.gaussian import Gaussian
from vaerun.models.posteriors.metflow import MetFlowPosterior
from vaerun.models.priors import GaussianPrior


@dataclass
class ELBOSample:
    """One sample z of q(z | x_in) and what the ELBO needs at it: q0's (mu, log sigma^2), the decoder's
    output, log p(target | z) per image, and the KL per image and dimension (per image only, (N,), for a
    flow posterior). For a Markov-chain posterior (MetFlow) the log-likelihood and KL are expectations over
    the chain's accept/reject paths, z and the output those of one path drawn with its probability, and
    ``acceptance`` is the expected share of accepted moves."""

    mu: Tensor
    logvar: Tensor
    z: Tensor
    output: Tensor
    log_likelihood: Tensor
    kl: Tensor
    acceptance: Tensor | None = None

    @property
    def kl_per_image(self) -> Tensor:
        return self.kl.sum(dim=-1) if self.kl.dim() > 1 else self.kl


class VariationalAutoencoder(Autoencoder):
    """q(z|x) = N(mu(x), diag sigma^2(x)), or that Gaussian pushed through a flow (``posterior``,
    vaerun.models.posteriors); p(z) = the prior (N(0, I) by default); loss = -ELBO = -E_q[log p(x|z)] +
    KL(q || p), one sample of q per image, the KL in closed form where it has one (a Gaussian q), else
    estimated at the sample as log q(z|x) - log p(z); nats per image.

    The loss generalises the ELBO without changing what is reported as ``elbo``: ``beta`` weights the KL
    (beta-VAE, Higgins et al. 2017), ``kl_warmup_epochs`` raises that weight linearly from 0 (Bowman et al.
    2016), ``free_bits`` floors each latent dimension's KL (Kingma et al. 2016), and ``estimator`` picks the
    gradient of the expected log-likelihood."""

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
        posterior: PosteriorFamily | None = None,
        beta: float = 1.0,
        kl_warmup_epochs: float = 0.0,
        free_bits: float = 0.0,
        estimator: str = "reparam",
    ) -> None:
        posterior = posterior if posterior is not None else Gaussian()
        super().__init__(architecture, likelihood, latent_dim, image_shape, posterior=posterior)
        check_value("model.estimator", estimator)
        check_flow_training(posterior.is_flow, free_bits, estimator)
        self.prior = prior if prior is not None else GaussianPrior()
        if hasattr(self.prior, "bind"):  # a learned prior on the encoder (the VampPrior)
            self.prior.bind(tuple(self.image_shape), self.prior_posterior_parameters)
            if free_bits != 0:
                raise ConfigError("model.free_bits: the VampPrior's KL does not split into dimensions; set 0")
        self.posterior_family = posterior
        self.flow = posterior.build(self.latent_dim)
        self.beta, self.kl_warmup_epochs = float(beta), float(kl_warmup_epochs)
        self.free_bits = float(free_bits)
        self.estimator = estimator
        # Tensors, not Python floats: a compiled loss reads their new values without recompiling.
        # Not saved: training sets it from the step count at every batch, a resumed run included.
        self.register_buffer(
            "kl_weight", torch.tensor(warmup_weight(self.beta, 0.0, self.kl_warmup_epochs)), persistent=False
        )
        self.register_buffer("reinforce_baseline", torch.zeros(()))

    @property
    def posterior_is_flow(self) -> bool:
        return self.posterior_family.is_flow

    @property
    def forward_takes_gradients(self) -> bool:
        return self.posterior_family.uses_target_gradient

    def set_training_progress(self, epochs_done: float) -> None:
        if self.kl_warmup_epochs > 0:  # else the weight is beta throughout: nothing to do per step
            self.kl_weight.fill_(warmup_weight(self.beta, epochs_done, self.kl_warmup_epochs))

    def standard_codes(self, count: int, generator: torch.Generator) -> Tensor:
        return self.prior.standard_sample((count, self.latent_dim), generator)

    def standard_quantiles(self, probabilities: Tensor) -> Tensor:
        return self.prior.icdf(probabilities)

    def sample_codes(
        self, prior: MultivariateNormal, count: int, generator: torch.Generator | None, temperature: float
    ) -> Tensor:
        """New codes from the model's prior: its own sampler where it has one (a mixture), else the base's."""
        if hasattr(self.prior, "sample_codes"):
            return self.prior.sample_codes(count, generator, temperature)
        return super().sample_codes(prior, count, generator, temperature)

    @staticmethod
    def encoder_features(latent_dim: int, posterior: PosteriorFamily | None) -> int:
        """q0's mean and log-variance, and the flow's context (its per-image parameters)."""
        return 2 * latent_dim + (posterior.context_features(latent_dim) if posterior is not None else 0)

    def _encoded(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(mu, log sigma^2) of q0 and the flow's context."""
        features = self.encoder(x)
        k = self.latent_dim
        mu, logvar, context = features[:, :k], features[:, k : 2 * k], features[:, 2 * k :]
        return mu, logvar.clamp(*self.logvar_range), context

    def posterior_parameters(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log sigma^2) of the Gaussian q0 (q itself for the plain VAE)."""
        return self._encoded(x)[:2]

    def prior_posterior_parameters(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``posterior_parameters`` as a learned prior reads them at its pseudo-inputs: through the encoder's
        batch norms (if any) at their running statistics, so that the prior is one function of the
        parameters in training and evaluation, and the pseudo-inputs do not enter the data's statistics."""
        with running_statistics(self.encoder):
            return self.posterior_parameters(x)

    def posterior(
        self, x: Tensor, target: Tensor | None = None, decode: Callable[[Tensor], Tensor] | None = None
    ) -> FlowPosterior | MetFlowPosterior:
        """q(z | x). A Markov-chain posterior targets p(z | target) (x by default), its decoder ``decode``
        (the model's by default)."""
        mu, logvar, context = self._encoded(x)
        return self._posterior_from(mu, logvar, context, x if target is None else target, decode)

    def _posterior_from(
        self,
        mu: Tensor,
        logvar: Tensor,
        context: Tensor,
        target: Tensor,
        decode: Callable[[Tensor], Tensor] | None,
        validate_args: bool | None = None,
    ) -> FlowPosterior | MetFlowPosterior:
        """q(z | x) from the encoder's outputs for x; a posterior that needs the target gets log p(target, z)
        for points z of any leading shape (..., N, K). ``validate_args=False`` skips torch.distributions'
        check of q0's parameters, which reads values back from the device."""
        base = Independent(Normal(mu, torch.exp(0.5 * logvar), validate_args=validate_args), 1)

        def log_target(z: Tensor) -> Tensor:
            lead = z.shape[:-2]
            return self.log_joint(target, z.reshape(-1, *z.shape[-2:]), decode).reshape(*lead, z.shape[-2])

        return self.posterior_family.distribution(base, self.flow, context, log_target)

    def code_and_logvar(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The code of x for pictures (q's mean for a Gaussian, the flow's image of q0's mean otherwise) and
        q0's log-variances, from one encoder pass."""
        mu, logvar, context = self._encoded(x)
        return self.flow(mu, context)[0], logvar

    def encode(self, x: Tensor) -> Tensor:
        return self.code_and_logvar(x)[0]

    def loss_terms(self, x_in: Tensor, target: Tensor) -> dict[str, Tensor]:
        return self.objective(x_in, target, self.decode)[0]

    def objective(
        self, x_in: Tensor, target: Tensor, decode: Callable[[Tensor], Tensor]
    ) -> tuple[dict[str, Tensor], Tensor]:
        """The loss terms with ``decode`` as the decoder, and the sample z of q they were computed at."""
        sample = self._one_sample(x_in, target, decode)
        log_likelihood, kl = sample.log_likelihood, sample.kl_per_image
        # The KL weight rises during the warm-up while training; evaluation always scores the full objective.
        kl_weight = self.kl_weight if self.training else self.beta
        kl_term = free_bits_kl(sample.kl, self.free_bits) if self.free_bits > 0 else kl.mean()
        expected_log_likelihood = log_likelihood
        if self.estimator == "reinforce":
            # The learning signal is every term whose value depends on z: log p(x|z), and a Monte Carlo KL.
            signal = log_likelihood if self.prior.closed_form_kl else log_likelihood - kl_weight * kl
            log_q = normal_log_prob_per_dim(sample.z, sample.mu, sample.logvar).sum(dim=-1)
            expected_log_likelihood = score_function_surrogate(
                log_likelihood, log_q, self.reinforce_baseline, signal
            )
            if self.training:
                self.reinforce_baseline.lerp_(signal.detach().mean(), self.baseline_rate)
        loss = -expected_log_likelihood.mean() + kl_weight * kl_term
        mse = squared_error(self.likelihood.mean(sample.output), target)
        terms = {
            "loss": loss,
            "elbo": (log_likelihood - kl).mean(),
            "recon": -log_likelihood.mean(),
            "kl": kl.mean(),
            "mse": mse.mean(),
        }
        if self.kl_warmup_epochs > 0:  # the schedule, for TensorBoard (train/kl_weight)
            terms["kl_weight"] = torch.as_tensor(kl_weight, dtype=loss.dtype, device=loss.device)
        if sample.acceptance is not None:
            terms["metflow_accept"] = sample.acceptance.mean()
        return terms, sample.z

    def _one_sample(self, x_in: Tensor, target: Tensor, decode: Callable[[Tensor], Tensor]) -> ELBOSample:
        mu, logvar, context = self._encoded(x_in)
        if self.posterior_family.is_chain:
            return self._chain_sample(mu, logvar, context, target, decode)
        z0 = reparameterize(mu, logvar)
        if self.estimator == "reinforce":
            z0 = z0.detach()  # no gradient through the sample: the encoder learns from the score function
        if self.posterior_is_flow:
            # the training step's q: no host sync, and a non-finite value is the loss guard's to report
            q = self._posterior_from(mu, logvar, context, target, decode, validate_args=False)
            z, log_det = q.transform(z0)
            # E[log q(z|x)] = -H(q0) - E[log det]: q0's entropy in closed form, the rest at the sample (the
            # same expectation as log q0(z0) - log det, with less noise)
            kl = gaussian_entropy(logvar).neg() - log_det - self.prior.log_prob(z)
        else:
            z, kl = z0, self.prior.kl_per_dim(mu, logvar, z0)
        output = decode(z)
        return ELBOSample(mu, logvar, z, output, self.likelihood.log_prob(output, target), kl)

    def _chain_sample(
        self, mu: Tensor, logvar: Tensor, context: Tensor, target: Tensor, decode: Callable[[Tensor], Tensor]
    ) -> ELBOSample:
        """MetFlow's ELBO terms as exact expectations over its chain's paths from one draw of z0 and the
        innovations (vaerun.models.posteriors.metflow)."""
        paths = self._posterior_from(mu, logvar, context, target, decode, validate_args=False).paths()
        weight = paths.log_prob.exp()  # (2^K, N)
        log_prior = self.prior.log_prob(paths.z)
        log_likelihood = (weight * (paths.log_target - log_prior)).sum(0)
        kl = (weight * (paths.log_q - log_prior)).sum(0)
        with torch.no_grad():  # one path per image, for the pictures' and the MSE's sake
            chosen = torch.multinomial(weight.T.clamp_min(0), 1)[:, 0]
            z = paths.z[chosen, torch.arange(len(chosen), device=chosen.device)]
            acceptance = (weight * paths.accepted).sum(0) / self.flow.steps
        return ELBOSample(mu, logvar, z, decode(z), log_likelihood, kl, acceptance)

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
        sample = self._one_sample(x_in, target, self.decode)
        return sample.kl_per_image - sample.log_likelihood

    def anomaly_scores(self, x: Tensor, iwae_samples: int = 0) -> dict[str, Tensor]:
        """The reconstruction error, -ELBO and, with ``iwae_samples`` > 0, the IWAE estimate of -log p(x)."""
        scores = super().anomaly_scores(x)
        scores["negative_elbo"] = self.negative_elbo(x, x)
        if iwae_samples > 0:
            scores["nll_iwae"] = -self.log_likelihood(x, x, iwae_samples)
        return scores

    def log_joint(self, x: Tensor, z: Tensor, decode: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """log p(x, z) = log p(x|z) + log p(z) for samples z (n, N, K) of the codes of images x (N, ...),
        with ``decode`` as the decoder (the model's by default)."""
        n, batch = z.shape[:2]
        output = (decode or self.decode)(z.reshape(n * batch, -1))
        output = output.reshape(n, batch, *output.shape[1:])
        # the decoder's output is this call's own: a likelihood may score it in its buffers (log_prob_)
        log_prob = getattr(self.likelihood, "log_prob_", None) if decode is None else None
        return (log_prob or self.likelihood.log_prob)(output, x) + self.prior.log_prob(z)  # x: over n too

    def log_likelihood(self, x_in: Tensor, target: Tensor, num_samples: int, chunk_size: int = 64) -> Tensor:
        """The IWAE estimate of log p(target) per image, with q(z | x_in) as the proposal (x_in is what the
        encoder was trained to read; any proposal gives a valid importance-sampling estimate). On a CPU the
        images go in groups whose decoder passes stay under CPU_PASS_NUMBERS outputs (cpu_pass_shape)."""
        group, chunk = len(target), chunk_size
        if target.device.type == "cpu":
            group, chunk = cpu_pass_shape(len(target), num_samples, chunk_size, self.outputs_per_sample())
        estimates = []
        for start in range(0, len(target), group):
            images, inputs = target[start : start + group], x_in[start : start + group]
            posterior, log_joint = self.posterior(inputs, images), partial(self.log_joint, images)
            estimates.append(iwae_log_likelihood(posterior, log_joint, num_samples, chunk))
        return torch.cat(estimates)

    def posterior_log_density(self, target: Tensor) -> Callable[[Tensor], Tensor]:
        """z (N, K) -> log p(target, z) per image: the unnormalised log-density of p(z | target) that HMC
        targets."""
        return lambda z: self.log_joint(target, z[None])[0]

    def annealed_log_likelihood(
        self,
        x_in: Tensor,
        target: Tensor,
        chains: int,
        temperatures: int,
        leapfrog_steps: int = 5,
        kernel: str = "hmc",
    ) -> tuple[Tensor, Tensor]:
        """The AIS estimate of log p(target) per image, annealed from q(z | x_in) through transitions of
        ``kernel`` (vaerun.models.mcmc.KERNELS), and the mean acceptance rate.
        With a flow, the chains run on q0's
        space toward p(target, z) pulled back through the flow: the same normaliser, and q at the start;
        with MetFlow they start at q0."""
        step, target_accept = KERNELS[kernel]
        start, log_joint = self.posterior(x_in, target).annealing_problem(lambda z: self.log_joint(target, z))
        return ais_log_likelihood(
            start, log_joint, chains, temperatures, leapfrog_steps, kernel=step, target_accept=target_accept
        )

    def outputs_per_sample(self) -> int:
        """How many numbers the decoder outputs per code (the likelihood's parameters of one image)."""
        return self.likelihood.output_channels(self.image_shape[0]) * math.prod(self.image_shape[1:])

    def mcmc_posterior_samples(
        self, x_in: Tensor, target: Tensor, steps: int, leapfrog_steps: int = 5
    ) -> tuple[Tensor, Tensor]:
        """One sample of q(z | x_in) per image, and that sample moved toward p(z | target) by ``steps`` HMC
        transitions (step size adapted toward 65% acceptance): what q gets wrong, in pictures."""
        z_q = self.posterior(x_in).sample()
        z, _, _ = run_chains(z_q, self.posterior_log_density(target), steps, 0.05, leapfrog_steps)
        return z_q, z

    prior_is_fitted = False

    def generative_prior(self, codes: Tensor | None = None) -> MultivariateNormal:
        """The location and scale of the model's own prior (0 and I; the shape of its standard samples
        comes from ``standard_codes``); the codes are not needed."""
        device = next(self.parameters()).device
        return MultivariateNormal(
            torch.zeros(self.latent_dim, device=device), scale_tril=torch.eye(self.latent_dim, device=device)
        )
