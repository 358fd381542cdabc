"""Imputation of missing pixels: the missingness patterns, the baselines, and metrics on the missing pixels
only. Pure functions on tensors; the models' own imputation is ``Autoencoder.impute``.

A mask is a bool tensor shaped like the images, True where a pixel is observed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from vaerun.baselines import PCA


def missing_completely_at_random(shape: torch.Size, rate: float, generator: torch.Generator) -> Tensor:
    """Each pixel is missing with probability ``rate``, independently of everything (MCAR)."""
    return torch.rand(shape, generator=generator) >= rate


def missing_block(shape: torch.Size, size: int, generator: torch.Generator) -> Tensor:
    """A size x size square at a uniformly random place in each image is missing."""
    n, _, height, width = shape
    top = torch.randint(0, height - size + 1, (n,), generator=generator)
    left = torch.randint(0, width - size + 1, (n,), generator=generator)
    rows, cols = torch.arange(height), torch.arange(width)
    inside_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # (n, H)
    inside_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # (n, W)
    hidden = inside_rows[:, :, None] & inside_cols[:, None, :]
    return ~hidden[:, None].expand(shape)


def observed_only(images: Tensor, mask: Tensor, fill: Tensor | float = 0.0) -> Tensor:
    """The images with their missing pixels replaced by ``fill``: what an imputer gets to see."""
    return torch.where(mask, images, torch.as_tensor(fill, dtype=images.dtype, device=images.device))


def column_mean_imputation(observed: Tensor, mask: Tensor, pixel_means: Tensor) -> Tensor:
    """Each missing pixel gets that pixel's mean over the training images."""
    return torch.where(mask, observed, pixel_means.expand_as(observed))


def pca_imputation(
    observed: Tensor,
    mask: Tensor,
    pixel_means: Tensor,
    pca: PCA,
    clip: Callable[[Tensor], Tensor] = lambda x: x.clamp(0, 1),
    iterations: int = 5,
) -> Tensor:
    """Missing pixels start at their means and are replaced by the PCA reconstruction of the completed
    image (brought into the data's range by ``clip``), ``iterations`` times (iterative PCA imputation);
    observed pixels stay as observed."""
    filled = column_mean_imputation(observed, mask, pixel_means)
    for _ in range(iterations):
        filled = torch.where(mask, observed, clip(pca.reconstruct(filled)))
    return filled


def missing_pixel_metrics(
    imputed: Tensor, truth: Tensor, mask: Tensor, images: bool = True
) -> dict[str, float]:
    """MSE and PSNR over the missing pixels only (pooled over the images), and SSIM averaged over the
    missing pixels of the per-pixel SSIM map (observed pixels, identical in every method, do not count).
    ``images`` False (standardised tables): the MSE alone."""
    missing = ~mask
    count = missing.sum().clamp_min(1)
    mse = ((imputed - truth).square() * missing).sum() / count
    if not images:
        return {"mse": mse.item()}
    _, ssim_map = structural_similarity_index_measure(
        imputed, truth, data_range=1.0, return_full_image=True, kernel_size=_ssim_kernel(truth)
    )
    ssim = (ssim_map * missing).sum() / count
    return {"mse": mse.item(), "psnr": -10 * math.log10(max(mse.item(), 1e-12)), "ssim": ssim.item()}


def _ssim_kernel(images: Tensor) -> int:
    """SSIM's usual 11x11 window, smaller (and odd) for small images such as 8x8 digits."""
    side = min(images.shape[-2:])
    return 11 if side >= 11 else side - 1 if side % 2 == 0 else side
