"""The config a ``vae-run`` command would run, composed from Python (Hydra and OmegaConf; no torch)."""

from __future__ import annotations

from collections.abc import Iterable


def compose(overrides: Iterable[str] = (), check: bool = True) -> dict:
    """The config that ``vae-run OVERRIDES`` would run, interpolations resolved, as a plain dict (without
    Hydra's own ``hydra`` node): ``vaerun.compose(["model=ae", "latent=8"])["latent"] == 8``. ``check``:
    a value the command would refuse raises ``vaerun.core.errors.ConfigError`` (a ValueError) with the
    command's one-line message; an unknown group option raises Hydra's error."""
    if isinstance(overrides, str):  # iterated, it would be one override per character
        raise TypeError(f"overrides: a list of overrides such as [{overrides!r}], not one string")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    from vaerun.core.checks import check_config

    with initialize_config_module("vaerun.configs", version_base="1.3"):
        config = OmegaConf.to_container(hydra_compose("config", overrides=list(overrides)), resolve=True)
    if check:
        check_config(config)
    return config
