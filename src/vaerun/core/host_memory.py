"""How the process's C allocator treats the large blocks that tensors on the CPU come and go in.

glibc's malloc serves each block above its mmap threshold (dynamic, at most 32 MB) with a fresh mapping of
its own and hands it back to the system when freed, and it gives back the freed top of its heap beyond its
trim threshold. A CPU tensor of a few tens of MB, made and freed at every step (a decoder's activations, the
likelihood's buffers), is then zero-filled by the kernel page by page at each step. Keeping freed memory
for reuse, as jemalloc and TCMalloc do (PyTorch's CPU performance guide recommends them), took AIS's time
per gradient evaluation of a 32-px conv VAE from about 220 to 150 ms on 2 cores (docs/speed.md).
The price: the process keeps its peak memory until it ends, which a run does anyway.
"""

from __future__ import annotations

import ctypes
import os

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: blocks above this still get a mapping of their own, given back when freed (a one-off covariance matrix)
MMAP_THRESHOLD = 256 * 2**20
#: freed memory at the top of the heap kept for reuse, up to this (mallopt takes a C int)
TRIM_THRESHOLD = 2**31 - 1
#: set by a user who chose the allocator's behaviour: left as they set it
_USER_CHOICES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks up to MMAP_THRESHOLD for reuse instead of handing them back
    to the system. Does nothing, and returns False, where the C library has no ``mallopt`` (macOS,
    Windows) or the user chose the allocator's settings or another allocator in the environment; True
    where both settings took."""
    if any(os.environ.get(name) for name in _USER_CHOICES):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):  # no mallopt; Windows: no process library
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # the threshold first: setting either turns off glibc's own adjustment of the other
    mapped = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    return bool(mapped) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
