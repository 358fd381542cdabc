"""Write the colour patch data set: size x size patches of scikit-learn's two bundled photographs (a Chinese
temple and a flower, 427 x 640 each), taken every `stride` pixels, as PNG files in one folder per photograph.

    python scripts/photo_patches.py /tmp/photo_patches --size 32 --stride 8
    vae-run data=image_folder data.source.path=/tmp/photo_patches encoder=conv likelihood=discretized_logistic
"""

from __future__ import annotations

import argparse
from pathlib import Path


def write_patches(root: Path, size: int = 32, stride: int = 8) -> int:
    """The number of patches written."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    count = 0
    for photo, path in zip(sample.images, sample.filenames, strict=True):
        folder = root / Path(path).stem
        folder.mkdir(parents=True, exist_ok=True)
        height, width = photo.shape[:2]
        for top in range(0, height - size + 1, stride):
            for left in range(0, width - size + 1, stride):
                patch = photo[top : top + size, left : left + size]
                Image.fromarray(patch).save(folder / f"{top:03d}_{left:03d}.png")
                count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--stride", type=int, default=8)
    args = parser.parse_args(argv)
    count = write_patches(args.folder, args.size, args.stride)
    print(f"{count} patches of {args.size} x {args.size} in {args.folder}")


if __name__ == "__main__":
    main()
