"""``vae-run``: the console entry point, a thin Hydra main.

Only Hydra and the pure-Python checks are imported up front, so ``--help``, ``--cfg job`` and every config
error answer without loading torch or Lightning. The heavy work is imported once the config has passed.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from vaerun.validation import ConfigError, check_config

log = logging.getLogger("vaerun")

#: the config groups whose chosen option is recorded with the run (model=vae, encoder=mlp, ...)
RECORDED_GROUPS = ("model", "encoder", "likelihood", "corruption", "data", "device", "optimizer")


def _discard_run_dir(run_dir: Path) -> None:
    """Remove what Hydra wrote for a run that never started, so nothing looks like a run."""
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    for log_file in run_dir.glob("*.log"):
        log_file.unlink(missing_ok=True)
    for directory in (run_dir, run_dir.parent):
        try:
            directory.rmdir()  # only when empty: never removes anything else
        except OSError:
            break


def _fail(message: str, run_dir: Path) -> None:
    _discard_run_dir(run_dir)
    print(f"vae-run: error: {message}", file=sys.stderr)
    raise SystemExit(2)


@hydra.main(version_base="1.3", config_path="pkg://vaerun.configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
        check_config(config)
    except ConfigError as err:
        _fail(str(err), run_dir)
    except Exception as err:  # an interpolation that does not resolve, a missing key
        _fail(f"invalid config: {err}", run_dir)
    choices = {group: hydra_cfg.runtime.choices.get(group) for group in RECORDED_GROUPS}
    overridden = {override.split("=")[0].lstrip("+~").split(".")[0] for override in hydra_cfg.overrides.task}

    import warnings

    # Lightning 2.6 on torch >= 2.10 calls a deprecated pytree constructor inside fit; not the user's concern.
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    from vaerun.stages import run

    try:
        metrics = run(config, run_dir, choices, overridden)
    except ConfigError as err:
        _fail(str(err), run_dir)
    log.info("Run directory: %s", run_dir)
    # The venv's tensorboard by its full path when the venv is not on PATH (as after `make run`).
    tensorboard = (
        "tensorboard" if shutil.which("tensorboard") else str(Path(sys.executable).with_name("tensorboard"))
    )
    print(f"\nRun directory: {run_dir}\nLook at it with: {tensorboard} --logdir {run_dir}")
    return metrics.get("test/loss", metrics.get("val/loss"))


if __name__ == "__main__":
    main()
