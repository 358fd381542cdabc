"""The package each optional experiment tracker needs, so that asking for one that is not installed is one
line naming the extra to install; looked up without importing anything."""

from __future__ import annotations

import importlib.util

#: logger class -> (module it imports, vaerun's extra that installs it)
PACKAGES = {
    "MLFlowLogger": ("mlflow", "mlflow"),
    "WandbLogger": ("wandb", "wandb"),
}


def missing_package(target: str) -> str | None:
    """For a logger's ``_target_`` whose package is not installed: the one line that says which extra to
    install; None when it is there (or the logger needs none). Looks, does not import."""
    name = target.rsplit(".", 1)[-1]
    if name not in PACKAGES:
        return None
    module, extra = PACKAGES[name]
    if importlib.util.find_spec(module) is not None:
        return None
    return f"needs the {module} package, which is not installed: pip install 'vaerun[{extra}]'"
