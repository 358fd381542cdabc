"""prior=vamp: the VampPrior's mixture density against torch.distributions, its samples' moments, its
pseudo-inputs learned with the model and saved in its checkpoints."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, vae_run
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import vaerun
from vaerun.core.errors import ConfigError
from vaerun.models.autoencoders import ImportanceWeightedAutoencoder, VariationalAutoencoder
from vaerun.models.likelihoods import BernoulliLikelihood
from vaerun.models.networks import MLP, Conv
from vaerun.models.priors import VampPrior, mixture_log_prob


def mixture(means, logvars) -> MixtureSameFamily:
    weights = Categorical(logits=torch.zeros(means.shape[0], dtype=means.dtype))
    return MixtureSameFamily(weights, Independent(Normal(means, torch.exp(0.5 * logvars)), 1))


def test_the_mixture_density_is_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    logvars = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    z = 2 * torch.randn(5, 11, 3, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(mixture_log_prob(z, means, logvars), mixture(means, logvars).log_prob(z))


def vamp_vae(model_class=VariationalAutoencoder, **kwargs):
    torch.manual_seed(0)
    return model_class(
        MLP(hidden=[32]), BernoulliLikelihood(), 3, (1, 8, 8), prior=VampPrior(pseudo_inputs=20), **kwargs
    ).double()


def test_with_batch_norm_the_prior_reads_the_encoder_at_its_running_statistics():
    """A conv encoder's batch norms (encoder=conv's default): the pseudo-inputs go through them at their
    running statistics, so the prior is the same function in training and evaluation, and only the data's
    batches move the statistics."""
    torch.manual_seed(0)
    architecture = Conv(channels=[4, 8], norm=torch.nn.BatchNorm2d)
    model = VariationalAutoencoder(architecture, BernoulliLikelihood(), 3, (1, 8, 8), prior=VampPrior(20))
    x = torch.rand(16, 1, 8, 8)
    model.loss_terms(x, x)["loss"].backward()
    norms = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(int(n.num_batches_tracked) == 1 for n in norms)  # the data's batch alone
    assert model.prior.pseudo_inputs.grad.abs().sum() > 0  # the pseudo-inputs still learn through them
    training = model.prior.components()
    model.eval()
    for part, in_eval in zip(training, model.prior.components(), strict=True):
        torch.testing.assert_close(part, in_eval)


def test_the_prior_is_the_mixture_of_the_encoders_posteriors_at_the_pseudo_inputs_and_learns_them():
    model = vamp_vae()
    means, logvars = model.posterior_parameters(model.prior.pseudo_inputs)
    assert means.shape == (20, 3)
    z = torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(model.prior.log_prob(z), mixture(means, logvars).log_prob(z))
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    loss = model.loss_terms(x, x)["loss"]
    names = [name for name, _ in model.named_parameters()]
    gradients = dict(zip(names, torch.autograd.grad(loss, list(model.parameters())), strict=True))
    assert "prior.pseudo_inputs" in gradients and gradients["prior.pseudo_inputs"].abs().sum() > 0


def test_new_codes_come_from_the_mixture():
    model = vamp_vae().float()
    means, logvars = (part.detach() for part in model.prior.components())
    draws = model.sample_codes(
        model.generative_prior(), 200_000, torch.Generator().manual_seed(1), temperature=1.0
    )
    target = mixture(means.double(), logvars.double())
    torch.testing.assert_close(draws.double().mean(0), target.mean, atol=0.01, rtol=0)
    torch.testing.assert_close(draws.double().var(0), target.variance, atol=0.02, rtol=0.02)


def test_the_iwae_uses_the_vampprior_and_free_bits_are_refused():
    model = vamp_vae(ImportanceWeightedAutoencoder, k=4)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    assert torch.isfinite(model.loss_terms(x, x)["loss"])
    with pytest.raises(ConfigError, match=r"model\.free_bits"):
        vamp_vae(free_bits=0.5)


def test_a_vampprior_run_saves_its_pseudo_inputs_and_loads_to_sample(tmp_path):
    vae_run("prior=vamp", "prior.pseudo_inputs=30", "data=digits", *TINY, "hydra.run.dir=run", cwd=tmp_path)
    model = vaerun.load(tmp_path / "run")
    assert model.network.prior.pseudo_inputs.shape == (30, 1, 8, 8)
    assert model.sample(5, seed=0).shape == (5, 1, 8, 8)
