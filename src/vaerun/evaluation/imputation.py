"""Imputation of missing pixels: the missingness patterns, the baselines, and metrics on the missing pixels
only. Pure functions on tensors; the models' own imputation is ``Autoencoder.impute``.

A mask is a bool tensor shaped like the images, True where a pixel is observed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from vaerun.evaluation.baselines import PCA


def missing_completely_at_random(shape: torch.Size, rate: float, generator: torch.Generator) -> Tensor:
    """Each pixel is missing with probability ``rate``, independently of everything (MCAR)."""
    return torch.rand(shape, generator=generator) >= rate


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
    psnr = peak_signal_noise_ratio(imputed[missing], truth[missing], data_range=1.0)  # pooled, as the MSE
    return {"mse": mse.item(), "psnr": psnr.item(), "ssim": ssim.item()}


def _ssim_kernel(images: Tensor) -> int:
    """SSIM's usual 11x11 window, smaller (and odd) for small images such as 8x8 digits."""
    side = min(images.shape[-2:])
    return 11 if side >= 11 else side - 1 if side % 2 == 0 else side
