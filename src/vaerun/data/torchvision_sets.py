"""torchvision's data sets (MNIST, Fashion-MNIST, CIFAR-10): the official test set, a validation set split
off the official training set; downloaded when missing, or (Fashion-MNIST) read from Debian's package where
it is installed."""

from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

import torch
from torch import Tensor

from vaerun.core.atomic import atomic_path
from vaerun.core.checks import ConfigError
from vaerun.core.errors import first_line
from vaerun.data.bundled import MNIST5kSource
from vaerun.data.splits import Split, Splits, split_off

log = logging.getLogger(__name__)


def images_of(dataset) -> Tensor:
    """A torchvision data set's ``data`` as uint8 (N, C, H, W): MNIST's are (N, H, W) tensors, CIFAR's
    (N, H, W, C) arrays."""
    data = torch.as_tensor(dataset.data)
    return (data.permute(0, 3, 1, 2) if data.dim() == 4 else data[:, None]).to(torch.uint8).contiguous()


class TorchvisionSource:
    """A torchvision data set (MNIST, Fashion-MNIST, CIFAR-10): the official test set, and ``val_size``
    images split off the official training set."""

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
        train_labels, test_labels = torch.as_tensor(train_set.targets), torch.as_tensor(test_set.targets)
        val, train = split_off(images_of(train_set), train_labels, [self.val_size], self.split_seed)
        test = Split(images_of(test_set), test_labels)
        return Splits(train, val, test, source=self.name, classes=tuple(getattr(train_set, "classes", ())))

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
            reason = first_line(err)
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


class CIFAR10Source(TorchvisionSource):
    """CIFAR-10 via torchvision (50,000 training and 10,000 test colour images of 32 x 32, ten classes),
    downloaded into ``data_dir`` when missing. Offline without the files: one clear error that says where
    to put them; never another data set in its place."""

    name = "cifar10"
    dataset_class = "CIFAR10"

    def load(self) -> Splits:
        self._make_data_dir()
        try:
            return self._load(download=True)
        except (OSError, RuntimeError) as err:  # no network, a refused or broken download
            reason = first_line(err)
            raise ConfigError(
                f"data=cifar10: CIFAR-10 is not in {self.data_dir} and could not be downloaded ({reason}); "
                "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack "
                f"it there (it makes {self.data_dir / 'cifar-10-batches-py'}), or set data.source.data_dir"
            ) from None
