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


#: what a run adds to its saved data config once the data is read (vaerun.stages.assembly): the source it
#: fell back to, an image folder's class names; no data option takes them as arguments
RECORDED_DATA_KEYS = ("source_used", "classes")


def data_config(run_dir: Path) -> dict | None:
    """The data config a run ran with, resolved where it was saved (its seed, its folder's absolute path),
    without what it recorded after reading the data; None where the run saved no config."""
    saved = saved_config(run_dir)
    if saved is None or "data" not in saved:
        return None
    data = OmegaConf.to_container(saved.data, resolve=True)
    return {key: value for key, value in data.items() if key not in RECORDED_DATA_KEYS}  # type: ignore[union-attr]


def replace_data(run_dir: Path, data: dict) -> None:
    """The saved config's data replaced by the data the run reads where that is not the composed one
    (``ckpt=RUN``'s data), so that the run's config says what it read."""
    config = saved_config(run_dir)
    if config is not None:
        config.data = data
        OmegaConf.save(config, config_path(run_dir))
