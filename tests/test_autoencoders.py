import math

import pytest
import torch

from vaerun.models.autoencoders import Autoencoder, MCMCRefinedVAE, VariationalAutoencoder
from vaerun.models.latent_paths import lerp, slerp
from vaerun.models.likelihoods import BernoulliLikelihood, GaussianLikelihood
from vaerun.models.networks import MLP, Conv
from vaerun.models.objectives import gradient_noise, kl_normal_standard_normal
from vaerun.models.posteriors import Planar
from vaerun.models.posteriors.hamiltonian import Hamiltonian


def make(model_class, latent=3):
    torch.manual_seed(0)
    return model_class(MLP(hidden=[32]), BernoulliLikelihood(), latent, (1, 8, 8))


def test_vae_loss_is_the_negative_elbo_of_its_terms():
    model = make(VariationalAutoencoder)
    x = torch.rand(16, 1, 8, 8)
    terms = model.loss_terms(x, x)
    torch.testing.assert_close(terms["loss"], terms["recon"] + terms["kl"])
    torch.testing.assert_close(terms["elbo"], -terms["loss"])
    mu, logvar = model.posterior_parameters(x)
    torch.testing.assert_close(terms["kl"], kl_normal_standard_normal(mu, logvar).mean())
    assert terms["kl"] > 0 and terms["recon"] > 0


def test_vae_posterior_and_codes():
    model = make(VariationalAutoencoder)
    x = torch.rand(4, 1, 8, 8)
    posterior = model.posterior(x)
    assert posterior.base.batch_shape == (4,) and posterior.base.event_shape == (3,)
    torch.testing.assert_close(model.encode(x), posterior.base.mean)
    z, log_q = posterior.rsample_and_log_prob((5,))  # the Gaussian: no flow, q's own density
    torch.testing.assert_close(log_q, posterior.base.log_prob(z))
    prior = model.generative_prior()
    torch.testing.assert_close(prior.covariance_matrix, torch.eye(3))


def test_ae_loss_is_the_reconstruction_against_the_clean_target():
    model = make(Autoencoder)
    clean, noisy = torch.rand(8, 1, 8, 8), torch.zeros(8, 1, 8, 8)
    terms = model.loss_terms(noisy, clean)
    expected = -BernoulliLikelihood().log_prob(model.decode(model.encode(noisy)), clean).mean()
    torch.testing.assert_close(terms["loss"], expected)
    assert set(terms) == {"loss", "recon", "mse"}


