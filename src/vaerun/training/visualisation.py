"""Pictures of a model: image grids, the 2-D latent manifold and latent scatter plots, and the sink that
writes each one as a PNG file and to the loggers that store pictures. Nothing here takes part in training."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure  # the object API: no pyplot, no GUI backend, safe on servers
from PIL import Image
from torch import Tensor
from torch.distributions import MultivariateNormal
from torchvision.utils import make_grid, save_image

from vaerun.models.priors import GaussianPrior
from vaerun.training.trackers import log_picture


def image_grid(images: Tensor, nrow: int) -> Tensor:
    """(N, C, H, W) in [0, 1] -> one (C, H', W') grid with nrow images per row and a 2-pixel gap."""
    return make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0)


def reconstruction_grid(
    clean: Tensor, corrupted: Tensor, reconstructed: Tensor, triples_per_row: int = 2
) -> Tensor:
    """original | corrupted input | reconstruction, side by side for every image."""
    triples = torch.stack([clean, corrupted, reconstructed], dim=1).flatten(0, 1)
    return image_grid(triples, nrow=3 * triples_per_row)


def interpolation_grid(start: Tensor, path: Tensor, end: Tensor) -> Tensor:
    """One row per pair: the start image, the decoded path (T x N images, step-major), the end image."""
    steps = len(path) // len(start)
    rows = torch.cat([start[None], path.reshape(steps, *start.shape), end[None]]).transpose(0, 1)
    return image_grid(rows.flatten(0, 1), nrow=steps + 2)


Quantiles = Callable[[Tensor], Tensor]
standard_normal_icdf: Quantiles = GaussianPrior().icdf


def traversal_codes(
    base: Tensor, prior: MultivariateNormal, max_dims: int, steps: int, icdf: Quantiles = standard_normal_icdf
) -> Tensor:
    """One row per latent dimension d (up to max_dims): the code ``base`` with z_d swept over the prior's
    marginal quantiles 5%..95% of that dimension, the other dimensions held fixed. (rows*steps, K).
    ``icdf``: the quantile function of the standardised prior (a Student-t prior's has heavier tails)."""
    dims = min(max_dims, base.numel())
    quantiles = icdf(torch.linspace(0.05, 0.95, steps, dtype=torch.float64)).to(base)
    marginal_std = prior.covariance_matrix.diagonal().sqrt()
    codes = base.repeat(dims, steps, 1)  # (dims, steps, K)
    index = torch.arange(dims, device=base.device)
    codes[index, :, index] = prior.loc[:dims, None] + marginal_std[:dims, None] * quantiles
    return codes.flatten(0, 1)


def quantile_grid(size: int, margin: float = 0.05, icdf: Quantiles = standard_normal_icdf) -> Tensor:
    """size x size points of the unit square mapped through the inverse CDF of the standardised prior
    (Kingma & Welling's figure 4): equal probability mass between neighbours. Row-major, first coordinate
    along rows."""
    quantiles = torch.linspace(margin, 1 - margin, size, dtype=torch.float64)
    axis = icdf(quantiles)
    rows, cols = torch.meshgrid(axis.flip(0), axis, indexing="ij")
    return torch.stack([cols.flatten(), rows.flatten()], dim=1)


def manifold_codes(prior: MultivariateNormal, size: int, icdf: Quantiles = standard_normal_icdf) -> Tensor:
    """The inverse-CDF grid carried through the prior's affine map: z = loc + L u."""
    u = quantile_grid(size, icdf=icdf).to(prior.loc)
    return prior.loc + u @ prior.scale_tril.T


def latent_scatter(
    codes: Tensor, labels: Tensor, title: str = "test-set latent means", class_names: Sequence[str] = ()
) -> Figure:
    """A scatter of 2-D codes coloured by class; with ``class_names``, a legend names the classes."""
    codes, labels = codes.detach().cpu().numpy(), labels.detach().cpu().numpy()
    figure = Figure(figsize=(6, 5), dpi=100)
    axes = figure.add_subplot()
    if class_names:  # one colour and one legend entry per class present
        colours = matplotlib.colormaps["tab10"]
        for label in sorted(set(labels.tolist())):
            chosen = codes[labels == label]
            axes.scatter(
                chosen[:, 0],
                chosen[:, 1],
                color=colours(label % 10),
                s=4,
                alpha=0.8,
                label=class_names[label],
            )
        axes.legend(fontsize="small", markerscale=2, loc="best")
    else:
        points = axes.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=4, alpha=0.8)
        figure.colorbar(points, ax=axes, label="class")
    axes.set(xlabel="z[0]", ylabel="z[1]", title=title)
    figure.tight_layout()
    return figure


class ImageSink:
    """Writes each picture as ``image_dir/<tag>.png`` (the latest one per tag) and to every logger that
    stores pictures (TensorBoard, MLflow, W&B: vaerun.training.trackers), at its step.

    The loggers' writers are asked for at the first picture, not before: a run refused at start-up leaves
    no event file."""

    def __init__(self, loggers: Sequence[Any], image_dir: Path) -> None:
        self.loggers = list(loggers)
        self.image_dir = Path(image_dir)

    def _path(self, tag: str) -> Path:
        self.image_dir.mkdir(parents=True, exist_ok=True)
        return self.image_dir / (re.sub(r"[^\w.-]+", "_", tag) + ".png")

    def _to_loggers(self, tag: str, path: Path, step: int) -> None:
        if self.loggers:  # the PNG as written, so every tracker shows the same picture
            picture = np.asarray(Image.open(path).convert("RGB"))
            for logger in self.loggers:
                log_picture(logger, tag, picture, step)

    def grid(self, tag: str, grid: Tensor, step: int) -> None:
        save_image(grid, self._path(tag))
        self._to_loggers(tag, self._path(tag), step)

    def figure(self, tag: str, figure: Figure, step: int) -> None:
        figure.savefig(self._path(tag))
        self._to_loggers(tag, self._path(tag), step)
