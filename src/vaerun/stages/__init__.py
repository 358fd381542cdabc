"""The stages of a run: train, eval (test metrics), sample (pictures), impute and anomaly, alone or
chained by stage=all; one module each, with what they share in ``context`` and the run's assembly from
its config in ``assembly``.

``run(cfg, run_dir, choices, overridden)`` is what the CLI calls once the config has passed its checks;
``setup`` and ``module_hparams`` are what scripts use to build a run or a model the way vae-run does.
"""

from vaerun.stages.assembly import module_hparams, setup
from vaerun.stages.checkpoints import load_module
from vaerun.stages.context import Run
from vaerun.stages.pipeline import STAGE_STEPS, run

__all__ = ["STAGE_STEPS", "Run", "load_module", "module_hparams", "run", "setup"]
