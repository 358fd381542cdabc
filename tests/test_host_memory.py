"""The C allocator's settings for runs on the CPU (vaerun.core.host_memory), read back from glibc itself:
each check runs in a fresh interpreter, whose allocator nothing else has touched."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

#: prints whether a freed 48 MB block, asked for again, got a mapping of its own (glibc's mallinfo2)
MAPPED_AFTER = """
import ctypes
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
{setup}
mapped = libc.mallinfo2().hblks
block = libc.malloc(48 * 2**20)
print(libc.mallinfo2().hblks > mapped, flush=True)
libc.free(block)
"""


def mapped_after(setup: str, env: dict[str, str] | None = None) -> list[str]:
    code = MAPPED_AFTER.format(setup=setup)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    environment.pop("LD_PRELOAD", None)
    done = subprocess.run(
        [sys.executable, "-c", code], env={**environment, **(env or {})}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_glibc_maps_a_large_block_by_default():
    """The behaviour the setting changes: without it, a 48 MB block is a mapping of its own."""
    assert mapped_after("") == ["True"]


def test_kept_freed_memory_serves_large_blocks_from_the_heap():
    setup = "from vaerun.core.host_memory import keep_freed_memory; print(keep_freed_memory())"
    assert mapped_after(setup) == ["True", "False"]


@pytest.mark.parametrize(
    "env", [{"MALLOC_TRIM_THRESHOLD_": "134217728"}, {"GLIBC_TUNABLES": "glibc.malloc.perturb=0"}]
)
def test_the_users_own_allocator_settings_are_left_alone(env):
    setup = "from vaerun.core.host_memory import keep_freed_memory; print(keep_freed_memory())"
    assert mapped_after(setup, env) == ["False", "True"]


@pytest.mark.long
def test_a_cpu_run_keeps_freed_memory():
    """What vae-run's assembly does for a trainer on the CPU (and only there: a GPU run's host tensors are
    few)."""
    setup = (
        "import pytorch_lightning as pl\n"
        "from vaerun.stages.assembly import _tune_cpu_run\n"
        "_tune_cpu_run(pl.Trainer(accelerator='cpu', logger=False, enable_progress_bar=False))"
    )
    assert mapped_after(setup) == ["False"]
