"""Where a data set's tensors live while a model trains on them: on the training device when they fit
(``data.device_memory_fraction`` of its free memory), else in host memory (batches gathered into pinned
buffers on a GPU, so that each copy to the device is asynchronous), else, past ``data.max_host_memory_gb``,
in the memory-mapped cache file an image folder is decoded into. Batches come in the same seeded order
wherever the data lives; no DataLoader worker is involved in any of the three.
"""

from __future__ import annotations

import enum
import logging
import os

import torch

from vaerun.data.splits import Split, Splits

log = logging.getLogger(__name__)

GIB = 2**30


class Placement(enum.Enum):
    DEVICE = "on the training device"
    HOST = "in host memory"
    MAPPED = "in a memory-mapped file"


def choose_placement(
    nbytes: int,
    free_device_bytes: int | None,
    device_memory_fraction: float,
    host_budget_bytes: int,
    mapped: bool,
) -> Placement:
    """``free_device_bytes`` None: the data is trained on by the CPU (no separate device memory).
    ``mapped``: whether the data already lives in a memory-mapped file, the only way to hold a set larger
    than the host budget without reading all of it into memory."""
    if free_device_bytes is not None and nbytes <= device_memory_fraction * free_device_bytes:
        return Placement.DEVICE
    if mapped and nbytes > host_budget_bytes:
        return Placement.MAPPED
    return Placement.HOST


def free_device_memory(device: torch.device) -> int | None:
    """Bytes free on an accelerator; None on the CPU. Apple's GPUs share the host's memory: what the
    Metal driver recommends, less what it already holds."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    if device.type == "cpu":
        return None
    return 2**62  # an accelerator that does not say (XLA): as before, the data goes to it


def host_memory_budget(max_host_memory_gb: float | None) -> int:
    """``max_host_memory_gb`` in bytes; None: half of the machine's physical memory."""
    if max_host_memory_gb is not None:
        return int(max_host_memory_gb * GIB)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def split_bytes(splits: Splits) -> int:
    return sum(split.images.nbytes + split.labels.nbytes for split in splits[:3])


def place(
    splits: Splits, device: torch.device, device_memory_fraction: float, max_host_memory_gb: float | None
) -> tuple[Splits, Placement]:
    """The splits moved where ``choose_placement`` says, and where that is."""
    nbytes = split_bytes(splits)
    mapped = all(split.mapped for split in splits[:3])
    placement = choose_placement(
        nbytes,
        free_device_memory(device),
        device_memory_fraction,
        host_memory_budget(max_host_memory_gb),
        mapped,
    )
    if placement is Placement.DEVICE:
        moved = [split.to(device) for split in splits[:3]]
    elif placement is Placement.HOST:  # a mapped file is read into memory once, here
        moved = [split.to(torch.device("cpu"), copy=split.mapped) for split in splits[:3]]
    else:
        moved = list(splits[:3])
    count = sum(len(split.images) for split in splits[:3])
    shape = "x".join(str(n) for n in splits.train.images.shape[1:])
    log.info(
        "Data: %s, %d images of %s (%s), %s%s",
        splits.source,
        count,
        shape,
        f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB",
        placement.value,
        " (batches copied to the device from pinned buffers)"
        if placement is not Placement.DEVICE and device.type == "cuda"
        else "",
    )
    return splits.with_splits(*moved), placement


def gather(split: Split, index: torch.Tensor, pin: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows ``index`` of a split, in that order; ``pin``: into page-locked memory, from which the
    copy to a GPU runs asynchronously."""
    if not pin:
        return split.images[index], split.labels[index]
    images = torch.empty((len(index), *split.images.shape[1:]), dtype=split.images.dtype, pin_memory=True)
    labels = torch.empty(len(index), dtype=split.labels.dtype, pin_memory=True)
    torch.index_select(split.images, 0, index, out=images)
    torch.index_select(split.labels, 0, index, out=labels)
    return images, labels
