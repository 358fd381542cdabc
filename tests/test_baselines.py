from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SklearnPCA

from vaerun.data import DigitsSource, FashionMNISTSource, MNIST5kSource, to_unit_float
from vaerun.evaluation.baselines import active_units, fit_pca


def test_pca_matches_scikit_learn():
    splits = DigitsSource().load()
    train, test = to_unit_float(splits.train.images), to_unit_float(splits.test.images)
    ours = fit_pca(train, 5).reconstruct(test)
    reference = SklearnPCA(5).fit(train.flatten(1).numpy())
    expected = reference.inverse_transform(reference.transform(test.flatten(1).numpy()))
    np.testing.assert_allclose(ours.flatten(1).numpy(), expected, atol=1e-4)


def test_pca_with_all_components_is_the_identity():
    x = torch.rand(50, 1, 4, 4)
    torch.testing.assert_close(fit_pca(x, 16).reconstruct(x), x, atol=1e-5, rtol=0)


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist missing"
)
@pytest.mark.parametrize(("k", "published"), [(2, 0.0461), (10, 0.0244), (50, 0.0120)])
def test_pca_test_mse_on_fashion_mnist_matches_the_reference_numbers(tmp_path, k, published):
    splits = FashionMNISTSource(str(tmp_path), system_dir="/usr/share/datasets/fashion-mnist").load()
    train, test = to_unit_float(splits.train.images), to_unit_float(splits.test.images)
    mse = ((fit_pca(train, k).reconstruct(test) - test) ** 2).mean().item()
    assert mse == pytest.approx(published, abs=5e-4)


def test_active_units_count_the_dimensions_that_vary():
    codes = torch.randn(1000, 4) * torch.tensor([1.0, 0.5, 0.05, 0.0])
    assert active_units(codes) == 2


def photo_crops(count: int, size: int, seed: int) -> torch.Tensor:
    """``count`` random size x size colour crops (uint8) of scikit-learn's two bundled photographs."""
    from sklearn.datasets import load_sample_images

    photos = [torch.tensor(image).permute(2, 0, 1) for image in load_sample_images().images]
    generator = torch.Generator().manual_seed(seed)
    crops = []
    for number in range(count):
        photo = photos[number % 2]
        top, left = (int(torch.randint(0, n - size, (1,), generator=generator)) for n in photo.shape[1:])
        crops.append(photo[:, top : top + size, left : left + size])
    return torch.stack(crops)


def assert_same_pca(train: torch.Tensor, test: torch.Tensor, k: int, **options) -> None:
    """vaerun's PCA (fitted on uint8 images made floats chunk by chunk) against scikit-learn's exact one:
    the same test reconstruction error to 1e-3 relative, and the same subspace (principal angles)."""
    ours = fit_pca(train, k, transform=lambda rows: rows.float() / 255, **options)
    reference = SklearnPCA(k, svd_solver="full").fit((train.flatten(1).float() / 255).numpy())
    test = test.float() / 255
    expected = reference.inverse_transform(reference.transform(test.flatten(1).numpy()))
    mse = ((ours.reconstruct(test) - test) ** 2).mean().item()
    reference_mse = ((torch.from_numpy(expected).view_as(test) - test) ** 2).mean().item()
    assert mse == pytest.approx(reference_mse, rel=1e-3)
    cosines = torch.linalg.svdvals(
        ours.components.double().T @ torch.from_numpy(reference.components_.T).double()
    )
    assert cosines.min() > 0.99  # every principal angle within 8 degrees (the k-th eigenvalues are close)


def test_exact_pca_of_an_mnist_sized_set_is_scikit_learns():
    splits = MNIST5kSource().load()
    assert_same_pca(splits.train.images, splits.test.images, 16)


@pytest.mark.parametrize("k", [16, 64])
def test_randomized_pca_of_64px_colour_crops_fewer_than_their_dimensions_is_the_exact_one(k):
    # 600 images of 3 x 64 x 64 = 12,288 dimensions: past the exact path, whose eigendecomposition of the
    # 12,288 x 12,288 covariance alone would take minutes
    assert_same_pca(photo_crops(600, 64, seed=0), photo_crops(100, 64, seed=1), k)


def test_randomized_pca_of_more_images_than_dimensions_is_the_exact_one():
    # 2,500 colour crops of 3 x 24 x 24 = 1,728 dimensions, the randomized path forced, against the exact
    assert_same_pca(photo_crops(2500, 24, seed=0), photo_crops(100, 24, seed=1), 16, exact_max_dims=1000)
