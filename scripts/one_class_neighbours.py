"""The one-class protocol's baselines without a model, per Fashion-MNIST class: PCA's reconstruction error
(16 components) and the mean distance to the 5 nearest training images of the normal class, Euclidean
and Hellinger (between the square roots of the pixels, as stage=anomaly's nearest_neighbours score).

    python scripts/one_class_neighbours.py

The same splits as vae-run data=fashion_mnist (its training split, the normal class's images only; every
test image scored); prints the AUROC of each score per class, their means, and on how many classes each
is above PCA. Needs Fashion-MNIST: the Debian package dataset-fashion-mnist, or torchvision's download.
"""

from __future__ import annotations

import argparse
import tempfile

from vaerun.data.torchvision_sets import FashionMNISTSource
from vaerun.evaluation.anomaly import detection_metrics, hellinger_features, nearest_neighbour_distances
from vaerun.evaluation.baselines import fit_pca
from vaerun.models.likelihoods import squared_error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=tempfile.gettempdir() + "/vaerun_data")
    parser.add_argument("--system-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--neighbours", type=int, default=5)
    parser.add_argument("--classes", type=int, default=10, help="the first N classes as the normal class")
    args = parser.parse_args(argv)
    splits = FashionMNISTSource(args.data_dir, args.system_dir).load()
    test = splits.test.images.float() / 255
    names = ("pca", "euclidean", "hellinger")
    table: dict[str, list[float]] = {name: [] for name in names}
    for label in range(args.classes):
        train = splits.train.images[splits.train.labels == label].float() / 255
        reconstructed = fit_pca(train, args.components).reconstruct(test).clamp(0, 1)
        scores = {
            "pca": squared_error(reconstructed, test),
            "euclidean": nearest_neighbour_distances(test, train, args.neighbours),
            "hellinger": nearest_neighbour_distances(
                hellinger_features(test), hellinger_features(train), args.neighbours
            ),
        }
        is_anomaly = splits.test.labels != label
        for name, values in scores.items():
            table[name].append(detection_metrics(values, is_anomaly)["auroc"])
    print(f"AUROC per class 0..{args.classes - 1}, mean, classes above PCA")
    for name in names:
        above = sum(value > pca for value, pca in zip(table[name], table["pca"], strict=True))
        cells = " ".join(f"{value:.3f}" for value in table[name])
        mean = sum(table[name]) / args.classes
        print(f"{name:10s} {cells}  mean {mean:.3f}  above PCA on {above}")


if __name__ == "__main__":
    main()
