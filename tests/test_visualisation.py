import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from vaerun.training.visualisation import (
    interpolation_grid,
    latent_scatter,
    manifold_codes,
    quantile_grid,
    reconstruction_grid,
    traversal_codes,
)


def test_standard_normal_grid_has_equal_mass_between_neighbours():
    grid = quantile_grid(5)
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


def test_latent_scatter_names_the_classes_it_has_names_for():
    names = ("china", "flower", "sky")
    figure = latent_scatter(torch.randn(30, 2), torch.tensor([0, 2] * 15), class_names=names)
    assert [text.get_text() for text in figure.axes[0].get_legend().get_texts()] == ["china", "sky"]


def test_traversal_rows_sweep_one_dimension_each():
    prior = MultivariateNormal(torch.zeros(3), scale_tril=torch.diag(torch.tensor([1.0, 2.0, 3.0])))
    base = torch.tensor([0.1, 0.2, 0.3])
    codes = traversal_codes(base, prior, max_dims=2, steps=5).reshape(2, 5, 3)
    for d in range(2):
        others = [i for i in range(3) if i != d]
        assert torch.equal(codes[d][:, others], base[others].expand(5, 2))
        assert codes[d][:, d].diff().gt(0).all()  # swept upwards
        assert codes[d][:, d].max() == pytest.approx(prior.scale_tril[d, d].item() * 1.6449, rel=1e-3)


def test_interpolation_grid_frames_each_path_with_its_endpoints():
    start, end = torch.zeros(3, 1, 4, 4), torch.ones(3, 1, 4, 4)
    path = torch.full((5 * 3, 1, 4, 4), 0.5)
    grid = interpolation_grid(start, path, end)
    assert grid.shape == (3, 2 + 3 * 6, 2 + 7 * 6)  # 3 rows of 7 images (4 px + 2 px padding)
    row = grid[0, 2:6]
    assert row[:, 2:6].max() == 0 and row[:, 8:12].min() == 0.5 and row[:, 38:42].min() == 1
