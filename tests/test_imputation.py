"""Missingness patterns, baselines, and metrics that look at the missing pixels only."""

import pytest
import torch

from vaerun.evaluation.baselines import fit_pca
from vaerun.evaluation.imputation import (
    column_mean_imputation,
    missing_completely_at_random,
    missing_pixel_metrics,
    observed_only,
    pca_imputation,
)
from vaerun.models.corruption import random_squares

SHAPE = torch.Size((200, 1, 12, 12))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_mcar_hides_the_requested_fraction_independently_of_position(rate):
    mask = missing_completely_at_random(SHAPE, rate, torch.Generator().manual_seed(0))
    assert mask.shape == SHAPE and mask.dtype == torch.bool
    assert (~mask).float().mean().item() == pytest.approx(rate, abs=0.01)
    by_pixel = (~mask).float().mean(dim=0)  # every position equally likely to be missing
    assert (by_pixel - rate).abs().max() < 0.15


def test_a_block_hides_one_square_of_the_given_size_per_image():
    hidden = random_squares(SHAPE, 5, torch.Generator().manual_seed(0))[:, 0]
    assert torch.all(hidden.sum(dim=(1, 2)) == 25)
    rows, cols = hidden.any(dim=2), hidden.any(dim=1)
    assert torch.all(rows.sum(1) == 5) and torch.all(cols.sum(1) == 5)  # contiguous 5 x 5
    assert len({tuple(r.nonzero().flatten().tolist()) for r in rows}) > 1  # at different places


def test_metrics_count_the_missing_pixels_only():
    truth = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    mask = missing_completely_at_random(truth.shape, 0.5, torch.Generator().manual_seed(1))
    perfect_where_missing = torch.where(mask, 1 - truth, truth)  # wrong everywhere it was observed
    metrics = missing_pixel_metrics(perfect_where_missing, truth, mask)
    assert metrics["mse"] == 0 and metrics["psnr"] > 100
    off = torch.where(mask, truth, (truth + 0.1).clamp(max=1))
    assert missing_pixel_metrics(off, truth, mask)["mse"] == pytest.approx(
        ((off - truth)[~mask]).square().mean().item()
    )


def test_baselines_keep_the_observed_pixels_and_pca_recovers_low_rank_images():
    generator = torch.Generator().manual_seed(0)
    basis = torch.rand(3, 1, 12, 12, generator=generator)
    weights = torch.rand(300, 3, generator=generator)
    images = (torch.einsum("nk,kchw->nchw", weights, basis) / 3).clamp(0, 1)  # rank 3
    train, test = images[:250], images[250:]
    mask = missing_completely_at_random(test.shape, 0.3, torch.Generator().manual_seed(1))
    observed = observed_only(test, mask)
    means = train.mean(dim=0)
    by_mean = column_mean_imputation(observed, mask, means)
    by_pca = pca_imputation(observed, mask, means, fit_pca(train, 3), iterations=50)
    for filled in (by_mean, by_pca):
        assert torch.equal(filled[mask], test[mask])
    assert (
        missing_pixel_metrics(by_pca, test, mask)["mse"]
        < 0.05 * missing_pixel_metrics(by_mean, test, mask)["mse"]
    )
