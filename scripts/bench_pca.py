"""The PCA baseline's fit at the size of a 64 px colour data set: N random crops of scikit-learn's bundled
photographs, uint8 as a data set holds them, fitted at k components as the eval, impute and anomaly stages
do (made float a chunk at a time). Prints the seconds, the peak memory beyond the images and the CPU.

    python scripts/bench_pca.py --images 162770 --size 64 --k 64     # CelebA-64's training split
"""

from __future__ import annotations

import argparse
import resource
import time

import torch


def photo_crops(count: int, size: int, seed: int = 0) -> torch.Tensor:
    from sklearn.datasets import load_sample_images

    photos = [torch.tensor(image).permute(2, 0, 1) for image in load_sample_images().images]
    generator = torch.Generator().manual_seed(seed)
    crops = torch.empty(count, 3, size, size, dtype=torch.uint8)
    for number in range(count):
        photo = photos[number % 2]
        top, left = (int(torch.randint(0, n - size, (1,), generator=generator)) for n in photo.shape[1:])
        crops[number] = photo[:, top : top + size, left : left + size]
    return crops


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--k", type=int, default=64)
    args = parser.parse_args()
    from vaerun.evaluation.baselines import fit_pca

    images = photo_crops(args.images, args.size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    start = time.perf_counter()
    pca = fit_pca(images, args.k, transform=lambda rows: rows.float() / 255)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"cpu: {torch.backends.cpu.get_cpu_capability()}, torch threads: {torch.get_num_threads()}")
    print(
        f"PCA of {args.images} images of 3x{args.size}x{args.size} at k={args.k}: {seconds:.1f} s, "
        f"peak memory {peak:.2f} GB ({peak - before:.2f} GB beyond the images), "
        f"components {tuple(pca.components.shape)}"
    )


if __name__ == "__main__":
    main()
