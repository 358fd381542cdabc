"""Data sets as tensors, and the LightningDataModule that serves them: one module per source family
(bundled, torchvision_sets, tables, folders with their image_cache), the splits, where the data lives
(placement), the batches, and the data module (``vaerun.data.datamodule.ImageDataModule``, which
needs Lightning and so is not imported here).

A source loads a whole data set once as uint8 images (N, C, H, W) with int64 labels and splits it
deterministically (``split_seed``) into train / val / test. Tabular data (a CSV file) is float32 rows
(N, 1, 1, D), standardised, with NaN where a cell is missing. Batches are index slices of those tensors, in a
fresh permutation each epoch from the data module's seeded generator, wherever the tensors live (the
training device, host memory or an image folder's memory-mapped cache file); the conversion to float in [0, 1]
happens on the batch, on the training device (see the LightningModule). No per-image Python work anywhere.
"""

from __future__ import annotations

from vaerun.data.batches import TensorBatches
from vaerun.data.bundled import DigitsSource, MNIST5kSource
from vaerun.data.folders import ImageFolderSource
from vaerun.data.splits import Split, Splits, binarize_static, observed_cells, split_off, to_unit_float
from vaerun.data.tables import CSVSource
from vaerun.data.torchvision_sets import CIFAR10Source, FashionMNISTSource, MNISTSource, TorchvisionSource

__all__ = [
    "CIFAR10Source",
    "CSVSource",
    "DigitsSource",
    "FashionMNISTSource",
    "ImageFolderSource",
    "MNIST5kSource",
    "MNISTSource",
    "Split",
    "Splits",
    "TensorBatches",
    "TorchvisionSource",
    "binarize_static",
    "observed_cells",
    "split_off",
    "to_unit_float",
]
