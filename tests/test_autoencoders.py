import pytest
import torch

from vaerun.autoencoders import Autoencoder, VariationalAutoencoder, lerp, slerp
from vaerun.networks import MLP
from vaerun.objectives import BernoulliLikelihood, kl_normal_standard_normal


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
    assert posterior.batch_shape == (4,) and posterior.event_shape == (3,)
    torch.testing.assert_close(model.encode(x), posterior.mean)
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
