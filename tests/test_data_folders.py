"""Image folders built from real images: Fashion-MNIST written out as PNG files (the same tensor as the idx
files), colour patches of scikit-learn's bundled photographs, and the files people's folders hold: a
truncated PNG, a text file named .png, a grey PNG among colour ones, a 16-bit PNG and a palette PNG."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from conftest import TINY, read_metrics, vae_run
from PIL import Image

from vaerun.core.checks import ConfigError
from vaerun.data import FashionMNISTSource, ImageFolderSource
from vaerun.data import folders as folders_module

PATCH = 32


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory):
    """200 training and 100 test images of Fashion-MNIST as train/CLASS/N.png and test/CLASS/N.png."""
    root = tmp_path_factory.mktemp("fashion")
    splits = FashionMNISTSource(str(root / "idx"), system_dir="/usr/share/datasets/fashion-mnist").load()
    written = {}
    for name, split, count in (("train", splits.train, 200), ("test", splits.test, 100)):
        for i in range(count):
            folder = root / "images" / name / f"class_{int(split.labels[i])}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(split.images[i, 0].numpy(), "L").save(folder / f"{i:04d}.png")
        written[name] = (split.images[:count], split.labels[:count])
    return root / "images", written


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """40 patches of 32 x 32 from each of scikit-learn's two photographs and scikit-image's astronaut, in
    a folder per photograph, and the awkward files."""
    from skimage import data as skimage_data
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("colour")
    sample = load_sample_images()
    names = [os.path.splitext(os.path.basename(path))[0] for path in sample.filenames]
    photos = [*zip(sample.images, names, strict=True), (skimage_data.astronaut(), "astronaut")]
    for photo, name in photos:
        folder = root / name
        folder.mkdir()
        for i in range(40):
            top, left = (i // 8) * PATCH * 2, (i % 8) * PATCH * 2
            Image.fromarray(photo[top : top + PATCH, left : left + PATCH]).save(folder / f"patch_{i:02d}.png")
    odd = root / "flower"
    buffer = (odd / "patch_00.png").read_bytes()
    (odd / "truncated.png").write_bytes(buffer[: len(buffer) // 2])
    (odd / "not_an_image.png").write_text("this is text")
    Image.fromarray(np.full((PATCH, PATCH), 77, np.uint8), "L").save(odd / "grey.png")
    sixteen = np.zeros((PATCH, PATCH), np.uint16)
    sixteen[0, 0], sixteen[0, 1] = 65535, 32896
    Image.fromarray(sixteen).save(odd / "sixteen_bit.png")  # a uint16 array: a 16-bit grey PNG
    palette = Image.new("P", (PATCH, PATCH), 1)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.save(odd / "palette.png", transparency=0)  # index 0 (red) is transparent: white on the canvas
    return root


def test_a_folder_of_fashion_mnist_pngs_is_the_same_tensor_as_the_idx_files(fashion_folder):
    root, written = fashion_folder
    splits = ImageFolderSource(str(root), val_fraction=0.1).load()
    assert splits.classes == tuple(f"class_{k}" for k in range(10))
    expected_images, expected_labels = written["test"]
    order = sorted(range(len(expected_labels)), key=lambda i: (int(expected_labels[i]), i))  # path order
    assert torch.equal(splits.test.images, expected_images[order])
    assert torch.equal(splits.test.labels, expected_labels[order])
    assert (len(splits.train), len(splits.val)) == (180, 20)  # val/ missing: a tenth of train/ by split_seed
    train_and_val = torch.cat([splits.train.images, splits.val.images])
    assert sorted(map(bytes, train_and_val.flatten(1).numpy())) == sorted(
        map(bytes, written["train"][0].flatten(1).numpy())
    )


def test_colour_images_with_odd_files_load_as_rgb_and_the_unreadable_are_counted(
    colour_folder, caplog, tmp_path
):
    cache = str(tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        splits = ImageFolderSource(
            str(colour_folder), val_fraction=0.1, test_fraction=0.1, cache_dir=cache
        ).load()
    assert "Skipped 2 unreadable image files" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the cached run says so too
        ImageFolderSource(str(colour_folder), val_fraction=0.1, test_fraction=0.1, cache_dir=cache).load()
    assert (
        "Skipped 2 unreadable image files" in caplog.text
        and "when the cached images were decoded" in caplog.text
    )
    assert "truncated.png" in caplog.text or "not_an_image.png" in caplog.text
    images = torch.cat([splits.train.images, splits.val.images, splits.test.images])
    assert images.shape == (123, 3, PATCH, PATCH) and images.dtype == torch.uint8
    assert splits.classes == ("astronaut", "china", "flower")
    # the odd files one by one
    grey = folders_module.decode(colour_folder / "flower" / "grey.png", folders_module.Transform(channels=3))
    assert grey.shape == (3, PATCH, PATCH) and (grey == 77).all()
    sixteen = folders_module.decode(colour_folder / "flower" / "sixteen_bit.png", folders_module.Transform())
    assert sixteen.shape == (1, PATCH, PATCH) and sixteen[0, 0, 0] == 255 and sixteen[0, 0, 1] == 128
    palette = folders_module.decode(colour_folder / "flower" / "palette.png", folders_module.Transform())
    assert palette[:, 0, 0].tolist() == [255, 255, 255] and palette[:, 1, 1].tolist() == [0, 0, 255]


def test_image_size_resizes_the_shorter_side_and_crops_the_centre(tmp_path):
    wide = np.zeros((48, 96, 3), np.uint8)
    wide[:, 24:72] = 200  # the central 48 x 48 is bright, the side bands dark
    Image.fromarray(wide).save(tmp_path / "wide.png")
    image = folders_module.decode(tmp_path / "wide.png", folders_module.Transform(image_size=16))
    # the dark bands are cropped away; antialiasing blends a little of them into the edge columns only
    assert image.shape == (3, 16, 16) and image[:, :, 1:-1].min() >= 190 and image.min() > 150
    cropped = folders_module.decode(tmp_path / "wide.png", folders_module.Transform(image_size=8, crop=40))
    assert cropped.shape == (3, 8, 8) and cropped.min() >= 190  # cropped to the bright centre first
    with pytest.raises(ValueError, match=r"smaller than data\.source\.crop=50"):
        folders_module.decode(tmp_path / "wide.png", folders_module.Transform(crop=50))
    assert folders_module.decode(tmp_path / "wide.png", folders_module.Transform()).shape == (3, 48, 96)


def test_images_of_different_sizes_need_an_image_size(tmp_path):
    Image.new("RGB", (20, 10)).save(tmp_path / "a.png")
    Image.new("RGB", (12, 12)).save(tmp_path / "b.jpg")
    with pytest.raises(ConfigError, match=r"a.png is 20x10, b.jpg is 12x12\); set data.image_size=S"):
        ImageFolderSource(str(tmp_path)).load()
    splits = ImageFolderSource(str(tmp_path), image_size=8, val_fraction=0, test_fraction=0).load()
    assert splits.train.images.shape == (2, 3, 8, 8)


def test_a_missing_path_a_file_and_a_folder_without_images_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.source\.path: no such folder: \S+nothing$"):
        ImageFolderSource(str(tmp_path / "nothing")).load()
    with pytest.raises(ConfigError, match=r"no such folder: \S+nothing \(it should be CelebA's img_align"):
        ImageFolderSource(str(tmp_path / "nothing"), description="CelebA's img_align_celeba").load()
    (tmp_path / "file.png").write_text("x")
    with pytest.raises(ConfigError, match="is a file; give the folder"):
        ImageFolderSource(str(tmp_path / "file.png")).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"data\.source\.path: no images"):
        ImageFolderSource(str(tmp_path / "empty")).load()


def test_the_decoded_images_are_cached_and_read_again_when_a_file_changes(
    colour_folder, tmp_path, monkeypatch
):
    source = ImageFolderSource(str(colour_folder / "china"), cache_dir=str(tmp_path / "cache"))
    first = source.load()
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    decoded = []
    original = folders_module.decode
    monkeypatch.setattr(folders_module, "decode", lambda *a: decoded.append(a) or original(*a))
    again = source.load()
    assert not decoded and torch.equal(again.train.images, first.train.images)  # from the cache
    changed = colour_folder / "china" / "patch_00.png"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    source.load()
    assert len(decoded) == 40  # a changed folder is read again, never served stale


def colour_run(folder, *args: str) -> list[str]:
    return ["data=image_folder", f"data.source.path={folder}", "data.source.cache_dir=null", *TINY, *args]


def test_a_conv_dae_on_a_colour_folder_trains_and_imputes(colour_folder, tmp_path):
    """A conv DAE with a learned Gaussian scale and a block mask, trained, then filling hidden pixels of
    the colour test images, against the colour PCA."""
    dae = ["model=dae", "encoder=conv", "corruption=block_mask", "corruption.size=8", "stage=impute"]
    vae_run(
        *colour_run(colour_folder, *dae, "likelihood=gaussian", "likelihood.learn_std=true"), cwd=tmp_path
    )
    run = next(tmp_path.glob("outputs/*/*"))
    grid = np.asarray(Image.open(run / "images" / "val_reconstructions.png").convert("RGB"))
    assert np.abs(grid[..., 0].astype(int) - grid[..., 2]).max() > 30  # the originals are in colour
    saved = (run / ".hydra" / "config.yaml").read_text()
    assert (
        "- astronaut" in saved
        and "- china" in saved
        and "- flower" in saved
        and "source_used: image_folder:" in saved
    )
    imputed = read_metrics(run)
    assert imputed["impute/block_16/pca/psnr"] > 0 and 0 < imputed["impute/mcar_0.5/model/ssim"] <= 1


def test_a_vae_with_a_discretized_logistic_reports_bits_per_dimension(colour_folder, tmp_path):
    """An MLP VAE whose -log p(x) is a probability of the 8-bit images: finite, positive bits per
    dimension (a model three steps old is still near the 8 of a uniform guess), PixelCNN++'s mixture of
    coupled channels in every stage (AIS takes its gradient). No host memory allowed: it trains from the
    folder's memory-mapped cache file."""
    vae = ["model=vae", "corruption=pixel_drop", "likelihood=discretized_logistic", "likelihood.mixtures=2",
           "likelihood.channel_coupling=true"]  # fmt: skip
    mapped = [f"data.source.cache_dir={tmp_path / 'cache'}", "data.max_host_memory_gb=0"]
    result = vae_run(*colour_run(colour_folder, *vae, "hydra.run.dir=vae", *mapped), cwd=tmp_path)
    assert "in a memory-mapped file" in result.stdout + result.stderr
    metrics = read_metrics(tmp_path / "vae")
    for key in ("test/nll_iwae_bpd", "test/nll_ais_bpd"):
        assert 0 < metrics[key] < 12, (key, metrics[key])
    assert metrics["test/reconstruction/ssim"] <= 1  # SSIM over the three channels


