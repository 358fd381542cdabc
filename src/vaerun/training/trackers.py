"""What each experiment tracker (a Lightning logger of the ``logger`` group) gets beyond the scalars and
hparams that every Lightning logger takes: where the tracker stores pictures, and the arguments that name
its run after the run directory.

Keyed by the logger's class name (Lightning's own classes). Pictures are looked up along the logger's MRO,
so a subclass in the user's --config-dir gets its base's; the run arguments go by the exact class name.
The package a tracker needs is vaerun.core.checks.packages's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _tensorboard(logger: Any, tag: str, image: np.ndarray, step: int) -> None:
    logger.experiment.add_image(tag, image, global_step=step, dataformats="HWC")


def _mlflow(logger: Any, tag: str, image: np.ndarray, step: int) -> None:
    logger.experiment.log_image(logger.run_id, image, key=tag.replace("/", "."), step=step)


def _wandb(logger: Any, tag: str, image: np.ndarray, step: int) -> None:
    logger.log_image(key=tag, images=[image], step=step)


PICTURE_WRITERS: dict[str, Callable[[Any, str, np.ndarray, int], None]] = {
    "TensorBoardLogger": _tensorboard,
    "MLFlowLogger": _mlflow,
    "WandbLogger": _wandb,
}


def _by_class(table: dict[str, Any], cls: type) -> Any:
    return next((table[base.__name__] for base in cls.__mro__ if base.__name__ in table), None)


def log_picture(logger: Any, tag: str, image: np.ndarray, step: int) -> None:
    """An (H, W, 3) uint8 picture to ``logger`` where it stores pictures (CSV does not)."""
    writer = _by_class(PICTURE_WRITERS, type(logger))
    if writer is not None:
        writer(logger, tag, image, step)


def _run_label(run_dir: Path) -> str:
    """The run directory as the user typed it: relative to the working directory where it lies below."""
    try:
        return str(run_dir.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(run_dir)


def _mlflow_arguments(spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    # MLflow >= 3 refuses its local file store (its offline store, the default here) unless told it is
    # wanted; a database or server URI is left alone.
    if str(spec.get("tracking_uri") or "").startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    tags = {**(spec.get("tags") or {}), "run_dir": str(run_dir.resolve())}
    return {"tags": tags, "run_name": spec.get("run_name") or _run_label(run_dir)}


def _wandb_arguments(spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    return {"name": spec.get("name") or _run_label(run_dir)}


#: what each tracker is given beyond its config: the run directory's name and path
ARGUMENTS: dict[str, Callable[[dict[str, Any], Path], dict[str, Any]]] = {
    "MLFlowLogger": _mlflow_arguments,
    "WandbLogger": _wandb_arguments,
}


def run_arguments(target: str, spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Keyword arguments for the logger ``target``: every logger's save_dir (the run directory), and
    what names the run after its directory where the tracker has a run name."""
    extra = ARGUMENTS.get(target.rsplit(".", 1)[-1])
    return {"save_dir": str(run_dir), **(extra(spec, run_dir) if extra else {})}
