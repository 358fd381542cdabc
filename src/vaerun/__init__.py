"""vaerun: a command-line experiment runner for autoencoders (AE, DAE, VAE), and its results from Python:

    import vaerun
    model = vaerun.load("outputs/DATE/TIME")          # a trained model: encode, decode, sample, elbo, ...
    table = vaerun.runs("outputs/multirun/DATE/TIME")  # a sweep's runs as a pandas DataFrame
    config = vaerun.compose(["model=ae"])               # the config a command would run, as a dict

All are imported on first use, so ``import vaerun`` (and ``vae-run --help``) loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Encoding", "TrainedModel", "compose", "load", "runs"]

if TYPE_CHECKING:
    from vaerun.api.config import compose
    from vaerun.api.trained import Encoding, TrainedModel, load
    from vaerun.evaluation.summaries import runs


def __getattr__(name: str) -> Any:
    if name in ("load", "TrainedModel", "Encoding"):
        from vaerun.api import trained

        return getattr(trained, name)
    if name == "compose":
        from vaerun.api.config import compose

        return compose
    if name == "runs":
        from vaerun.evaluation.summaries import runs

        return runs
    raise AttributeError(f"module 'vaerun' has no attribute {name!r}")
