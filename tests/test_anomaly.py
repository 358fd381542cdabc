"""Detection metrics: the order of the scores is all that counts, whatever their scale."""

import pytest
import torch
from sklearn.metrics import roc_auc_score

from vaerun.evaluation.anomaly import detection_metrics


def test_perfect_reversed_and_partial_separation():
    is_anomaly = torch.tensor([False, False, True, True])
    assert detection_metrics(torch.tensor([0.1, 0.2, 0.3, 0.4]), is_anomaly)["auroc"] == 1.0
    assert detection_metrics(torch.tensor([0.4, 0.3, 0.2, 0.1]), is_anomaly)["auroc"] == 0.0
    scores = torch.tensor([0.1, 0.3, 0.2, 0.4])
    assert detection_metrics(scores, is_anomaly)["auroc"] == roc_auc_score([0, 0, 1, 1], [0.1, 0.3, 0.2, 0.4])


def test_scores_in_nats_are_not_squashed_into_ties():
    """-ELBO scores of 30-50 nats: a library that reads them as logits would tie them all (AUROC 0.5)."""
    is_anomaly = torch.tensor([False, False, True, True])
    metrics = detection_metrics(torch.tensor([30.0, 31.0, 45.0, 50.0]), is_anomaly)
    assert metrics == {"auroc": 1.0, "average_precision": 1.0}


def test_the_mahalanobis_score_is_the_gaussians_quadratic_form():
    from torch.distributions import MultivariateNormal

    from vaerun.evaluation.anomaly import mahalanobis_scores

    generator = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.3, -0.2, 1.5]])
    training = torch.randn(20_000, 3, generator=generator, dtype=torch.float64) @ mixing.double().T + 4.0
    codes = torch.randn(5, 3, generator=generator, dtype=torch.float64) * 3
    fitted = MultivariateNormal(training.mean(0), covariance_matrix=torch.cov(training.T))
    # log N(z) = const - d2 / 2: the quadratic form from torch.distributions
    expected = -2 * (fitted.log_prob(codes) - fitted.log_prob(fitted.loc))
    torch.testing.assert_close(mahalanobis_scores(codes, training, ridge=0.0), expected)
    assert float(mahalanobis_scores(training.mean(0, keepdim=True), training)) == pytest.approx(0, abs=1e-9)


def test_a_plain_image_compresses_to_fewer_bits_and_the_corrected_score_subtracts_them():
    import math

    from vaerun.evaluation.anomaly import complexity_corrected, png_bits

    flat = torch.full((1, 1, 28, 28), 128, dtype=torch.uint8)
    noise = torch.randint(
        0, 256, (1, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )
    colour = torch.randint(
        0, 256, (1, 3, 28, 28), generator=torch.Generator().manual_seed(2), dtype=torch.uint8
    )
    bits = png_bits(torch.cat([flat, noise]))
    assert bits[0] < 1000 < 28 * 28 * 8 < bits[1]  # noise does not compress: more than its 6,272 raw bits
    assert png_bits(colour)[0] > 3 * 28 * 28 * 8
    nll = torch.tensor([100.0, 100.0])
    torch.testing.assert_close(complexity_corrected(nll, bits), 100 / math.log(2) - bits)


def test_the_likelihood_ratio_cancels_what_both_models_find_likely():
    from vaerun.evaluation.anomaly import likelihood_ratio

    model = torch.tensor([80.0, 300.0, 120.0])  # -log p(x) under the normal class's model
    background = torch.tensor([60.0, 150.0, 118.0])  # under a model of every class
    # the simple image (first) is likely under both: its ratio is not the lowest score any more
    torch.testing.assert_close(likelihood_ratio(model, background), torch.tensor([20.0, 150.0, 2.0]))


def test_a_mutation_replaces_a_share_of_the_values_by_uniform_levels():
    from vaerun.data.datamodule import mutate_pixels

    torch.manual_seed(0)
    images = torch.full((200, 3, 32, 32), 7, dtype=torch.uint8)
    mutated = mutate_pixels(images, 0.15)
    assert mutated.dtype == torch.uint8
    changed = mutated != images
    assert changed.float().mean().item() == pytest.approx(0.15 * 255 / 256, abs=0.003)  # a draw of 7 keeps it
    counts = torch.bincount(mutated[changed].long(), minlength=256)[torch.arange(256) != 7].float()
    assert counts.std() / counts.mean() < 0.1  # the new levels are uniform
    assert torch.equal(mutate_pixels(images, 0.0), images)


def test_the_nearest_neighbour_score_is_scikit_learns_on_real_digits():
    """The mean distance to the k nearest references, by one matrix product a chunk of queries at a time,
    against scikit-learn's exact search on the 8x8 digits (chunks smaller than the queries, so that more
    than one is taken)."""
    from sklearn.datasets import load_digits
    from sklearn.neighbors import NearestNeighbors

    from vaerun.evaluation.anomaly import nearest_neighbour_distances

    digits = torch.tensor(load_digits().data, dtype=torch.float32) / 16
    references, queries = digits[:1000], digits[1000:1300]
    expected, _ = NearestNeighbors(n_neighbors=5).fit(references.numpy()).kneighbors(queries.numpy())
    got = nearest_neighbour_distances(queries.reshape(-1, 1, 8, 8), references, k=5, chunk_size=64)
    torch.testing.assert_close(
        got, torch.tensor(expected.mean(axis=1), dtype=torch.float32), rtol=1e-4, atol=1e-4
    )
    # a reference is its own nearest neighbour, at distance 0 (the product's rounding clamped at 0)
    assert nearest_neighbour_distances(references[:50], references, k=1).abs().max() < 1e-2
    assert nearest_neighbour_distances(queries[:3], references[:2], k=5).shape == (3,)  # k above the pool


def test_the_hellinger_features_weigh_a_faint_stroke_like_a_bright_change():
    from vaerun.evaluation.anomaly import hellinger_features

    blank, faint = torch.zeros(1, 4), torch.tensor([[0.04, 0.0, 0.0, 0.0]])
    mid, brighter = torch.full((1, 4), 0.5), torch.tensor([[0.8228, 0.5, 0.5, 0.5]])
    # a stroke of 0.04 on a blank background is as far as 0.5 -> 0.82: both differ by 0.2 in square roots
    faint_distance = (hellinger_features(faint) - hellinger_features(blank)).norm()
    bright_distance = (hellinger_features(brighter) - hellinger_features(mid)).norm()
    torch.testing.assert_close(faint_distance, bright_distance, rtol=0.02, atol=0)
    assert (faint - blank).norm() < (brighter - mid).norm() / 5  # plain distance ranks them far apart
