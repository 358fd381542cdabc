"""A folder's decoded images as one raw uint8 file (N, C, H, W) and a small index beside it (the shape,
labels, split lengths and class names), mapped back into memory on the next run: loading takes about a
second whatever the set's size, pages are read as batches touch them, and a set larger than the host's
memory trains from the file (vaerun.data.placement).

The images are appended one by one as they are decoded, so decoding never holds more than a few thousand
of them; the file appears under its final name only once it is whole.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaerun.core.atomic import atomic_path, partial_path
from vaerun.core.checks import ConfigError

#: images read back per step when a grey file is widened to colour
_CHUNK = 4096


def _size_error(first: tuple[str, tuple], second: tuple[str, tuple]) -> ConfigError:
    (a, a_shape), (b, b_shape) = sorted([first, second])
    a, b = os.path.basename(a), os.path.basename(b)
    return ConfigError(
        f"data.image_size: the images differ in size ({a} is {a_shape[2]}x{a_shape[1]}, {b} is "
        f"{b_shape[2]}x{b_shape[1]}); set data.image_size=S to resize and centre-crop them to S x S"
    )


class ImageWriter:
    """Collects images of one size, in order, into the raw file ``path`` (or memory, where ``path`` is
    None). ``channels`` None: 1 while every image is grey, 3 from the first colour image on (the grey
    ones written so far are widened)."""

    def __init__(self, path: Path | None, channels: int | None) -> None:
        self.path, self.channels = path, channels
        self.shape: tuple[int, ...] | None = None  # (C, H, W)
        self.first: str | None = None
        self.count = 0
        self._arrays: list[np.ndarray] = []
        self._partial = partial_path(path) if path else None
        self._file = open(self._partial, "wb") if self._partial else None  # noqa: SIM115 (closed in finish)

    def append(self, array: np.ndarray, file: str) -> None:
        if self.shape is None:
            self.shape, self.first = (self.channels or array.shape[0], *array.shape[1:]), file
        elif array.shape[1:] != self.shape[1:]:
            raise _size_error((self.first, self.shape), (file, array.shape))
        if array.shape[0] > self.shape[0]:
            self._widen(array.shape[0])
        array = np.ascontiguousarray(np.broadcast_to(array, self.shape))
        if self._file is None:
            self._arrays.append(array)
        else:
            self._file.write(array.tobytes())
        self.count += 1

    def _widen(self, channels: int) -> None:
        narrow, self.shape = self.shape, (channels, *self.shape[1:])
        if self._file is None:
            return  # broadcast in finish
        self._file.close()
        written = np.memmap(self._partial, np.uint8, "r", shape=(self.count, *narrow))
        wide = self._partial.with_name(self._partial.name + ".wide")
        with open(wide, "wb") as out:
            for start in range(0, self.count, _CHUNK):
                chunk = written[start : start + _CHUNK]
                out.write(np.ascontiguousarray(np.broadcast_to(chunk, (len(chunk), *self.shape))).tobytes())
        del written
        os.replace(wide, self._partial)
        self._file = open(self._partial, "ab")  # noqa: SIM115

    def finish(self) -> Tensor:
        """The images (N, C, H, W): mapped from the file, which now has its final name."""
        if self._file is None:
            return torch.from_numpy(np.stack([np.broadcast_to(a, self.shape) for a in self._arrays]))
        self._file.close()
        os.replace(self._partial, self.path)
        return map_images(self.path, (self.count, *self.shape))

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._partial.unlink(missing_ok=True)


def map_images(path: Path, shape: tuple[int, ...]) -> Tensor:
    """The raw file as a uint8 tensor of ``shape``, mapped privately: pages are read when touched and an
    accidental write stays in this process, never reaching the file."""
    return torch.from_file(str(path), shared=False, size=math.prod(shape), dtype=torch.uint8).view(shape)


def save_index(path: Path, index: dict) -> None:
    with atomic_path(path) as partial:
        torch.save(index, partial)


def load_cached(raw: Path, index_path: Path) -> tuple[Tensor, dict] | None:
    """The mapped images and their index, or None when the cache is missing or incomplete."""
    if not (index_path.is_file() and raw.is_file()):
        return None
    index = torch.load(index_path, map_location="cpu", weights_only=True)
    shape = tuple(index["shape"])
    if raw.stat().st_size != math.prod(shape):
        return None
    return map_images(raw, shape), index
