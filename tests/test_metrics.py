import math

import pytest
import torch
import torch.nn.functional as F

from vaerun.evaluation.metrics import BinaryCrossEntropy, MeanStandardError, image_metrics, standard_error


def test_an_identity_reconstruction_gets_the_library_maxima():
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    metrics = image_metrics("test/")
    metrics.update(x, x)
    values = metrics.compute()
    assert values["test/psnr"] == float("inf")
    assert values["test/ssim"].item() == pytest.approx(1.0)
    assert values["test/mse"] == 0


def test_worse_reconstructions_score_worse():
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    scores = []
    for noise in (0.05, 0.2):
        metrics = image_metrics("")
        metrics.update((x + noise * torch.randn_like(x)).clamp(0, 1), x)
        scores.append(metrics.compute())
    assert scores[0]["psnr"] > scores[1]["psnr"] and scores[0]["ssim"] > scores[1]["ssim"]
    assert scores[0]["mse"] < scores[1]["mse"] and scores[0]["bce"] < scores[1]["bce"]


def test_psnr_is_the_mean_of_per_image_values():
    x = torch.zeros(2, 1, 16, 16)
    preds = torch.stack([torch.full((1, 16, 16), 0.1), torch.full((1, 16, 16), 0.01)])
    metrics = image_metrics("")
    metrics.update(preds, x)
    assert metrics.compute()["psnr"].item() == pytest.approx((20 + 40) / 2, rel=1e-4)


def test_binary_cross_entropy_accumulates_per_pixel_means():
    metric = BinaryCrossEntropy()
    a, b = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    metric.update(a[:1], b[:1])
    metric.update(a[1:], b[1:])
    assert metric.compute().item() == pytest.approx(F.binary_cross_entropy(a, b).item(), rel=1e-5)


def test_the_standard_error_accumulated_over_batches_is_that_of_all_the_values():
    values = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 40 + 80  # nats per image
    metric = MeanStandardError()
    for batch in values.split(128):
        metric.update(batch)
    expected = values.double().std() / math.sqrt(len(values))
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-9)
    assert standard_error(values) == pytest.approx(float(expected), rel=1e-12)