def test_ae_generates_from_a_gaussian_fitted_to_its_codes():
    model = make(Autoencoder)
    codes = torch.randn(5000, 3) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([3.0, -1.0, 0.0])
    prior = model.generative_prior(codes)
    torch.testing.assert_close(prior.loc, codes.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(prior.covariance_matrix.diagonal(), codes.var(0), rtol=1e-3, atol=1e-5)


def test_lerp_and_slerp_join_the_endpoints():
    z0, z1, t = torch.randn(5, 4), torch.randn(5, 4), torch.linspace(0, 1, 7)
    for interpolate in (lerp, slerp):
        path = interpolate(z0, z1, t)
        assert path.shape == (7, 5, 4)
        torch.testing.assert_close(path[0], z0, atol=1e-5, rtol=0)
        torch.testing.assert_close(path[-1], z1, atol=1e-5, rtol=0)


def test_slerp_keeps_the_norm_on_an_arc_where_lerp_cuts_through_the_centre():
    z0, z1 = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    middle = torch.tensor([0.5])
    assert slerp(z0, z1, middle).norm().item() == pytest.approx(3.0, rel=1e-5)
    assert lerp(z0, z1, middle).norm().item() == pytest.approx(3.0 / 2**0.5, rel=1e-5)
    torch.testing.assert_close(slerp(z0, z0 * 2, torch.tensor([0.5]))[0], z0 * 1.5)  # parallel: a line


def test_the_vae_interpolates_on_arcs_and_the_ae_on_lines():
    assert VariationalAutoencoder.interpolate is slerp and Autoencoder.interpolate is lerp


def test_the_ae_has_no_likelihood():
    x = torch.rand(2, 1, 8, 8)
    assert make(Autoencoder).log_likelihood(x, x, 10) is None
    assert make(VariationalAutoencoder).log_likelihood(x, x, 10).shape == (2,)


def test_beta_weights_the_kl_and_the_warmup_raises_it_from_zero_while_the_elbo_stays_the_elbo():
    torch.manual_seed(0)
    model = VariationalAutoencoder(
        MLP(hidden=[32]), BernoulliLikelihood(), 3, (1, 8, 8), beta=4.0, kl_warmup_epochs=2
    )
    x = torch.rand(16, 1, 8, 8)
    for epochs_done, weight in ((0.0, 0.0), (1.0, 2.0), (5.0, 4.0)):
        model.train()
        model.set_training_progress(epochs_done)
        torch.manual_seed(1)
        terms = model.loss_terms(x, x)
        torch.testing.assert_close(terms["loss"], terms["recon"] + weight * terms["kl"])
        torch.testing.assert_close(terms["elbo"], -(terms["recon"] + terms["kl"]))
        assert terms["kl_weight"].item() == weight
    model.eval()
    model.set_training_progress(0.0)
    terms = model.loss_terms(x, x)  # validation and test score the full objective, whatever the schedule
    torch.testing.assert_close(terms["loss"], terms["recon"] + 4.0 * terms["kl"])


def linear_gaussian_vae(estimator: str, latent: int = 8, pixels: int = 10, noise: float = 0.5):
    torch.manual_seed(0)
    likelihood = GaussianLikelihood(noise, bounded=False)
    return VariationalAutoencoder(
        MLP(hidden=[]), likelihood, latent, (1, 1, pixels), estimator=estimator
    ).double()


def exact_negative_elbo(model, x, noise: float = 0.5):
    """-ELBO of a linear-Gaussian decoder N(Wz + b, s^2 I) in closed form: E_q||x - Wz - b||^2 =
    ||x - W mu - b||^2 + sum_k sigma_k^2 ||W_k||^2."""
    mu, logvar = model.posterior_parameters(x)
    weight, bias = model.decoder[0].weight, model.decoder[0].bias
    squared = (x.flatten(1) - mu @ weight.T - bias).square().sum(-1) + (
        logvar.exp() * weight.square().sum(0)
    ).sum(-1)
    log_likelihood = -0.5 * x[0].numel() * math.log(2 * math.pi * noise**2) - squared / (2 * noise**2)
    return -(log_likelihood - kl_normal_standard_normal(mu, logvar)).mean()


def encoder_gradient(model, loss):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.encoder.parameters()))])


