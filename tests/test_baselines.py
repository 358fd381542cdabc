from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SklearnPCA

from vaerun.data import DigitsSource, FashionMNISTSource, to_unit_float
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
