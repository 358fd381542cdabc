"""Your own images: every image file under a folder, decoded once (in parallel threads: PIL releases the
GIL while it decodes and resizes) into one uint8 tensor and cached, keyed by the file list, their sizes and
modification times and the transform, so that a second run loads in about a second and a changed folder
is read again.

Layout: ``DIR/train``, ``DIR/val``, ``DIR/test`` (or ``train`` and ``test``) are the splits; otherwise the
split is 80 / 10 / 10 by ``split_seed``. Inside (a split or DIR), each first-level folder is a class,
labels 0..C-1 in sorted name order; images with no class folder get label 0.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vaerun.atomic import atomic_path
from vaerun.config_checks import ConfigError
from vaerun.data.splits import Split, Splits, split_off

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_FOLDERS = ("train", "val", "test")
#: raised to change the cache's key whenever decoding changes what it produces
DECODER_VERSION = 1


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


def decode(path: Path, transform: Transform) -> np.ndarray:
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
    """The image files found, their class labels and class names, and the split folder of each (None
    where the folder has no split folders)."""

    files: list[Path]
    labels: list[int]
    classes: list[str]
    splits: list[str] | None


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def list_images(root: Path) -> Listing:
    if not root.exists():
        raise ConfigError(f"data.source.path: no such folder: {root}")
    if not root.is_dir():
        raise ConfigError(f"data.source.path: {root} is a file; give the folder that holds the images")
    split_dirs = [name for name in SPLIT_FOLDERS if (root / name).is_dir()]
    has_splits = {"train", "test"} <= set(split_dirs)
    parents = [root / name for name in split_dirs] if has_splits else [root]
    classes = sorted({d.name for parent in parents for d in parent.iterdir() if d.is_dir()})
    files, labels, splits = [], [], []
    for parent in parents:
        for path in _image_files(parent):
            top = path.relative_to(parent).parts[0]
            files.append(path)
            labels.append(classes.index(top) if top in classes else 0)
            splits.append(parent.name)
    if not files:
        raise ConfigError(
            f"data.source.path: no images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)}) under {root}"
        )
    return Listing(files, labels, classes, splits if has_splits else None)


def cache_key(listing: Listing, root: Path, transform: Transform) -> str:
    """Changes when a file is added, removed, rewritten (size or mtime) or the transform changes."""
    digest = hashlib.sha256(json.dumps([DECODER_VERSION, str(root.resolve()), vars(transform)]).encode())
    for path in listing.files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _decode_all(files: Sequence[Path], transform: Transform) -> tuple[list[np.ndarray | None], list[str]]:
    """Every file decoded (None where unreadable), with the reasons of the failures; threads over the
    cores, a progress bar at a terminal."""

    def one(path: Path) -> np.ndarray | str:
        try:
            return decode(path, transform)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as err:
            return f"{path}: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"

    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(
            tqdm(
                pool.map(one, files, chunksize=64),
                total=len(files),
                desc="Decoding images",
                disable=not sys.stderr.isatty(),
                leave=False,
            )
        )
    failures = [r for r in results if isinstance(r, str)]
    return [r if isinstance(r, np.ndarray) else None for r in results], failures


class ImageFolderSource:
    """Every image under ``path``, recursively (png, jpg / jpeg, bmp, gif's first frame, webp, tiff), in
    sorted path order, transformed as ``Transform`` says. Unreadable files are skipped with one warning.
    ``cache_dir``: where the decoded tensor is kept (None: not cached)."""

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
    ) -> None:
        self.path = Path(path).expanduser()
        self.transform = Transform(image_size, crop, channels)
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None

    def load(self) -> Splits:
        listing = list_images(self.path)
        cache = (
            self.cache_dir / f"{cache_key(listing, self.path, self.transform)}.pt" if self.cache_dir else None
        )
        if cache is not None and cache.is_file():
            stored = torch.load(cache, map_location="cpu", weights_only=True)
        else:
            stored = self._decode(listing)
            if cache is not None:
                self._save(stored, cache)
        return self._split(stored)

    def _decode(self, listing: Listing) -> dict:
        arrays, failures = _decode_all(listing.files, self.transform)
        if failures:
            shown = "; ".join(failures[:3])
            log.warning("Skipped %d unreadable image files under %s: %s", len(failures), self.path, shown)
        kept = [i for i, array in enumerate(arrays) if array is not None]
        if not kept:
            raise ConfigError(
                f"data.source.path: none of the {len(arrays)} image files under {self.path} is readable"
            )
        sizes = {arrays[i].shape[1:]: listing.files[i] for i in kept}
        if len(sizes) > 1:
            (first, a), (second, b) = list(sizes.items())[:2]
            raise ConfigError(
                f"data.image_size: the images differ in size ({a.name} is {first[1]}x{first[0]}, {b.name} is "
                f"{second[1]}x{second[0]}); set data.image_size=S to resize and centre-crop them to S x S"
            )
        channels = self.transform.channels or max(arrays[i].shape[0] for i in kept)
        images = torch.from_numpy(
            np.stack([np.broadcast_to(arrays[i], (channels, *arrays[i].shape[1:])) for i in kept])
        )
        return {
            "images": images.contiguous(),
            "labels": torch.tensor([listing.labels[i] for i in kept], dtype=torch.int64),
            "splits": [listing.splits[i] for i in kept] if listing.splits else [],
            "classes": list(listing.classes),
        }

    def _save(self, stored: dict, cache: Path) -> None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as partial:
                torch.save(stored, partial)
        except OSError as err:
            log.warning(
                "Could not cache the decoded images in %s (%s): the next run decodes them again", cache, err
            )

    def _split(self, stored: dict) -> Splits:
        images, labels, names = stored["images"], stored["labels"], stored["splits"]
        source, classes = f"image_folder:{self.path.name}", tuple(stored["classes"])
        if not names:
            n = len(labels)
            sizes = [round(self.test_fraction * n), round(self.val_fraction * n)]
            test, val, train = split_off(images, labels, sizes, self.split_seed)
            return Splits(train, val, test, source=source, classes=classes)
        index = {
            name: torch.tensor([i for i, s in enumerate(names) if s == name], dtype=torch.long)
            for name in SPLIT_FOLDERS
        }
        parts = {name: Split(images[idx], labels[idx]) for name, idx in index.items()}
        if len(parts["val"]) == 0:  # train/ and test/ only: the validation images come out of train/
            train = parts["train"]
            val, rest = split_off(
                train.images, train.labels, [round(self.val_fraction * len(train))], self.split_seed
            )
            parts.update(val=val, train=rest)
        return Splits(parts["train"], parts["val"], parts["test"], source=source, classes=classes)
