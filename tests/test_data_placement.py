"""Where the data lives while a model trains: the choice between device, host memory and a mapped file,
the cache file an image folder is decoded into, and batches that come in the same seeded order from all
three."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from vaerun.data import ImageFolderSource
from vaerun.data.datamodule import ImageDataModule
from vaerun.data.image_cache import ImageWriter
from vaerun.data.placement import GIB, Placement, choose_placement, gather, host_memory_budget

MB = 2**20


@pytest.mark.parametrize(
    ("nbytes", "free_device", "mapped", "expected"),
    [
        (100 * MB, 1000 * MB, False, Placement.DEVICE),  # a tenth of the free memory: on the GPU
        (600 * MB, 1000 * MB, False, Placement.HOST),  # over half of it: host memory
        (600 * MB, 1000 * MB, True, Placement.HOST),  # mapped, but within the host budget: read in
        (3000 * MB, 1000 * MB, True, Placement.MAPPED),  # over the host budget: stays in the file
        (3000 * MB, 1000 * MB, False, Placement.HOST),  # nothing to map it from: host memory
        (100 * MB, None, False, Placement.HOST),  # trained on by the CPU
        (3000 * MB, None, True, Placement.MAPPED),
    ],
)
def test_the_data_goes_to_the_device_when_it_fits_else_host_memory_else_its_mapped_file(
    nbytes, free_device, mapped, expected
):
    placement = choose_placement(nbytes, free_device, 0.5, host_budget_bytes=2000 * MB, mapped=mapped)
    assert placement is expected


def test_the_host_budget_is_half_the_machine_unless_set():
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert host_memory_budget(None) == physical // 2
    assert host_memory_budget(1.5) == int(1.5 * GIB) and host_memory_budget(0) == 0


@pytest.mark.parametrize("to_file", [True, False])
def test_a_colour_image_after_grey_ones_widens_what_was_written(tmp_path, to_file):
    writer = ImageWriter(tmp_path / "images.u8" if to_file else None, channels=None)
    grey, colour = np.full((1, 4, 5), 7, np.uint8), np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    writer.append(grey, tmp_path / "a.png")
    writer.append(grey + 1, tmp_path / "b.png")
    writer.append(colour, tmp_path / "c.png")
    writer.append(grey + 2, tmp_path / "d.png")  # grey after colour: as three equal channels
    images = writer.finish()
    assert images.shape == (4, 3, 4, 5)
    assert images[0].eq(7).all() and images[1].eq(8).all() and images[3].eq(9).all()
    assert torch.equal(images[2], torch.from_numpy(colour))
    if to_file:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["images.u8"]  # no partial file left
        assert (tmp_path / "images.u8").stat().st_size == images.numel()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """60 colour patches of 16 x 16 of a scikit-learn photograph, in two class folders."""
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("photos")
    photo = load_sample_images().images[1]
    for i in range(60):
        folder = root / f"class_{i % 2}"
        folder.mkdir(exist_ok=True)
        top, left = (i // 10) * 16, (i % 10) * 16
        Image.fromarray(photo[top : top + 16, left : left + 16]).save(folder / f"{i:02d}.png")
    return root


def placed(source, max_host_memory_gb) -> ImageDataModule:
    module = ImageDataModule(source, None, batch_size=8, seed=3, max_host_memory_gb=max_host_memory_gb)
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    module.trainer = SimpleNamespace(strategy=cpu, global_rank=0, world_size=1)
    module.setup("fit")
    return module


def test_a_cached_folder_is_mapped_and_its_batches_match_those_from_memory(photo_folder, tmp_path):
    cache = str(tmp_path / "cache")
    decoded = ImageFolderSource(str(photo_folder)).load()  # no cache: in memory
    ImageFolderSource(str(photo_folder), cache_dir=cache).load()  # decodes into the cache file
    mapped = ImageFolderSource(str(photo_folder), cache_dir=cache).load()
    assert all(split.mapped for split in mapped[:3]) and not decoded.train.mapped
    for ours, theirs in zip(mapped[:3], decoded[:3], strict=True):
        assert torch.equal(ours.images, theirs.images) and torch.equal(ours.labels, theirs.labels)

    in_file = placed(ImageFolderSource(str(photo_folder), cache_dir=cache), max_host_memory_gb=0)
    in_memory = placed(ImageFolderSource(str(photo_folder), cache_dir=cache), max_host_memory_gb=None)
    assert (in_file.placement, in_memory.placement) == (Placement.MAPPED, Placement.HOST)
    assert in_file.splits.train.mapped and not in_memory.splits.train.mapped
    for _epoch in range(2):  # a fresh permutation each epoch, the same on both
        batches = list(zip(in_file.train_dataloader(), in_memory.train_dataloader(), strict=True))
        assert len(batches) == 6
        for (images, labels), (expected_images, expected_labels) in batches:
            assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_a_batch_is_gathered_in_the_order_asked(photo_folder):
    split = ImageFolderSource(str(photo_folder)).load().train
    index = torch.tensor([5, 0, 3])
    images, labels = gather(split, index, pin=False)
    assert torch.equal(images, split.images[index]) and torch.equal(labels, split.labels[index])
    if torch.cuda.is_available():  # page-locked, the same rows
        pinned, pinned_labels = gather(split, index, pin=True)
        assert pinned.is_pinned() and torch.equal(pinned, images) and torch.equal(pinned_labels, labels)
