"""What each experiment tracker (a Lightning logger of the ``logger`` group) gets beyond the scalars and
hparams that every Lightning logger takes: where the tracker stores pictures, the arguments that name its
run after the run directory, and the line that tells the user where to look at the run once it has ended.

Keyed by the logger's class name (Lightning's own classes). Pictures are looked up along the logger's MRO,
so a subclass in the user's --config-dir gets its base's; the run arguments go by the exact class name.
The package a tracker needs is vaerun.core.checks.packages's.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
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


def _class_name(target: str) -> str:
    """The class a ``_target_`` names, without its module: what the tables here are keyed by."""
    return target.rsplit(".", 1)[-1]


def run_arguments(target: str, spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Keyword arguments for the logger ``target``: every logger's save_dir (the run directory), and
    what names the run after its directory where the tracker has a run name."""
    extra = ARGUMENTS.get(_class_name(target))
    return {"save_dir": str(run_dir), **(extra(spec, run_dir) if extra else {})}


def _program(name: str) -> str:
    """A tracker's command: by its name where it is on PATH, else the venv's by its full path (as after
    `make run`, whose venv is not on PATH), quoted for the shell."""
    return shlex.quote(name if shutil.which(name) else str(Path(sys.executable).with_name(name)))


def _tensorboard_view(spec: dict[str, Any], run_dir: Path) -> str:
    command = _program("tensorboard")
    # --logdir_spec names the run (TensorBoard would list a run at the top of --logdir as ".")
    dated = re.fullmatch(r"\d{4}-\d{2}-\d{2}", run_dir.parent.name)
    name = "/".join(run_dir.parts[-2:]) if dated else run_dir.name
    # quoted for the shell where a name needs it (a space): the line is for copying
    return f"Look at it with: {command} --logdir_spec {shlex.quote(f'{name}:{run_dir}')}"


def _csv_view(spec: dict[str, Any], run_dir: Path) -> str:
    written = sorted((run_dir / str(spec.get("name") or "")).rglob("metrics.csv"), key=os.path.getmtime)
    return f"Its scalars: {written[-1] if written else run_dir}"


def _mlflow_view(spec: dict[str, Any], run_dir: Path) -> str:
    uri = str(spec.get("tracking_uri") or "file:./mlruns")
    if uri.startswith(("http://", "https://", "databricks")):
        experiment = f" (experiment {spec['experiment_name']})" if spec.get("experiment_name") else ""
        return f"Look at it at: {uri}{experiment}"
    if uri.startswith("file:"):
        uri = f"file:{Path(uri.removeprefix('file:')).resolve()}"
    return f"Look at it with: {_program('mlflow')} ui --backend-store-uri {shlex.quote(uri)}"


def _wandb_view(spec: dict[str, Any], run_dir: Path) -> str:
    if spec.get("offline"):
        latest = shlex.quote(str(run_dir / "wandb" / "latest-run"))
        return f"Upload it with: {_program('wandb')} sync {latest}"
    return f"Look at it in W&B's project {spec.get('project')}"


#: the line that tells where each tracker keeps the run, once it has ended
VIEWS: dict[str, Callable[[dict[str, Any], Path], str]] = {
    "TensorBoardLogger": _tensorboard_view,
    "CSVLogger": _csv_view,
    "MLFlowLogger": _mlflow_view,
    "WandbLogger": _wandb_view,
}


def where_to_look(loggers: dict[str, dict[str, Any]], run_dir: Path) -> list[str]:
    """A line per logger of the run (the ``logger`` group's entries) that says where to look at the run;
    none for a logger of another class."""
    return [
        view(spec, run_dir)
        for spec in loggers.values()
        if (view := VIEWS.get(_class_name(str(spec.get("_target_", "")))))
    ]
