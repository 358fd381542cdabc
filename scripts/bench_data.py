"""Loading your own images: Fashion-MNIST's 70,000 images written out as PNG files in class folders, read
by data=image_folder the first time (decoded on threads over the cores) and from its cache, and the training
throughput from that folder against the same images from the built-in idx source.

    python scripts/bench_data.py --folder /tmp/fashion_png --repeats 3

Targets on 2 cores: first load under 20 s, cached load under 2 s, training images/s from the folder equal
to the built-in source's within the machine's noise (the data is the same uint8 tensor either way).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench


def write_folder(root: Path, limit: int | None = None) -> float:
    """Fashion-MNIST (Debian's files) as root/train/CLASS/N.png and root/test/CLASS/N.png (the first
    ``limit`` images of each split, or all); seconds."""
    from PIL import Image

    from vaerun.data import FashionMNISTSource

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as idx:
        splits = FashionMNISTSource(idx, system_dir="/usr/share/datasets/fashion-mnist", val_size=0).load()
    jobs = []
    for name, split in (("train", splits.train), ("test", splits.test)):
        images, labels = split.images[:limit, 0].numpy(), split.labels[:limit].tolist()
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            jobs.append((image, root / name / f"class_{label}" / f"{i:05d}.png"))
    for folder in {path.parent for _, path in jobs}:
        folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor() as pool:
        list(pool.map(lambda job: Image.fromarray(job[0], "L").save(job[1]), jobs))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "vaerun_fashion_png")
    parser.add_argument("--repeats", type=int, default=3, help="cached loads, and interleaved training runs")
    parser.add_argument("--epochs", type=int, default=3, help="per training run; the first is warm-up")
    parser.add_argument(
        "--limit", type=int, default=None, help="write the first N images of each split (tests)"
    )
    parser.add_argument("--limit-batches", type=int, default=0, help="train on N batches an epoch (tests)")
    args = parser.parse_args(argv)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)

    from vaerun.data import ImageFolderSource

    if not (args.folder / "test").is_dir():
        print(f"writing the PNG files to {args.folder}: {write_folder(args.folder, args.limit):.1f} s")
    with tempfile.TemporaryDirectory() as cache:
        source = ImageFolderSource(str(args.folder), cache_dir=cache)
        start = time.perf_counter()
        splits = source.load()
        first = time.perf_counter() - start
        cached = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            source.load()
            cached.append(time.perf_counter() - start)
    images = len(splits.train) + len(splits.val) + len(splits.test)
    print(f"first load: {first:.1f} s for {images:,} images ({images / first:,.0f} images/s)")
    print(f"cached load: median {statistics.median(cached):.2f} s over {args.repeats} loads")

    sources = {
        "fashion_mnist (idx)": ["--data", "fashion_mnist"],
        "image_folder (PNG)": ["--data", "image_folder", "--set", f"data.source.path={args.folder}"],
    }
    common = ["--epochs", str(args.epochs), "--repeats", "1", "--methods", "b"]
    common += ["--limit-batches", str(args.limit_batches)]
    rates: dict[str, list[float]] = {name: [] for name in sources}
    for repeat in range(args.repeats):  # interleaved: whole runs drift on a shared machine
        for name, options in sources.items():
            run_args = bench.parse_args([*options, *common])
            result = bench.Result()
            bench.run_vaerun(bench.compose_config(run_args, "32-true", seed=repeat), run_args, result, False)
            rates[name].append(statistics.median(result.throughputs))
    for name, values in rates.items():
        print(
            f"training from {name:22s} {statistics.median(values):8,.0f} images/s (median of {len(values)})"
        )
    idx, folder = (statistics.median(values) for values in rates.values())
    command = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"folder / idx = {folder / idx:.3f}   (command: python scripts/bench_data.py {command})")


if __name__ == "__main__":
    main()