@pytest.mark.parametrize("estimator", ["reparam", "reinforce"])
def test_both_gradient_estimators_give_the_exact_encoder_gradient_in_expectation(estimator):
    model = linear_gaussian_vae(estimator)
    x = torch.randn(1, 1, 1, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = encoder_gradient(model, exact_negative_elbo(model, x))
    model.reinforce_baseline.fill_(-exact_negative_elbo(model, x).item())  # any constant is a valid baseline
    torch.manual_seed(2)
    many = x.expand(400_000, 1, 1, 10)
    estimate = encoder_gradient(model, model.loss_terms(many, many)["loss"])
    assert (estimate - exact).norm() < 0.03 * exact.norm()


def test_reinforce_is_far_noisier_than_the_reparameterisation_trick():
    x = torch.randn(1, 1, 1, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    variances = {}
    for estimator in ("reparam", "reinforce"):
        model = linear_gaussian_vae(estimator)
        model.reinforce_baseline.fill_(-exact_negative_elbo(model, x).item())
        torch.manual_seed(3)
        draws = torch.stack([encoder_gradient(model, model.loss_terms(x, x)["loss"]) for _ in range(200)])
        variances[estimator], _ = gradient_noise(draws)
    assert variances["reinforce"] > 10 * variances["reparam"]


def named_gradients(model, loss) -> dict[str, torch.Tensor]:
    names, parameters = zip(*model.named_parameters(), strict=True)
    return dict(zip(names, torch.autograd.grad(loss, parameters), strict=True))


def test_the_mcmc_vae_trains_its_encoder_on_the_elbo_and_its_decoder_on_refined_codes():
    torch.manual_seed(0)
    kwargs = {"architecture": MLP(hidden=[16]), "likelihood": BernoulliLikelihood(), "latent_dim": 2}
    mcmc = MCMCRefinedVAE(**kwargs, image_shape=(1, 8, 8), mcmc_steps=3, leapfrog_steps=3)
    plain = VariationalAutoencoder(**kwargs, image_shape=(1, 8, 8))
    plain.load_state_dict(mcmc.state_dict(), strict=False)
    x = torch.rand(32, 1, 8, 8)
    torch.manual_seed(1)
    terms = mcmc.loss_terms(x, x)
    grads = named_gradients(mcmc, terms["loss"])
    torch.manual_seed(1)  # the same sample of q: the encoder's gradient is the plain ELBO's, exactly
    plain_terms = plain.loss_terms(x, x)
    plain_grads = named_gradients(plain, plain_terms["loss"])
    for name, grad in grads.items():
        if name.startswith("encoder."):
            torch.testing.assert_close(grad, plain_grads[name])
        else:  # the decoder learns from the refined codes, not from q's sample
            assert not torch.allclose(grad, plain_grads[name])
    torch.testing.assert_close(terms["elbo"], plain_terms["elbo"])
    assert 0 < terms["mcmc_accept"] <= 1 and terms["mcmc_log_joint_gain"] > 0
    mcmc.eval()  # evaluation scores the plain ELBO
    assert set(mcmc.loss_terms(x, x)) == set(plain_terms)


def test_the_mcmc_chains_read_the_decoders_batch_norms_at_their_running_statistics():
    """In training mode a batch norm makes each code's density depend on the batch's other codes; the
    chains' targets must not: their dozens of decoder passes leave the running statistics alone, and only
    the ELBO's pass and the refined codes' pass count."""
    torch.manual_seed(0)
    architecture = Conv(channels=[8, 16], norm=torch.nn.BatchNorm2d)
    mcmc = MCMCRefinedVAE(architecture, BernoulliLikelihood(), 2, (1, 8, 8), mcmc_steps=3, leapfrog_steps=3)
    mcmc.loss_terms(torch.rand(16, 1, 8, 8), torch.rand(16, 1, 8, 8))
    norms = [m for m in mcmc.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(n.training and int(n.num_batches_tracked) == 2 for n in norms)


@pytest.mark.parametrize("model_class", [Autoencoder, VariationalAutoencoder])
def test_imputation_keeps_the_observed_pixels_and_fills_the_others(model_class):
    model = make(model_class).eval()
    x = torch.rand(6, 1, 8, 8)
    mask = torch.rand(6, 1, 8, 8) > 0.5
    with torch.no_grad():
        filled = model.impute(torch.where(mask, x, 0.0), mask, 3)
    assert torch.equal(filled[mask], x[mask])
    assert torch.all((filled >= 0) & (filled <= 1))
    assert not torch.equal(filled[~mask], torch.zeros_like(x[~mask]))  # filled, not left at zero


def test_anomaly_scores_per_image():
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert set(make(Autoencoder).anomaly_scores(x, 10)) == {"reconstruction_error"}
        scores = make(VariationalAutoencoder).eval().anomaly_scores(x, 10)
    assert set(scores) == {"reconstruction_error", "negative_elbo", "nll_iwae"}
    assert all(value.shape == (5,) for value in scores.values())
    assert torch.all(scores["nll_iwae"] > 0)


def test_with_a_monte_carlo_kl_both_estimators_agree_on_the_encoder_gradient():
    """A Student-t prior has no closed-form KL: REINFORCE must weigh the score by the KL's sample too.
    Both estimators, averaged over many samples, then give the same gradient of the same ELBO."""
    from vaerun.models.priors import StudentTPrior

    x = torch.randn(1, 1, 1, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    many = x.expand(400_000, 1, 1, 10)
    estimates = {}
    for estimator in ("reparam", "reinforce"):
        model = linear_gaussian_vae(estimator)
        model.prior = StudentTPrior(df=3.0)
        model.reinforce_baseline.fill_(-exact_negative_elbo(model, x).item())
        torch.manual_seed(2)
        estimates[estimator] = encoder_gradient(model, model.loss_terms(many, many)["loss"])
    difference = (estimates["reinforce"] - estimates["reparam"]).norm()
    assert difference < 0.03 * estimates["reparam"].norm()


def test_a_flow_posteriors_monte_carlo_kl_is_unbiased():
    """With its parameters all zero a planar flow is the identity: the flow VAE's one-sample KL estimate,
    averaged, is the Gaussian VAE's closed-form KL with the same weights."""

    gaussian = make(VariationalAutoencoder)
    torch.manual_seed(0)
    flow = VariationalAutoencoder(MLP(hidden=[32]), BernoulliLikelihood(), 3, (1, 8, 8), posterior=Planar(2))
    with torch.no_grad():  # the same q0 and decoder; the encoder's extra outputs (planar parameters) 0
        for target, source in zip(flow.encoder.parameters(), gaussian.encoder.parameters(), strict=True):
            target.zero_()
            target[: source.shape[0]] = source
        flow.decoder.load_state_dict(gaussian.decoder.state_dict())
    x = torch.rand(4, 1, 8, 8).repeat(1000, 1, 1, 1)
    exact = gaussian.loss_terms(x[:4], x[:4])["kl"]
    torch.testing.assert_close(flow.loss_terms(x, x)["kl"], exact, atol=0.05, rtol=0)


def test_a_metflow_vae_scores_the_elbo_over_its_paths_and_trains_every_part_through_them():
    """MetFlow's maps start as the identity (every proposal accepted, q = q0): its ELBO's expectation is the
    Gaussian VAE's with the same weights. One gradient step later the maps have moved, and the loss's
    gradient reaches the encoder, the decoder and every map."""
    from vaerun.models.posteriors.metflow import MetFlow

    gaussian = make(VariationalAutoencoder)
    torch.manual_seed(0)
    metflow = VariationalAutoencoder(
        MLP(hidden=[32]), BernoulliLikelihood(), 3, (1, 8, 8), posterior=MetFlow(steps=2, hidden=4)
    )
    with torch.no_grad():  # the same q0 and decoder
        for target, source in zip(metflow.encoder.parameters(), gaussian.encoder.parameters(), strict=True):
            target.zero_()
            target[: source.shape[0]] = source
        metflow.decoder.load_state_dict(gaussian.decoder.state_dict())
    x = torch.rand(4, 1, 8, 8).repeat(500, 1, 1, 1)
    torch.manual_seed(1)
    with torch.no_grad():
        terms = metflow.loss_terms(x, x)
        exact = gaussian.loss_terms(x, x)
    assert terms["metflow_accept"] == 1.0
    torch.testing.assert_close(terms["elbo"], exact["elbo"], atol=0.1, rtol=0)
    torch.testing.assert_close(terms["loss"], terms["recon"] + terms["kl"])

    optimizer = torch.optim.Adam(metflow.parameters(), lr=0.05)
    metflow.loss_terms(x[:16], x[:16])["loss"].backward()
    optimizer.step()
    optimizer.zero_grad()
    metflow.loss_terms(x[:16], x[:16])["loss"].backward()
    grads = {name: parameter.grad for name, parameter in metflow.named_parameters()}
    assert all(grad is not None and torch.isfinite(grad).all() for grad in grads.values())
    for part in ("encoder.", "decoder.", "flow.maps.0.", "flow.maps.1."):
        assert any(grad.abs().sum() > 0 for name, grad in grads.items() if name.startswith(part)), part


@pytest.mark.parametrize("family", [Planar, Hamiltonian])
def test_a_flow_vaes_training_loss_leaves_a_non_finite_encoder_output_to_the_loss_guard(family):
    """The training step builds q0 without torch.distributions' validation (it reads values back from the
    device, a sync that a captured CUDA graph cannot hold): a NaN comes out as the loss, for the non-finite
    loss guard to report, not as an error from inside the step."""
    model = VariationalAutoencoder(MLP(hidden=[16]), BernoulliLikelihood(), 2, (1, 8, 8), posterior=family())
    with torch.no_grad():
        next(model.encoder.parameters()).fill_(float("nan"))
    x = torch.rand(4, 1, 8, 8)
    assert torch.isnan(model.loss_terms(x, x)["loss"])
