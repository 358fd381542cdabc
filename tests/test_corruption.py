import pytest
import torch

from vaerun.models.corruption import BlockMask, GaussianBlur, GaussianNoise, NoCorruption, PixelDrop


def images(n=64, c=1, h=28, w=28, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)) * 0.9 + 0.1


def test_none_is_the_identity():
    x = images()
    assert NoCorruption()(x) is x


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_pixel_drop_zeroes_about_p_of_the_pixels(p):
    x = images(n=256)
    dropped = (PixelDrop(p)(x) == 0).float().mean().item()
    assert dropped == pytest.approx(p, abs=0.01)


def test_pixel_drop_drops_whole_pixels_across_channels():
    x = images(n=16, c=3)
    zero = PixelDrop(0.5)(x) == 0
    assert torch.equal(zero[:, 0], zero[:, 1]) and torch.equal(zero[:, 0], zero[:, 2])


@pytest.mark.parametrize(("size", "h", "w"), [(1, 8, 8), (5, 8, 8), (14, 28, 28), (28, 28, 28), (7, 32, 20)])
def test_block_mask_hides_exactly_a_size_by_size_square(size, h, w):
    x = torch.ones(128, 2, h, w)
    hidden = BlockMask(size)(x) == 0
    assert (hidden.sum(dim=(1, 2, 3)) == 2 * size * size).all()
    rows, cols = hidden[:, 0].any(dim=2), hidden[:, 0].any(dim=1)
    assert (rows.sum(1) == size).all() and (cols.sum(1) == size).all()  # one square, not scattered pixels


def test_block_mask_position_varies_per_image_and_covers_the_corners():
    hidden = BlockMask(3)(torch.ones(2000, 1, 8, 8)) == 0
    coverage = hidden.float().mean(0)[0]
    assert (coverage > 0).all()  # every pixel, corners included, is hidden in some image


def test_block_larger_than_the_image_is_refused():
    with pytest.raises(ValueError, match="size"):
        BlockMask(9)(torch.ones(1, 1, 8, 8))


def test_blur_keeps_the_mean_and_smooths():
    x = images(n=32)
    blurred = GaussianBlur(sigma=1.5, kernel_size=7)(x)
    torch.testing.assert_close(blurred.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=5e-3, rtol=0)
    assert blurred.var() < 0.5 * x.var()
    constant = torch.full((2, 1, 8, 8), 0.7)
    torch.testing.assert_close(GaussianBlur(sigma=2.0, kernel_size=5)(constant), constant)


@pytest.mark.parametrize(
    ("kernel_size", "sigma", "shape"), [(7, 1.5, (4, 1, 8, 8)), (25, 4.0, (3, 3, 28, 32))]
)
def test_blur_matches_torchvision_gaussian_blur(kernel_size, sigma, shape):
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    expected = TF.gaussian_blur(x, [kernel_size, kernel_size], [sigma, sigma])
    torch.testing.assert_close(GaussianBlur(sigma, kernel_size)(x), expected, atol=1e-5, rtol=0)


def test_gaussian_noise_has_the_given_std_and_is_clipped():
    x = torch.full((64, 1, 28, 28), 0.5)
    noisy = GaussianNoise(std=0.1, clip=False)(x)
    assert (noisy - x).std().item() == pytest.approx(0.1, rel=0.02)
    clipped = GaussianNoise(std=1.0, clip=True)(x)
    assert clipped.min() >= 0 and clipped.max() <= 1


@pytest.mark.parametrize("corruption", [PixelDrop(0.3), BlockMask(5), GaussianNoise(0.2)])
def test_a_generator_makes_it_reproducible_and_each_call_is_fresh(corruption):
    x = images(n=8)
    first = corruption(x, generator=torch.Generator().manual_seed(1))
    again = corruption(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert not torch.equal(corruption(x), corruption(x))


@pytest.mark.parametrize(
    "corruption", [PixelDrop(0.3), BlockMask(5), GaussianNoise(0.2), GaussianBlur(1.0, 3)]
)
def test_clean_input_is_left_untouched(corruption):
    x = images(n=4)
    copy = x.clone()
    corruption(x)
    assert torch.equal(x, copy)


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: PixelDrop(1.5), "corruption.p"),
        (lambda: PixelDrop(-0.1), "corruption.p"),
        (lambda: GaussianBlur(sigma=-1.0), "corruption.sigma"),
        (lambda: GaussianBlur(kernel_size=4), "corruption.kernel_size"),
        (lambda: BlockMask(0), "corruption.size"),
        (lambda: GaussianNoise(std=-0.1), "corruption.std"),
    ],
)
def test_bad_parameters_are_refused_with_the_key(make, key):
    with pytest.raises(ValueError, match=key):
        make()


def test_on_colour_images_blur_works_per_channel_and_the_block_covers_every_channel():
    x = images(n=8, c=3, h=32, w=32)
    x[:, 1] = 0.5  # a flat channel stays flat under a per-channel blur, whatever the others do
    blurred = GaussianBlur(1.5, 7)(x)
    assert blurred.shape == x.shape and torch.allclose(blurred[:, 1], torch.full_like(blurred[:, 1], 0.5))
    assert not torch.allclose(blurred[:, 0], x[:, 0])
    hidden = BlockMask(10)(x, torch.Generator().manual_seed(0)) == 0
    assert torch.equal(hidden[:, 0], hidden[:, 2]) and (hidden.sum(dim=(2, 3)) == 100).all()
    noisy = GaussianNoise(0.3)(x)
    assert noisy.shape == x.shape and noisy.min() >= 0 and noisy.max() <= 1


@pytest.mark.parametrize("corruption", [PixelDrop(0.7), BlockMask(size=3)], ids=["pixel_drop", "block_mask"])
def test_hidden_names_exactly_the_pixels_the_same_draws_zero(corruption):
    x = torch.rand(16, 3, 8, 8) + 0.01  # no pixel is zero before the corruption
    hidden = corruption.hidden(x, torch.Generator().manual_seed(4))
    corrupted = corruption(x, torch.Generator().manual_seed(4))
    assert hidden.shape == x.shape and hidden.dtype == torch.bool and hidden.any()
    assert torch.equal(hidden, corrupted == 0)
    assert torch.equal(hidden, hidden[:, :1].expand_as(hidden))  # a pixel is hidden in all its channels


def test_a_centred_block_hides_the_same_middle_square_of_every_image():
    x = torch.ones(3, 2, 28, 28)
    hidden = BlockMask(14, centred=True).hidden(x)
    assert hidden.shape == x.shape and hidden.sum() == 3 * 2 * 14 * 14
    assert hidden[:, :, 7:21, 7:21].all() and not hidden[:, :, :7].any() and not hidden[:, :, 21:].any()
    assert (BlockMask(14, centred=True)(x) == ~hidden).all()
