"""Priors p(z) of the VAE, picked with the `prior` config group.

Each prior gives log p(z), the KL of a diagonal-Gaussian posterior from it per latent dimension (in closed
form where one exists, else the one-sample Monte Carlo estimate log q(z) - log p(z) at the posterior's own
sample z), and standard samples for generation.
"""

from __future__ import annotations

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