def test_anomaly_detection_on_a_colour_folder_scores_its_classes(colour_folder, tmp_path):
    """A residual conv AE under the one-class protocol, against the colour PCA; the normal class named by
    its folder, as the user sees it."""
    anomaly = [
        "model=ae",
        "encoder=resnet",
        "stage=anomaly",
        "data.normal_class=astronaut",
        "hydra.run.dir=run",
    ]
    args = colour_run(colour_folder, *anomaly)
    vae_run(*args, cwd=tmp_path)
    metrics = read_metrics(tmp_path / "run")
    assert metrics["anomaly/normal_class"] == 0  # astronaut, china, flower: in sorted order
    assert "Anomaly detection, normal class 0 (astronaut): " in (tmp_path / "run" / "vae_run.log").read_text()
    for score in ("reconstruction_error", "pca_reconstruction_error"):
        assert 0 <= metrics[f"anomaly/{score}/auroc"] <= 1


#: fewer Markov chain steps and pictures than TINY's, for 64-px images on a CPU: every code path, not its cost
CHEAP_PICTURES_AND_CHAINS = [
    "eval.ais_images=4",
    "sample.mcmc_steps=2",
    "sample.traversal_dims=2",
    "sample.num_interpolations=2",
    "impute.iterations=2",
    "impute.rates=[0.5]",
]


