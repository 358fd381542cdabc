"""What the machine must have for the run it is asked for, checked before anything is written: a CUDA GPU
for device=gpu, and for compile=true on a CPU the C++ compiler that torch.compile builds its kernels with."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

import torch

from vaerun.core.checks import ConfigError


def check_machine(cfg: dict[str, Any]) -> None:
    """Refuse, in one line, a run this machine cannot start."""
    accelerator = str(cfg["trainer"].get("accelerator"))
    asks_for_gpu = accelerator in ("gpu", "cuda")
    if asks_for_gpu and not torch.cuda.is_available():
        raise ConfigError(
            "device=gpu: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); "
            "use device=cpu or device=auto"
        )
    on_gpu = asks_for_gpu or (accelerator == "auto" and torch.cuda.is_available())
    if cfg["compile"] and not on_gpu and not os.environ.get("TORCH_INDUCTOR_INSTALL_GXX"):
        compiler = cpp_compiler()
        if shutil.which(compiler) is None:
            named = f"CXX={compiler}" if os.environ.get("CXX") else compiler
            raise ConfigError(
                f"compile=true: on a CPU torch.compile builds its kernels with a C++ compiler, and {named} "
                "is not found; install one (or name it in CXX) or set compile=false"
            )


def cpp_compiler() -> str:
    """The C++ compiler torch.compile's Inductor builds CPU kernels with: $CXX, else its platform's default
    (torch._inductor.config.cpp.cxx), which without one it reports only at the first compiled step, in a
    traceback."""
    default = "cl" if sys.platform == "win32" else "clang++" if sys.platform == "darwin" else "g++"
    return os.environ.get("CXX") or default
