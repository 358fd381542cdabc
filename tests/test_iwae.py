"""model=iwae: the IWAE bound as the training loss (Burda et al. 2016), with the reparameterisation or the
doubly reparameterised gradient (Tucker et al. 2019), on a linear-Gaussian VAE whose log p(x) is known."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY, read_metrics, vae_run

from vaerun.core.errors import ConfigError
from vaerun.models.autoencoders import ImportanceWeightedAutoencoder, VariationalAutoencoder
from vaerun.models.likelihoods import GaussianLikelihood
from vaerun.models.networks import MLP
from vaerun.models.objectives import gradient_noise
from vaerun.models.priors import StudentTPrior

NOISE, PIXELS, LATENT = 0.5, 10, 4


def linear_gaussian(model_class=ImportanceWeightedAutoencoder, **kwargs):
    """x = W z + b + noise: a linear decoder, so log p(x) = log N(x; b, W W^T + s^2 I) exactly."""
    torch.manual_seed(0)
    likelihood = GaussianLikelihood(NOISE, bounded=False)
    return model_class(MLP(hidden=[]), likelihood, LATENT, (1, 1, PIXELS), **kwargs).double()


def exact_log_likelihood(model, x):
    weight, bias = model.decoder[0].weight, model.decoder[0].bias
    covariance = weight @ weight.T + NOISE**2 * torch.eye(PIXELS, dtype=weight.dtype)
    return torch.distributions.MultivariateNormal(bias, covariance).log_prob(x.flatten(1))


def images(count: int, seed: int = 1):
    return torch.randn(
        count, 1, 1, PIXELS, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def gradients(model, loss, part=None):
    parameters = list((part or model).parameters())
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, parameters)])


def test_at_k_1_the_loss_and_gradients_are_the_vaes_with_a_monte_carlo_kl():
    """k = 1: log w = log p(x|z) + log p(z) - log q(z|x) at one sample, the VAE's ELBO with its KL estimated
    at the sample (a Student-t prior, which has no closed form): the same loss and the same gradients."""
    x = images(6)
    iwae = linear_gaussian(k=1, prior=StudentTPrior(3.0))
    vae = linear_gaussian(VariationalAutoencoder, prior=StudentTPrior(3.0))
    vae.load_state_dict(iwae.state_dict())
    torch.manual_seed(5)
    iwae_loss = iwae.loss_terms(x, x)["loss"]
    torch.manual_seed(5)
    vae_loss = vae.loss_terms(x, x)["loss"]
    torch.testing.assert_close(iwae_loss, vae_loss)
    torch.testing.assert_close(gradients(iwae, iwae_loss), gradients(vae, vae_loss))


def test_the_bound_tightens_with_k_toward_the_exact_log_likelihood():
    model = linear_gaussian().eval()
    x = images(4)
    exact = exact_log_likelihood(model, x).mean().item()
    repeated = x.repeat(5000, 1, 1, 1)
    bounds = {}
    with torch.no_grad():
        for k in (1, 5, 50):
            model.k = k
            bounds[k] = model.loss_terms(repeated, repeated)["iwae_bound"].item()
    assert bounds[1] < bounds[5] < bounds[50] < exact + 0.01
    assert exact - bounds[50] < 0.5 * (exact - bounds[1])


@pytest.mark.long
def test_dreg_and_the_reparameterisation_gradient_agree_in_expectation_and_dreg_is_less_noisy():
    """Both gradients of the k=10 bound are unbiased: averaged over 200,000 draws they agree in the encoder
    and in the decoder. Draw by draw, DReG's encoder gradient is far less noisy."""
    x = images(1)
    many = x.expand(200_000, 1, 1, PIXELS)
    means, noise = {}, {}
    for gradient in ("reparam", "dreg"):
        model = linear_gaussian(k=10, gradient=gradient)
        torch.manual_seed(2)
        means[gradient] = gradients(model, model.loss_terms(many, many)["loss"])
        torch.manual_seed(3)
        draws = torch.stack(
            [gradients(model, model.loss_terms(x, x)["loss"], model.encoder) for _ in range(200)]
        )
        noise[gradient], _ = gradient_noise(draws)
    assert (means["dreg"] - means["reparam"]).norm() < 0.03 * means["reparam"].norm()
    assert noise["dreg"] < 0.5 * noise["reparam"]


def test_the_logged_terms_are_the_bound_and_the_elbo_at_the_same_samples():
    model = linear_gaussian(k=7).eval()
    x = images(3)
    terms = model.loss_terms(x, x)
    assert terms["loss"] == -terms["iwae_bound"]
    assert terms["elbo"] <= terms["iwae_bound"]  # Jensen: the mean of the log-weights <= log of their mean
    torch.testing.assert_close(terms["elbo"], -(terms["recon"] + terms["kl"]))
    assert math.isfinite(terms["mse"].item())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 2.0}, "model.beta: model=iwae trains the IWAE bound itself"),
        ({"free_bits": 0.5}, "model.free_bits"),
        ({"k": 0}, "model.k"),
        ({"gradient": "stl"}, "model.gradient"),
    ],
)
def test_what_belongs_to_the_elbo_is_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        linear_gaussian(**kwargs)


def test_bound_elbo_trains_the_elbo_of_the_same_samples_and_refuses_dreg():
    model = linear_gaussian(k=6, bound="elbo")
    x = images(3)
    terms = model.loss_terms(x, x)
    torch.testing.assert_close(terms["loss"], -terms["elbo"])
    assert terms["elbo"] <= terms["iwae_bound"]
    with pytest.raises(ConfigError, match="dreg is a gradient of the IWAE bound"):
        linear_gaussian(bound="elbo", gradient="dreg")


def test_burdas_schedule_is_eight_passes_of_3_to_the_i_epochs():
    from vaerun.training.schedules import burda_passes

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    schedule = burda_passes(optimizer)
    rates = []
    for _ in range(3281):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    starts = [0, 1, 4, 13, 40, 121, 364, 1093]  # pass i starts after 1 + 3 + ... + 3^(i-1) epochs
    for i, start in enumerate(starts):
        assert rates[start] == pytest.approx(1e-3 * 10 ** (-i / 7))
        assert start == 0 or rates[start - 1] == pytest.approx(1e-3 * 10 ** (-(i - 1) / 7))
    assert rates[3279] == rates[3280] == pytest.approx(1e-4)  # 3,280 epochs in all, then the last rate


def test_the_iwae_table_preset_runs_both_depths_tiny_on_mnist5k(tmp_path):
    """+experiment=iwae_table, cut to one k and one bound: the one-layer and the two-layer model, Burda et
    al.'s architectures, dynamic binarisation, the schedule."""
    table = ["-m", "+experiment=iwae_table", "data=mnist5k", "model.k=2", "model.bound=iwae", *TINY,
             "hydra.sweep.dir=table"]  # fmt: skip
    vae_run(*table, cwd=tmp_path)
    for run in ("iwae-iwae-k2-seed0", "vae2-iwae-k2-seed0"):
        metrics = read_metrics(tmp_path / "table" / run)
        assert metrics["test/nll_iwae"] > 0 and metrics["test/binarize"] == "dynamic"
    config = (tmp_path / "table" / "vae2-iwae-k2-seed0" / ".hydra" / "config.yaml").read_text()
    assert "burda_passes" in config and "hidden:\n  - 200\n  - 200" in config
