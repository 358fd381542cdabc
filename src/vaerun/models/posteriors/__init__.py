"""The VAE's approximate posteriors q(z|x): the Gaussian, amortised flows on it, MetFlow's chain and the
Hamiltonian VAE's flow; ``family`` holds what they share."""

from vaerun.models.posteriors.family import FlowPosterior, PosteriorFamily, TransformFamily
from vaerun.models.posteriors.flows import IAF, Planar
from vaerun.models.posteriors.gaussian import Gaussian, Identity
from vaerun.models.posteriors.hamiltonian import Hamiltonian
from vaerun.models.posteriors.metflow import MetFlow

__all__ = [
    "IAF",
    "FlowPosterior",
    "Gaussian",
    "Hamiltonian",
    "Identity",
    "MetFlow",
    "Planar",
    "PosteriorFamily",
    "TransformFamily",
]
