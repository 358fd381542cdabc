import torch
from torch.distributions import MultivariateNormal, Normal

from vaerun.visualisation import latent_scatter, manifold_codes, reconstruction_grid, standard_normal_grid


def test_standard_normal_grid_has_equal_mass_between_neighbours():
    grid = standard_normal_grid(5)
    assert grid.shape == (25, 2)
    quantiles = Normal(0.0, 1.0).cdf(grid[:5, 0])
    steps = quantiles.diff()
    torch.testing.assert_close(steps, torch.full_like(steps, 0.9 / 4), atol=1e-6, rtol=0)


def test_manifold_codes_follow_the_prior():
    prior = MultivariateNormal(torch.tensor([1.0, -1.0]), scale_tril=torch.diag(torch.tensor([2.0, 0.5])))
    codes = manifold_codes(prior, 4)
    torch.testing.assert_close(codes.mean(0), prior.loc, atol=1e-5, rtol=0)


def test_reconstruction_grid_puts_triples_side_by_side():
    clean, corrupted, recon = torch.zeros(4, 1, 8, 8), torch.full((4, 1, 8, 8), 0.5), torch.ones(4, 1, 8, 8)
    grid = reconstruction_grid(clean, corrupted, recon, triples_per_row=2)
    # 6 columns and 2 rows of 8x8 images with 2-pixel padding
    assert grid.shape == (3, 2 + 2 * 10, 2 + 6 * 10)
    first_row = grid[0, 2:10]
    assert (
        first_row[:, 2:10].max() == 0 and first_row[:, 12:20].min() == 0.5 and first_row[:, 22:30].min() == 1
    )


def test_latent_scatter_is_a_figure_with_every_point():
    figure = latent_scatter(torch.randn(30, 2), torch.arange(30) % 10)
    assert len(figure.axes[0].collections[0].get_offsets()) == 30
