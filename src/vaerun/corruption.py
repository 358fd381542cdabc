"""Corruptions of a batch of clean images, for denoising autoencoders.

Each corruption is a callable ``corrupt(x, generator=None) -> x_tilde`` on a float batch (N, C, H, W) in
[0, 1]. It runs vectorised on the batch's device, with fresh randomness at every call (from ``generator``
when given, else torch's global generator, which the run seeds). The clean batch stays the target.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from vaerun.validation import ConfigError, check_corruption


def _check(image_shape: tuple[int, ...] = (1, 1 << 30, 1 << 30), **params: object) -> None:
    """The start-up checks of the config, also for objects built in Python; raised as ValueError."""
    try:
        check_corruption(params, image_shape)
    except ConfigError as err:
        raise ValueError(str(err)) from None


def _uniform(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


class NoCorruption:
    """The identity: the model sees the clean image."""

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return x


class PixelDrop:
    """Each pixel (with all its channels) is zeroed independently with probability p."""

    def __init__(self, p: float = 0.5) -> None:
        _check(p=p)
        self.p = float(p)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n, _, height, width = x.shape
        keep = _uniform((n, 1, height, width), x, generator) >= self.p
        return x * keep


class GaussianBlur:
    """A Gaussian blur of standard deviation sigma (in pixels) with an odd kernel_size (torchvision's)."""

    def __init__(self, sigma: float = 1.5, kernel_size: int = 7) -> None:
        _check(sigma=sigma, kernel_size=kernel_size)
        self.sigma = float(sigma)
        self.kernel_size = int(kernel_size)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return TF.gaussian_blur(x, [self.kernel_size, self.kernel_size], [self.sigma, self.sigma])


class BlockMask:
    """A size x size square, at a uniformly random position inside each image, is zeroed."""

    def __init__(self, size: int = 14) -> None:
        _check(size=size)
        self.size = int(size)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n, _, height, width = x.shape
        if self.size > min(height, width):
            raise ValueError(f"corruption.size={self.size} is larger than the {height}x{width} images")
        # Top-left corners drawn per image; the mask is built by broadcasting, without a loop over images.
        top = (_uniform((n,), x, generator) * (height - self.size + 1)).long().clamp_(max=height - self.size)
        left = (_uniform((n,), x, generator) * (width - self.size + 1)).long().clamp_(max=width - self.size)
        rows = torch.arange(height, device=x.device)
        cols = torch.arange(width, device=x.device)
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + self.size)
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + self.size)
        hidden = in_rows[:, :, None] & in_cols[:, None, :]
        return x * ~hidden[:, None]


class GaussianNoise:
    """Additive N(0, std^2) noise on every pixel; with clip the result stays in [0, 1]."""

    def __init__(self, std: float = 0.3, clip: bool = True) -> None:
        _check(std=std, clip=clip)
        self.std = float(std)
        self.clip = clip

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        noisy = x + self.std * noise
        return noisy.clamp(0.0, 1.0) if self.clip else noisy
