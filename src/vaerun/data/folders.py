"""Your own images: every image file under a folder, decoded once (in parallel threads: PIL releases the
GIL while it decodes and resizes) into one uint8 tensor and cached, keyed by the file list, their sizes and
modification times and the transform, so that a second run loads in about a second and a changed folder
is read again. The decoded images go straight into the cache file (vaerun.data.image_cache), split by split,
so that train, val and test are slices of it.

Layout: ``DIR/train``, ``DIR/val``, ``DIR/test`` (or ``train`` and ``test``) are the splits; otherwise the
split is 80 / 10 / 10 by ``split_seed``. Inside (a split or DIR), each first-level folder is a class,
labels 0..C-1 in sorted name order; images with no class folder get label 0.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from vaerun.core.checks import ConfigError
from vaerun.core.errors import first_line
from vaerun.data.image_cache import ImageWriter, load_cached, save_index
from vaerun.data.splits import Split, Splits

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_FOLDERS = ("train", "val", "test")
#: raised to change the cache's key whenever decoding changes what it produces
DECODER_VERSION = 2
#: files handed to the decoding threads at a time: bounds the decoded images held in memory
_FILES_AT_ONCE = 4096


@dataclass(frozen=True)
class Transform:
    """What is done to each image: ``crop`` (centre crop C x C first), ``image_size`` (resize the shorter
    side to S, antialiased, then centre crop S x S) and ``channels`` (1: grey, 3: RGB, None: as found)."""

    image_size: int | None = None
    crop: int | None = None
    channels: int | None = None


def _to_8_bit(image: Image.Image, channels: int | None) -> Image.Image:
    """Palette, alpha, 16-bit, CMYK and the rest as 8-bit grey ("L") or RGB; alpha composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit (and 32-bit) grey: scaled to 8 bits
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) > 255 or image.mode.startswith("I;16") else 255.0
        image = Image.fromarray(np.clip(np.rint(values * 255.0 / top), 0, 255).astype(np.uint8), "L")
    if image.mode in ("P", "PA", "LA", "RGBA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        grey = image.mode in ("LA", "La") or (image.mode == "P" and _palette_is_grey(image))
        image = background.convert("L" if grey else "RGB")
    if channels == 1:
        return image.convert("L")
    if channels == 3 or image.mode not in ("L", "1"):
        return image.convert("RGB")
    return image.convert("L")


def _palette_is_grey(image: Image.Image) -> bool:
    palette = np.asarray(image.getpalette() or [0, 0, 0]).reshape(-1, 3)
    return bool((palette == palette[:, :1]).all())


def _centre_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def decode(path: str | Path, transform: Transform) -> np.ndarray:
    """One file as uint8 (C, H, W), C = 1 or 3; raises OSError / ValueError for an unreadable file."""
    with Image.open(path) as image:
        image.seek(0)  # a GIF's (or TIFF's) first frame
        image.load()
        image = _to_8_bit(image, transform.channels)
    if transform.crop is not None:
        if min(image.size) < transform.crop:
            raise ValueError(
                f"{image.size[0]}x{image.size[1]} is smaller than data.source.crop={transform.crop}"
            )
        image = _centre_crop(image, transform.crop)
    if transform.image_size is not None:
        size = transform.image_size
        width, height = image.size
        scale = size / min(width, height)
        resized = (max(size, round(width * scale)), max(size, round(height * scale)))
        image = _centre_crop(image.resize(resized, Image.Resampling.BILINEAR, reducing_gap=None), size)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


@dataclass(frozen=True)
class Listing:
    """The image files found (full paths, as strings: a million Path objects cost seconds), their class
    labels and class names, the split folder of each (None where the folder has no split folders), and a
    line per file of its relative path, size and modification time (what the cache is keyed by)."""

    root: Path
    files: list[str]
    labels: list[int]
    classes: list[str]
    splits: list[str] | None
    stamps: list[str]


def _image_files(folder: str) -> list[tuple[tuple[str, ...], os.DirEntry]]:
    """(relative path parts, entry) of every image file under ``folder``, in path order; hidden files and
    folders are skipped, and a folder linked in twice is read once. One directory read per folder, no
    stat per file (os.scandir knows which entries are files)."""
    found, seen, pending = [], set(), [(folder, ())]
    while pending:
        directory, parts = pending.pop()
        stat = os.stat(directory)
        identity = (stat.st_dev, stat.st_ino)
        if identity in seen:
            continue
        seen.add(identity)
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    pending.append((entry.path, (*parts, entry.name)))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file():
                    found.append(((*parts, entry.name), entry))
    found.sort(key=lambda item: item[0])
    return found


def list_images(root: Path, description: str | None = None) -> Listing:
    """The image files under ``root``; ``description`` says what the folder should be, for the errors."""
    expected = f" (it should be {description})" if description else ""
    if not root.exists():
        raise ConfigError(f"data.source.path: no such folder: {root}{expected}")
    if not root.is_dir():
        raise ConfigError(
            f"data.source.path: {root} is a file; give the folder that holds the images{expected}"
        )
    split_dirs = [name for name in SPLIT_FOLDERS if (root / name).is_dir()]
    has_splits = {"train", "test"} <= set(split_dirs)
    parents = split_dirs if has_splits else [""]
    classes = sorted(
        {d.name for parent in parents for d in os.scandir(root / parent) if d.is_dir() and d.name[0] != "."}
    )
    label_of = {name: label for label, name in enumerate(classes)}
    files, labels, splits, stamps = [], [], [], []
    for parent in parents:
        for parts, entry in _image_files(str(root / parent)):
            stat = entry.stat()
            files.append(entry.path)
            labels.append(label_of.get(parts[0], 0) if len(parts) > 1 else 0)
            splits.append(parent)
            stamps.append(f"{parent}/{'/'.join(parts)}\0{stat.st_size}\0{stat.st_mtime_ns}\n")
    if not files:
        raise ConfigError(
            f"data.source.path: no images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)}) under {root}{expected}"
        )
    return Listing(root, files, labels, classes, splits if has_splits else None, stamps)


def assign_splits(
    listing: Listing, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """The files (indices into the listing) of train, val and test, decided before any is decoded, so
    that a file that turns out unreadable drops out of its own split without moving any other. Split
    folders in path order; otherwise (and val out of train/ where there is no val/) a ``seed``ed shuffle
    cut into test, val and the rest."""

    def shuffled(count: int) -> list[int]:
        return torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()

    if listing.splits is None:
        n = len(listing.files)
        order, n_test, n_val = shuffled(n), round(test_fraction * n), round(val_fraction * n)
        test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    else:
        train, val, test = ([i for i, s in enumerate(listing.splits) if s == name] for name in SPLIT_FOLDERS)
        if not val:
            order, n_val = shuffled(len(train)), round(val_fraction * len(train))
            val, train = [train[i] for i in order[:n_val]], [train[i] for i in order[n_val:]]
    if not train:
        raise ConfigError(
            f"data.source.val_fraction={val_fraction} and test_fraction={test_fraction} leave none of the "
            f"{len(listing.files)} images under {listing.root} for training"
        )
    return train, val, test


def cache_key(listing: Listing, transform: Transform, split: tuple) -> str:
    """Changes when a file is added, removed, rewritten (size or mtime), or the transform or the split
    changes."""
    key = [DECODER_VERSION, str(listing.root.resolve()), vars(transform), list(split)]
    digest = hashlib.sha256(json.dumps(key).encode())
    digest.update("".join(listing.stamps).encode())
    return digest.hexdigest()[:24]


def decode_all(files: Sequence[str], transform: Transform) -> Iterator[np.ndarray | str]:
    """Every file decoded, in order (the reason, where one is unreadable); threads over the cores, a few
    thousand files at a time, a progress bar at a terminal."""

    def one(path: str) -> np.ndarray | str:
        try:
            return decode(path, transform)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as err:
            return f"{path}: {first_line(err)}"

    from tqdm import tqdm

    bar = tqdm(total=len(files), desc="Decoding images", disable=not sys.stderr.isatty(), leave=False)
    with bar, ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for start in range(0, len(files), _FILES_AT_ONCE):
            for result in pool.map(one, files[start : start + _FILES_AT_ONCE], chunksize=64):
                bar.update()
                yield result


class ImageFolderSource:
    """Every image under ``path``, recursively (png, jpg / jpeg, bmp, gif's first frame, webp, tiff), in
    sorted path order, transformed as ``Transform`` says. Unreadable files are skipped with one warning.
    ``cache_dir``: where the decoded images are kept, as a file that later runs map (None: not cached).
    ``description``: what the folder should be (data=celeba64: CelebA's img_align_celeba), for the lines
    that ask for it or cannot find it."""

    name = "image_folder"

    def __init__(
        self,
        path: str,
        image_size: int | None = None,
        channels: int | None = None,
        crop: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        cache_dir: str | None = None,
        description: str | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.description = description
        self.transform = Transform(image_size, crop, channels)
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None

    def resized(self, image_size: int | None, channels: int | None) -> ImageFolderSource:
        """The same folder with its images made S x S (``image_size``) with ``channels`` (the DataModule's
        ``data.image_size`` and ``data.channels``)."""
        source = copy.copy(self)
        source.transform = dataclasses.replace(self.transform, image_size=image_size, channels=channels)
        return source

    def load(self) -> Splits:
        listing = list_images(self.path, self.description)
        parts = assign_splits(listing, self.val_fraction, self.test_fraction, self.split_seed)
        raw = None
        if self.cache_dir is not None:
            split = (self.val_fraction, self.test_fraction, self.split_seed)
            raw = self.cache_dir / f"{cache_key(listing, self.transform, split)}.u8"
            cached = load_cached(raw, raw.with_suffix(".pt"))
            if cached is not None:
                images, index = cached
                self._report_skipped(index.get("skipped", []), cached=True)
                return self._splits(images, index, mapped=True)
        writer = self._writer(raw)
        try:
            index = self._decode(listing, parts, writer)
            images = writer.finish()
        except BaseException:
            writer.discard()
            raise
        if writer.path is not None:
            save_index(raw.with_suffix(".pt"), index)
        return self._splits(images, index, mapped=writer.path is not None)

    def _writer(self, raw: Path | None) -> ImageWriter:
        if raw is not None:
            try:
                raw.parent.mkdir(parents=True, exist_ok=True)
                return ImageWriter(raw, self.transform.channels)
            except OSError as err:
                log.warning(
                    "Could not cache the decoded images in %s (%s): the next run decodes them again", raw, err
                )
        return ImageWriter(None, self.transform.channels)

    def _decode(self, listing: Listing, parts: Sequence[list[int]], writer: ImageWriter) -> dict:
        """Decodes the files split by split into ``writer``; the index of what it wrote."""
        order = [(k, i) for k, part in enumerate(parts) for i in part]
        lengths, labels, failures = [0, 0, 0], [], []
        # closed on an error too: the decoding threads stop with the files handed to them
        with contextlib.closing(decode_all([listing.files[i] for _, i in order], self.transform)) as decoded:
            for (k, i), result in zip(order, decoded, strict=True):
                if isinstance(result, str):
                    failures.append(result)
                    continue
                writer.append(result, listing.files[i])
                lengths[k] += 1
                labels.append(listing.labels[i])
        self._report_skipped(failures, cached=False)
        if not writer.count:
            raise ConfigError(
                f"data.source.path: none of the {len(order)} image files under {self.path} is readable"
            )
        return {
            "shape": [writer.count, *writer.shape],
            "labels": torch.tensor(labels, dtype=torch.int64),
            "lengths": lengths,
            "classes": list(listing.classes),
            "skipped": failures,  # said again by every run that reads the cache
        }

    def _report_skipped(self, failures: Sequence[str], cached: bool) -> None:
        if failures:
            when = " when the cached images were decoded" if cached else ""
            shown = "; ".join(failures[:3])
            log.warning(
                "Skipped %d unreadable image files under %s%s: %s", len(failures), self.path, when, shown
            )

    def _splits(self, images: Tensor, index: dict, mapped: bool) -> Splits:
        """Train, val and test are consecutive slices of the images: views, never copies, of a mapped
        file."""
        bounds = np.cumsum([0, *index["lengths"]]).tolist()
        parts = [
            Split(images[a:b], index["labels"][a:b], mapped=mapped) for a, b in itertools.pairwise(bounds)
        ]
        return Splits(*parts, source=f"image_folder:{self.path.name}", classes=tuple(index["classes"]))
