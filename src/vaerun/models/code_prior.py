"""A prior over a VQ-VAE's grid of codes, fitted after training: a small PixelCNN (van den Oord et al.
2016), each code's distribution given the codes above it and to its left. It gives the codes' rate, -log2
p(codes) bits per image, and new code grids, drawn one position at a time."""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only the positions before its centre in raster order (and the centre too
    when ``include_centre``: every layer after the first, whose centre is already computed from the past)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, include_centre: bool) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        mask = torch.ones_like(self.weight)
        centre = kernel_size // 2
        mask[:, :, centre, centre + int(include_centre) :] = 0
        mask[:, :, centre + 1 :, :] = 0
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class MaskedResidual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), MaskedConv2d(channels, channels, 3, include_centre=True))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class GridPixelCNN(nn.Module):
    """p(codes) = prod over the grid in raster order of p(code_i | codes before i), K-way categoricals."""

    def __init__(
        self, num_codes: int, grid_shape: tuple[int, int], channels: int = 32, layers: int = 4
    ) -> None:
        super().__init__()
        self.num_codes, self.grid_shape = int(num_codes), tuple(int(n) for n in grid_shape)
        self.embedding = nn.Embedding(self.num_codes, channels)
        self.net = nn.Sequential(
            MaskedConv2d(channels, channels, 5, include_centre=False),
            *(MaskedResidual(channels) for _ in range(layers)),
            nn.ReLU(),
            nn.Conv2d(channels, self.num_codes, 1),
        )

    def logits(self, codes: Tensor) -> Tensor:
        """(N, H, W) code indices -> (N, K, H, W) logits of each position given the ones before it."""
        return self.net(self.embedding(codes).permute(0, 3, 1, 2))

    def log_prob(self, codes: Tensor) -> Tensor:
        """log p(codes) in nats per grid, (N, H, W) -> (N,)."""
        nats = F.cross_entropy(self.logits(codes), codes, reduction="none")
        return -nats.flatten(1).sum(dim=1)

    @torch.no_grad()
    def sample(
        self, count: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> Tensor:
        """``count`` grids, one position at a time; ``temperature`` divides the logits (below 1: the
        likelier codes more often)."""
        device = self.embedding.weight.device
        height, width = self.grid_shape
        codes = torch.zeros((count, height, width), dtype=torch.long, device=device)
        for row in range(height):
            for column in range(width):
                logits = self.logits(codes)[:, :, row, column] / temperature
                probabilities = torch.softmax(logits.float(), dim=1).cpu()  # the generator is the CPU's
                drawn = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
                codes[:, row, column] = drawn.to(device)
        return codes


class CodePriorFit:
    """How the prior is fitted (built by Hydra from ``model.code_prior``): a ``GridPixelCNN`` of
    ``channels`` and ``layers``, trained with Adam for ``epochs`` on the training images' code grids
    (at most ``max_images`` of them, so that its cost is bounded on a large set)."""

    def __init__(
        self,
        channels: int = 32,
        layers: int = 4,
        epochs: int = 5,
        batch_size: int = 128,
        lr: float = 1e-3,
        max_images: int | None = 20000,
    ) -> None:
        self.channels, self.layers, self.epochs = int(channels), int(layers), int(epochs)
        self.batch_size, self.lr = int(batch_size), float(lr)
        self.max_images = None if max_images is None else int(max_images)

    def fit(self, codes: Tensor, num_codes: int, seed: int = 0) -> GridPixelCNN:
        """A prior fitted to ``codes`` (N, H, W) on their device; returned in eval mode."""
        generator = torch.Generator().manual_seed(seed)
        if self.max_images is not None and len(codes) > self.max_images:
            codes = codes[torch.randperm(len(codes), generator=generator)[: self.max_images].to(codes.device)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            prior = GridPixelCNN(num_codes, tuple(codes.shape[1:]), self.channels, self.layers)
        prior = prior.to(codes.device).train()
        optimizer = torch.optim.Adam(prior.parameters(), lr=self.lr)
        bits_per_grid = codes.new_zeros((), dtype=torch.float32)
        with torch.enable_grad():
            for _ in range(self.epochs):
                order = torch.randperm(len(codes), generator=generator).to(codes.device)
                bits_per_grid.zero_()
                for batch in codes[order].split(self.batch_size):
                    loss = -prior.log_prob(batch).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    bits_per_grid += loss.detach() * len(batch) / len(codes) / math.log(2)
        log.info(
            "Code prior: %d epochs on %d code grids, last epoch %.2f bits per grid (%.3f per code)",
            self.epochs,
            len(codes),
            bits_per_grid.item(),
            bits_per_grid.item() / math.prod(codes.shape[1:]),
        )
        return prior.eval()
