"""What Hydra saved of a run in its ``.hydra`` folder, read back: the composed config (config.yaml, with
what the run recorded of its data), the overrides typed on the command line (overrides.yaml) and the
options Hydra chose for each group (hydra.yaml). The summaries, ``ckpt=``'s hints and ``vaerun.load``
read a run through these. No torch.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

FOLDER = ".hydra"


def config_path(run_dir: Path) -> Path:
    return run_dir / FOLDER / "config.yaml"


def saved_config(run_dir: Path) -> DictConfig | None:
    """The run's composed config, None where it has none (a run made elsewhere, a bare checkpoint)."""
    saved = config_path(run_dir)
    return OmegaConf.load(saved) if saved.is_file() else None  # type: ignore[return-value]


def typed_overrides(run_dir: Path) -> list[str]:
    """The overrides of the run's command line as typed (``+key=value`` keeps its ``+``), [] where none."""
    saved = run_dir / FOLDER / "overrides.yaml"
    return [str(item) for item in OmegaConf.load(saved)] if saved.is_file() else []


def chosen_option(run_dir: Path, group: str) -> str | None:
    """The option Hydra composed for a config group (``model`` -> ``vae``), None where not recorded."""
    saved = run_dir / FOLDER / "hydra.yaml"
    if not saved.is_file():
        return None
    choice = OmegaConf.select(OmegaConf.load(saved), f"hydra.runtime.choices.{group}")
    return str(choice) if choice else None
