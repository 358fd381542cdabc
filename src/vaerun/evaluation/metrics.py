"""Image-quality metrics of reconstructions against the clean images (torchmetrics), accumulated over an
evaluation and reduced across processes by torchmetrics itself."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanSquaredError, Metric, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure


def standard_error(values: Tensor) -> float:
    """The standard error of the mean of per-image values: their sample standard deviation / sqrt(n)."""
    values = values.double().flatten()
    return float(values.std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")


class MeanStandardError(Metric):
    """The standard error of the mean of per-image values, accumulated over an evaluation (sums of the
    values and their squares, in float64) and reduced across processes."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("total", "squares", "count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Tensor) -> None:
        values = values.detach().double().flatten()
        self.total += values.sum()
        self.squares += values.square().sum()
        self.count += len(values)

    def compute(self) -> Tensor:
        mean = self.total / self.count
        variance = (self.squares / self.count - mean.square()).clamp_min(0) * self.count / (self.count - 1)
        return (variance / self.count).sqrt()


class BinaryCrossEntropy(Metric):
    """Mean binary cross-entropy per pixel of predictions in [0, 1] against targets in [0, 1]."""

    higher_is_better = False
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        # torch clamps log(0) at -100, so an input with zeroed pixels gets a large but finite value. In
        # float32 outside autocast: CUDA's autocast refuses binary_cross_entropy (under bf16-mixed).
        with torch.autocast(preds.device.type, enabled=False):
            bce = F.binary_cross_entropy(preds.float().clamp(0, 1), target.float(), reduction="sum")
        self.total += bce.double()
        self.count += target.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count).float()


def image_metrics(prefix: str, unit_range: bool = True) -> MetricCollection:
    """MSE and BCE per pixel, PSNR per image (averaged over images) and SSIM, for images in [0, 1]; MSE
    alone for standardised tabular data, where the others have no meaning."""
    if not unit_range:
        return MetricCollection({"mse": MeanSquaredError()}, prefix=prefix)
    return MetricCollection(
        {
            "mse": MeanSquaredError(),
            "bce": BinaryCrossEntropy(),
            "psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
        },
        prefix=prefix,
    )


@torch.no_grad()
def restoration_metrics(restored: Tensor, clean: Tensor, prefix: str, chunk: int = 1000) -> dict[str, float]:
    """``image_metrics`` of whole restored images against the clean ones, as plain floats: the same
    definitions as the model's test metrics, for the baselines set beside them."""
    metrics = image_metrics(prefix).to(clean.device)
    for start in range(0, len(clean), chunk):
        metrics.update(restored[start : start + chunk], clean[start : start + chunk])
    return {key: float(value) for key, value in metrics.compute().items()}
