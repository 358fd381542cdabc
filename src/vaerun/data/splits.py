"""A data set in memory: uint8 images (N, C, H, W) with int64 labels, split deterministically into train /
val / test; tabular data (a CSV file) is float32 rows (N, 1, 1, D) with NaN where a cell is missing."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from vaerun.core.checks import ConfigError

if TYPE_CHECKING:
    from vaerun.data.tables import TableColumns


@dataclass(frozen=True)
class Split:
    images: Tensor  # uint8 (N, C, H, W); or float32 standardised rows (N, 1, 1, D), NaN where missing
    labels: Tensor  # int64, (N,)
    mapped: bool = False  # images is a view of a memory-mapped file (an image folder's cache)

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device, copy: bool = False) -> Split:
        """On ``device``; ``copy``: read a mapped file into memory even where the device is the CPU."""
        return Split(self.images.to(device, copy=copy), self.labels.to(device, copy=copy))


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split
    source: str  # the source actually used, as recorded in the run's config and hparams
    classes: tuple[str, ...] = ()  # the class names of the labels 0, 1, ..., where the source has them
    columns: TableColumns | None = None  # a table's feature columns and their standardisation

    def with_splits(self, train: Split, val: Split, test: Split) -> Splits:
        return dataclasses.replace(self, train=train, val=val, test=test)

    def __getitem__(self, index: slice) -> tuple[Split, ...]:
        return (self.train, self.val, self.test)[index]


def sized(source: Any, image_size: int | None, channels: int | None) -> Any:
    """The source with its images made S x S (``data.image_size``) with ``channels`` (``data.channels``),
    as an image folder's source makes them; a source that cannot resize refuses both."""
    if image_size is None and channels is None:
        return source
    if not hasattr(source, "resized"):
        raise ConfigError(
            f"data.image_size, data.channels: {type(source).__name__} does not resize its images "
            "(an image folder's source does)"
        )
    return source.resized(image_size, channels)


def normal_label(normal_class: int | str | None, splits: Splits) -> int | None:
    """``data.normal_class`` as a label: a class's name (``cats``: an image folder's sub-folder) is looked
    up in the splits' classes; a label or null is as it is."""
    if not isinstance(normal_class, str):
        return normal_class
    if normal_class in splits.classes:
        return splits.classes.index(normal_class)
    names = (
        f"its classes are {', '.join(f'{label}: {named}' for label, named in enumerate(splits.classes))}"
        if splits.classes
        else "it names no classes: give the label, an integer"
    )
    raise ConfigError(f"data.normal_class={normal_class}: {splits.source} has no class of that name; {names}")


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 grey levels -> float32 in [0, 1]; one vectorised op, wherever the batch lives."""
    return images.float() / 255.0


def observed_cells(images: Tensor) -> Tensor:
    """True where a value is present: everywhere in images, where the cell is not NaN in tabular data."""
    return ~torch.isnan(images) if images.is_floating_point() else torch.ones_like(images, dtype=torch.bool)


def as_images(array: np.ndarray | Tensor, height: int, width: int) -> Tensor:
    images = torch.as_tensor(array)
    return images.reshape(len(images), -1, height, width).to(torch.uint8).contiguous()


def split_off(images: Tensor, labels: Tensor, sizes: Sequence[int], seed: int) -> list[Split]:
    """Shuffle with a fixed seed, then cut consecutive pieces of the given sizes (the rest is the last)."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    bounds = np.cumsum([0, *sizes, len(labels) - sum(sizes)])
    if bounds[-1] != len(labels) or bounds[-1] < bounds[-2]:
        raise ValueError(f"cannot split {len(labels)} examples into pieces of {list(sizes)}")
    pieces = [order[start:stop] for start, stop in itertools.pairwise(bounds)]
    return [Split(images[idx], labels[idx]) for idx in pieces]


def binarize_static(split: Split, seed: int) -> Split:
    """One fixed Bernoulli(pixel) sample of every image, stored as 0 / 255."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.bernoulli(to_unit_float(split.images), generator=generator)
    return Split((draws * 255).to(torch.uint8), split.labels)


def as_trained(
    splits: Splits, binarize: str = "none", binarize_seed: int = 0, normal_class: int | None = None
) -> Splits:
    """The splits as a run trains and tests on them: with ``normal_class``, its train and val splits keep that
    class only (the test split keeps every class); with ``binarize`` static, every image is one fixed
    Bernoulli draw (the train, val and test splits drawn with binarize_seed + 0, 1, 2). Dynamic
    binarisation draws afresh at each use, so it leaves the grey levels here."""
    if normal_class is not None:

        def keep(split: Split) -> Split:
            chosen = split.labels == normal_class
            return Split(split.images[chosen], split.labels[chosen])

        splits = splits.with_splits(keep(splits.train), keep(splits.val), splits.test)
    if binarize == "static":
        splits = splits.with_splits(
            *(binarize_static(split, binarize_seed + i) for i, split in enumerate(splits[:3]))
        )
    return splits
