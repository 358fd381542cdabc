"""Priors p(z) of the VAE, picked with the `prior` config group.

Each prior gives log p(z), the KL of a diagonal-Gaussian posterior from it per latent dimension (in closed
form where one exists, else the one-sample Monte Carlo estimate log q(z) - log p(z) at the posterior's own
sample z), and standard samples for generation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from vaerun.core.checks import check_value
from vaerun.models.objectives import (
    kl_normal_standard_normal_per_dim,
    normal_log_prob_per_dim,
    standard_normal_log_prob,
    student_t_log_prob_per_dim,
)


class GaussianPrior:
    """p(z) = N(0, I), the VAE of Kingma & Welling; its KL from a diagonal Gaussian is in closed form."""

    #: the KL does not depend on the sample z (so a score-function estimator leaves it out of its signal)
    closed_form_kl = True

    def log_prob(self, z: Tensor) -> Tensor:
        return standard_normal_log_prob(z)

    def kl_per_dim(self, mu: Tensor, logvar: Tensor, z: Tensor) -> Tensor:
        return kl_normal_standard_normal_per_dim(mu, logvar)

    def standard_sample(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return torch.randn(shape, generator=generator)

    def icdf(self, probabilities: Tensor) -> Tensor:
        """The quantile function of one standard dimension (for the latent manifold and traversals)."""
        return torch.distributions.Normal(0.0, 1.0).icdf(probabilities)

    def __repr__(self) -> str:
        return "GaussianPrior()"


class StudentTPrior:
    """p(z) = prod_d t_df(z_d), independent standard Student-t dimensions (Abiri & Ohlsson 2020): heavier
    tails than the Gaussian, so that codes far from the origin cost less. df -> infinity is the Gaussian.
    The KL has no closed form: it is estimated by Monte Carlo at the posterior's sample."""

    closed_form_kl = False

    def __init__(self, df: float = 3.0) -> None:
        check_value("prior.df", df)
        self.df = float(df)

    def log_prob(self, z: Tensor) -> Tensor:
        return student_t_log_prob_per_dim(z, self.df).sum(dim=-1)

    def kl_per_dim(self, mu: Tensor, logvar: Tensor, z: Tensor) -> Tensor:
        return normal_log_prob_per_dim(z, mu, logvar) - student_t_log_prob_per_dim(z, self.df)

    def standard_sample(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        # torch's Student-t sampler takes no generator; numpy's, seeded from it, keeps samples reproducible
        seed = int(torch.randint(2**62, (1,), generator=generator))
        return torch.from_numpy(np.random.default_rng(seed).standard_t(self.df, size=shape)).float()

    def icdf(self, probabilities: Tensor) -> Tensor:
        from scipy import stats  # torch's Student-t has no quantile function

        return torch.from_numpy(stats.t.ppf(probabilities.double().cpu().numpy(), self.df))

    def __repr__(self) -> str:
        return f"StudentTPrior(df={self.df})"


def mixture_log_prob(z: Tensor, means: Tensor, logvars: Tensor) -> Tensor:
    """log (1/P) sum_p N(z; means_p, diag exp(logvars_p)) for codes z (..., K) and P components (P, K), as
    matrix products: memory grows with the codes times the components, not times the latent size too."""
    inverse_variances = torch.exp(-logvars)  # (P, K)
    squared = (z * z) @ inverse_variances.T - 2 * z @ (means * inverse_variances).T  # (..., P)
    constant = (means * means * inverse_variances + logvars).sum(dim=-1)
    constant = constant + z.shape[-1] * math.log(2 * math.pi)
    log_components = -0.5 * (squared + constant)
    return torch.logsumexp(log_components, dim=-1) - math.log(means.shape[0])


class VampPrior(torch.nn.Module):
    """The VampPrior (Tomczak & Welling 2018): p(z) = (1/P) sum_p q(z | u_p), the mixture of the encoder's
    posteriors at P learned pseudo-inputs u_p, trained with the rest of the model. The KL is estimated by
    Monte Carlo at the posterior's sample (log q(z|x) - log p(z), per image); new codes are drawn from a
    component picked uniformly, its spread scaled by the sampling temperature.

    The VAE binds it to its encoder and input shape (``bind``): the pseudo-inputs are parameters of the
    model, saved in its checkpoints, starting as grey images with a little noise."""

    closed_form_kl = False
    #: its KL does not split into latent dimensions (free bits need that)
    kl_per_dimension = False

    def __init__(self, pseudo_inputs: int = 500) -> None:
        super().__init__()
        check_value("prior.pseudo_inputs", pseudo_inputs)
        self.count = int(pseudo_inputs)
        self._posterior_parameters: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None

    def bind(
        self, input_shape: tuple[int, ...], posterior_parameters: Callable[[Tensor], tuple[Tensor, Tensor]]
    ) -> None:
        generator = torch.Generator().manual_seed(0)
        start = 0.5 + 0.05 * torch.randn((self.count, *input_shape), generator=generator)
        self.pseudo_inputs = torch.nn.Parameter(start)
        self._posterior_parameters = posterior_parameters

    def components(self) -> tuple[Tensor, Tensor]:
        """The mixture's means and log-variances, (P, K): the encoder's q at the pseudo-inputs."""
        if self._posterior_parameters is None:
            raise RuntimeError("VampPrior: bind it to a VAE's encoder first")
        return self._posterior_parameters(self.pseudo_inputs)

    def log_prob(self, z: Tensor) -> Tensor:
        means, logvars = self.components()
        return mixture_log_prob(z, means.to(z.dtype), logvars.to(z.dtype))

    def kl_per_dim(self, mu: Tensor, logvar: Tensor, z: Tensor) -> Tensor:
        """log q(z|x) - log p(z) at the sample, per image (N,): the mixture's density does not factorise."""
        return normal_log_prob_per_dim(z, mu, logvar).sum(dim=-1) - self.log_prob(z)

    def sample_codes(self, count: int, generator: torch.Generator | None, temperature: float) -> Tensor:
        means, logvars = (part.detach() for part in self.components())
        picked = torch.randint(self.count, (count,), generator=generator).to(means.device)
        noise = torch.randn((count, means.shape[-1]), generator=generator).to(means.device)
        return means[picked] + temperature * torch.exp(0.5 * logvars[picked]) * noise

    def standard_sample(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return torch.randn(shape, generator=generator)

    def icdf(self, probabilities: Tensor) -> Tensor:
        """A standard Gaussian's quantiles (for the latent manifold's grid): a mixture has none."""
        return torch.distributions.Normal(0.0, 1.0).icdf(probabilities)

    def extra_repr(self) -> str:
        return f"pseudo_inputs={self.count}"
