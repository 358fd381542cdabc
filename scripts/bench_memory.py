"""A CelebA-64-sized image folder (202,599 colour images of 64 x 64: 2.5 GB as uint8) from disk to
training, in each place the data can live: decoded once into the cache file, then trained on from that
file mapped into memory (data.max_host_memory_gb=0) and from host memory (the default where it fits), on
the CPU or (--device cuda) a GPU, where the default puts it on the device and
data.device_memory_fraction=0 keeps it in host memory with pinned batches.

    python scripts/bench_memory.py --folder /tmp/vaerun_celeba_size --images 202599

CelebA itself needs a download; its stand-in here is as many 64 x 64 JPEG crops, at seeded random places
and mirrored at random, of scikit-learn's two bundled photographs. Prints, for each placement, the
training images/s (MLP VAE, median over the epochs after the first), the process's anonymous memory
(RssAnon: what the data costs in RAM; the mapped file's pages are page cache, RssFile) and the child
processes alive during training (DataLoader workers would be those; there must be none).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import bench


def write_folder(root: Path, count: int, size: int = 64, seed: int = 0, class_folders: bool = False) -> float:
    """``count`` JPEG crops of ``size`` x ``size`` from scikit-learn's photographs; seconds. With
    ``class_folders``, each in the folder of its photograph (photo0, photo1: two classes)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    start = time.perf_counter()
    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    folders = [root / f"photo{k}" if class_folders else root for k in range(len(photos))]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        photo = photos[rng_choices[i, 0]]
        top = rng_choices[i, 1] % (photo.shape[0] - size)
        left = rng_choices[i, 2] % (photo.shape[1] - size)
        crop = photo[top : top + size, left : left + size]
        image = Image.fromarray(crop[:, ::-1] if rng_choices[i, 3] else crop)
        image.save(folders[rng_choices[i, 0]] / f"{i:06d}.jpg", quality=95)

    # per image: which photograph, top and left (taken modulo the room left), mirrored or not
    rng_choices = np.stack([rng.integers(0, high, count) for high in (2, 10**6, 10**6, 2)], axis=1)
    with ThreadPoolExecutor() as pool:
        list(pool.map(one, range(count)))
    return time.perf_counter() - start


def memory_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child_processes() -> int:
    """Processes whose parent is this one (DataLoader workers would be such)."""
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    count += 1
            except (OSError, IndexError, ValueError):
                continue
    return count


class Sampler(threading.Thread):
    """Polls the process's memory and child processes while a run trains; keeps the peaks."""

    def __init__(self, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.every, self.done = every, threading.Event()
        self.peak = {"RssAnon": 0, "RssFile": 0, "children": 0}

    def run(self) -> None:
        while not self.done.wait(self.every):
            now = {
                "RssAnon": memory_kb("RssAnon"),
                "RssFile": memory_kb("RssFile"),
                "children": child_processes(),
            }
            self.peak = {key: max(value, now[key]) for key, value in self.peak.items()}

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "vaerun_celeba_size")
    parser.add_argument("--images", type=int, default=202_599)
    parser.add_argument("--epochs", type=int, default=3, help="per placement; the first is warm-up")
    parser.add_argument("--limit-batches", type=int, default=100, help="batches per epoch")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("vaerun.data.placement").setLevel(logging.INFO)

    from vaerun.data import ImageFolderSource

    if len(list(args.folder.glob("*.jpg"))) != args.images:
        seconds = write_folder(args.folder, args.images)
        print(f"writing {args.images:,} JPEG files to {args.folder}: {seconds:.0f} s")
    cache = args.folder.parent / (args.folder.name + "_cache")
    for old in cache.glob("*"):
        old.unlink()  # the first load decodes
    source = ImageFolderSource(str(args.folder), image_size=64, channels=3, cache_dir=str(cache))
    start = time.perf_counter()
    splits = source.load()
    first = time.perf_counter() - start
    start = time.perf_counter()
    source.load()
    cached = time.perf_counter() - start
    n = sum(len(split) for split in splits[:3])
    print(f"first load (decode into the cache file): {first:.1f} s for {n:,} images ({n / first:,.0f}/s)")
    size = sum(p.stat().st_size for p in cache.glob("*.u8")) / 1e9
    print(f"cached load (mapped): {cached:.2f} s; cache file {size:.2f} GB")
    print(f"RssAnon after loading: {memory_kb('RssAnon') / 1e6:.2f} GB")
    del splits

    placements = {"mapped file": ["data.max_host_memory_gb=0"], "host memory": []}
    if args.device == "cuda":
        placements = {**placements, "host memory": ["data.device_memory_fraction=0"], "device": []}
    common = ["--data", "image_folder", "--epochs", str(args.epochs), "--repeats", "1", "--methods", "b"]
    common += ["--limit-batches", str(args.limit_batches), "--device", args.device]
    folder_keys = [f"data.source.path={args.folder}", f"data.source.cache_dir={cache}"]
    folder_keys += ["data.image_size=64", "data.channels=3"]
    for name, keys in placements.items():
        run_args = bench.parse_args([*common, *(f"--set={key}" for key in folder_keys + keys)])
        result, sampler = bench.Result(), Sampler()
        with sampler:
            bench.run_vaerun(bench.compose_config(run_args, "32-true"), run_args, result, False)
        anon, file = (sampler.peak[key] / 1e6 for key in ("RssAnon", "RssFile"))
        print(
            f"{name:12s} {statistics.median(result.throughputs):8,.0f} images/s   peak RssAnon {anon:5.2f} GB"
            f"   peak RssFile {file:5.2f} GB   child processes {sampler.peak['children']}"
        )
        gc.collect()
    command = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"(command: python scripts/bench_memory.py {command})")


if __name__ == "__main__":
    main()
