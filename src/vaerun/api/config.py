"""The config a ``vae-run`` command would run, composed from Python (Hydra and OmegaConf; no torch)."""

from __future__ import annotations

from collections.abc import Iterable


def compose(overrides: Iterable[str] = ()) -> dict:
    """The config that ``vae-run OVERRIDES`` would run, interpolations resolved, as a plain dict (without
    Hydra's own ``hydra`` node): ``vaerun.compose(["model=ae", "latent=8"])["latent"] == 8``. Unchecked: a
    value ``vae-run`` would refuse composes as given; an unknown group option raises Hydra's error."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module("vaerun.configs", version_base="1.3"):
        config = hydra_compose("config", overrides=list(overrides))
    return OmegaConf.to_container(config, resolve=True)
