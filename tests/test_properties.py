"""Property-based tests (hypothesis) of the corruptions and of the config checks."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaerun.core.checks import ConfigError, check_corruption, check_value
from vaerun.models.corruption import BlockMask, GaussianBlur, GaussianNoise, PixelDrop

shapes = st.tuples(st.integers(1, 4), st.sampled_from([1, 3]), st.integers(4, 20), st.integers(4, 20))
corruptions = st.one_of(
    st.floats(0, 1).map(PixelDrop),
    st.integers(1, 4).map(BlockMask),
    st.tuples(st.floats(0.1, 3.0), st.sampled_from([1, 3, 5])).map(lambda a: GaussianBlur(*a)),
    st.floats(0, 2).map(lambda std: GaussianNoise(std, clip=True)),
)


@settings(max_examples=60, deadline=None)
@given(shape=shapes, corruption=corruptions, seed=st.integers(0, 2**31 - 1))
def test_corruptions_keep_shape_and_range_and_are_deterministic_under_a_seed(shape, corruption, seed):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    first = corruption(x, generator=torch.Generator().manual_seed(seed))
    again = corruption(x, generator=torch.Generator().manual_seed(seed))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert first.min() >= 0 and first.max() <= 1 + 1e-6
    assert torch.equal(first, again)


@settings(max_examples=60, deadline=None)
@given(shape=shapes, p=st.floats(0, 1), seed=st.integers(0, 2**31 - 1))
def test_pixel_drop_only_ever_zeroes_pixels(shape, p, seed):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) + 0.5
    out = PixelDrop(p)(x, generator=torch.Generator().manual_seed(seed))
    assert torch.all((out == 0) | (out == x))


@given(latent=st.integers(1, 10_000))
def test_every_positive_integer_latent_passes(latent):
    check_value("latent", latent)


@given(
    latent=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.text(), st.booleans(), st.none())
)
def test_anything_else_as_latent_is_refused(latent):
    with pytest.raises(ConfigError, match="latent must be an integer >= 1"):
        check_value("latent", latent)


@given(p=st.floats(allow_nan=True, allow_infinity=True))
def test_a_drop_probability_passes_exactly_when_it_is_in_the_unit_interval(p):
    if math.isfinite(p) and 0 <= p <= 1:
        check_corruption({"p": p}, (1, 28, 28))
    else:
        with pytest.raises(ConfigError, match=r"corruption\.p must be a number in \[0, 1\]"):
            check_corruption({"p": p}, (1, 28, 28))


@given(size=st.integers(-5, 40), side=st.integers(1, 32))
def test_a_block_passes_exactly_when_it_fits_the_image(size, side):
    if 1 <= size <= side:
        check_corruption({"size": size}, (1, side, side))
    else:
        with pytest.raises(ConfigError, match=r"corruption\.size"):
            check_corruption({"size": size}, (1, side, side))