@pytest.fixture(scope="module")
def photo_folder_64(tmp_path_factory):
    """300 colour crops of 64 x 64, 100 from each of the three photographs, in a folder per photograph."""
    from skimage import data as skimage_data
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("photos64")
    photos = [*load_sample_images().images, skimage_data.astronaut()]
    for number, photo in enumerate(photos):
        (root / f"photo{number}").mkdir()
        height, width = photo.shape[:2]
        for i in range(100):
            top, left = (i // 10) * ((height - 64) // 9), (i % 10) * ((width - 64) // 9)
            crop = photo[top : top + 64, left : left + 64]
            Image.fromarray(crop).save(root / f"photo{number}" / f"crop_{i:02d}.png")
    return root


def test_a_64_px_colour_folder_goes_through_every_stage(photo_folder_64, tmp_path):
    """A conv VAE with a discretized logistic on 64-px colour images: trained, evaluated (bits/dim, the
    PCA baseline on 12,288 dimensions, every part timed) and sampled; then impute and anomaly from its
    checkpoint. Trained faithfully (its scales on the decoder's features detached)."""
    data = ["data=image_folder", f"data.source.path={photo_folder_64}", f"data.source.cache_dir={tmp_path}"]
    likelihood = ["likelihood=discretized_logistic", "likelihood.faithful=true"]
    run = [*data, "encoder=conv", *likelihood, *TINY, *CHEAP_PICTURES_AND_CHAINS]
    vae_run(*run, "eval.iwae_images=5", "eval.ais_pixels=24576", "hydra.run.dir=all", cwd=tmp_path)
    metrics = read_metrics(tmp_path / "all")
    assert metrics["test/iwae_images"] == 5 and metrics["test/nll_iwae_se"] > 0  # capped, with its error
    # AIS capped by its pixels, at two 64 x 64 x 3 images, before eval.ais_images=4 does
    assert metrics["test/ais_images"] == 2 and metrics["test/nll_ais_se"] > 0
    log = (tmp_path / "all" / "vae_run.log").read_text()
    assert "first 2 test images (eval.ais_pixels=24576 in all)" in log
    assert 0 < metrics["test/nll_iwae_bpd"] < 12 and 0 < metrics["test/pca_mse"] < 0.1
    assert {"time/train_s", "time/eval_pca_s", "time/eval_iwae_s", "time/sample_s"} <= set(metrics)
    with Image.open(tmp_path / "all" / "images" / "sample_generated.png") as samples:
        assert samples.mode == "RGB" and samples.width > 64 * 2
    vae_run(*run, "stage=impute", f"ckpt={tmp_path / 'all'}", "hydra.run.dir=impute", cwd=tmp_path)
    imputed = read_metrics(tmp_path / "impute")
    assert imputed["impute/block_32/pca/psnr"] > 0 and "time/impute_s" in imputed
    assert "time/train_s" not in imputed  # the checkpoint's model, as it is: no training stage
    anomaly = ["stage=anomaly", "data.normal_class=0", "anomaly.iwae_samples=4", "hydra.run.dir=anomaly"]
    vae_run(*run, *anomaly, f"ckpt={tmp_path / 'all'}", cwd=tmp_path)
    scores = read_metrics(tmp_path / "anomaly")
    assert 0 <= scores["anomaly/pca_reconstruction_error/auroc"] <= 1 and "time/anomaly_s" in scores
    assert "time/train_s" not in scores
    # the checkpoint's run trained on every class: its scores are not one-class, and the run says so
    assert scores["anomaly/model_trained_on"] == "every class"
    warned = "was trained on every class, the anomalies' included"
    assert warned in (tmp_path / "anomaly" / "vae_run.log").read_text()
    assert {"time/anomaly_model_scores_s", "time/anomaly_mahalanobis_s", "time/anomaly_pca_s"} <= set(scores)


def photo_patches(count: int) -> np.ndarray:
    """(count, 32, 32, 3) uint8 patches of scikit-learn's photographs, as CIFAR-10's arrays are laid out."""
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[0]
    return np.stack(
        [
            photo[(i // 10) * 32 : (i // 10) * 32 + 32, (i % 10) * 32 : (i % 10) * 32 + 32]
            for i in range(count)
        ]
    )


def test_cifar10_is_colour_with_its_class_names_and_offline_one_clear_error(tmp_path, monkeypatch):
    from types import SimpleNamespace
    from urllib.error import URLError

    from vaerun.data import CIFAR10Source

    data = {True: photo_patches(60), False: photo_patches(20)}

    def dataset(self, train, download):  # torchvision's CIFAR10, with real photographs as its arrays
        labels = [i % 10 for i in range(len(data[train]))]
        return SimpleNamespace(data=data[train], targets=labels, classes=[f"class {k}" for k in range(10)])

    monkeypatch.setattr(CIFAR10Source, "_dataset", dataset)
    splits = CIFAR10Source(str(tmp_path), val_size=10).load()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50, 10, 20)
    assert splits.test.images.shape == (20, 3, 32, 32) and splits.classes[3] == "class 3"
    assert torch.equal(splits.test.images[5].permute(1, 2, 0), torch.from_numpy(data[False][5]))

    def offline(self, train, download):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(CIFAR10Source, "_dataset", offline)
    with pytest.raises(ConfigError, match=r"data=cifar10: CIFAR-10 is not in .* unpack it there"):
        CIFAR10Source(str(tmp_path)).load()


def test_hidden_files_and_folders_are_skipped_and_a_linked_loop_is_read_once(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / ".ipynb_checkpoints").mkdir()
    for path in (tmp_path / "cats" / "a.png", tmp_path / ".ipynb_checkpoints" / "b.png", tmp_path / ".c.png"):
        Image.new("RGB", (4, 4)).save(path)
    (tmp_path / "cats" / "again").symlink_to(tmp_path)  # a link back up: must not recurse forever
    listing = folders_module.list_images(tmp_path)
    assert [os.path.relpath(f, tmp_path) for f in listing.files] == ["cats/a.png"]
    assert listing.classes == ["cats"]
