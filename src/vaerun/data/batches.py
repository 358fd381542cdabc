"""Batches as index slices of tensors (on the device, in host memory or mapped from a file): no per-image
Python work, no DataLoader workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from vaerun.data.placement import gather
from vaerun.data.splits import Split


class BatchGroup(list):
    """Consecutive training batches handed to Lightning as one item."""


def batches_of(item: Any) -> list:
    """The batches of a training item: a BatchGroup's, or the one batch."""
    return item if isinstance(item, BatchGroup) else [item]


def limited_batch_count(batches: int, limit: int | float | None) -> int:
    """How many of an epoch's ``batches`` a Trainer-style ``limit_train_batches`` keeps: an int is a count,
    a float a fraction (at least one batch if it is above 0), None all of them."""
    if limit is None:
        return batches
    if isinstance(limit, float) and limit <= 1.0:
        return max(1, int(batches * limit)) if limit > 0 else 0
    return min(batches, int(limit))


def group_size(steps_per_group: int, world_size: int) -> int | None:
    """Batches per training item, None for single batches: under DDP each backward needs a forward pass
    of its own for the gradient sync."""
    return steps_per_group if steps_per_group > 1 and world_size == 1 else None


class TensorBatches:
    """An iterable of (images, labels) batches sliced from in-memory tensors; with a generator, a fresh
    permutation every pass. In a distributed run each of ``world_size`` processes takes every
    ``world_size``-th example from ``rank`` on, the order padded by wrapping around so that all processes
    see the same number of batches (as torch's DistributedSampler does).

    ``group``: yield BatchGroups of up to this many batches instead of single batches; ``max_batches``:
    stop after that many batches (Lightning's limit_train_batches, counted in batches, not groups);
    ``pin``: gather each batch of host (or mapped) data into page-locked memory, for an asynchronous copy
    to a GPU."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        generator: torch.Generator | None = None,
        rank: int = 0,
        world_size: int = 1,
        group: int | None = None,
        max_batches: int | float | None = None,
        pin: bool = False,
    ) -> None:
        self.split, self.batch_size, self.generator = split, batch_size, generator
        self.rank, self.world_size = rank, world_size
        self.group, self.max_batches, self.pin = group, max_batches, pin

    def _shard_size(self) -> int:
        return -(-len(self.split) // self.world_size)

    @property
    def num_batches(self) -> int:
        """Batches (optimizer steps, in training) per pass."""
        return limited_batch_count(-(-self._shard_size() // self.batch_size), self.max_batches)

    def __len__(self) -> int:
        return self.num_batches if self.group is None else -(-self.num_batches // self.group)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor] | BatchGroup]:
        n = len(self.split)
        # Every process draws the same permutation (same seed, same calls) and takes its own slice of it.
        order = torch.randperm(n, generator=self.generator) if self.generator is not None else torch.arange(n)
        order = order.to(self.split.images.device)
        if self.world_size > 1:
            padded = torch.cat([order, order[: self._shard_size() * self.world_size - n]])
            order = padded[self.rank :: self.world_size]
        indices = order.split(self.batch_size)[: self.num_batches]
        if self.group is None:
            for idx in indices:
                yield gather(self.split, idx, self.pin)
            return
        for start in range(0, len(indices), self.group):
            group = indices[start : start + self.group]
            yield BatchGroup(gather(self.split, idx, self.pin) for idx in group)
