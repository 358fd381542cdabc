"""What a trial's job left in its run directory, as the trial's end: COMPLETE with the metric's value,
PRUNED (its pruning callback stopped it), or FAIL with the reason. Read from files, not from the launcher's
return values, so that the same rules hold for every launcher, and for a job whose launcher lost track of
it (a Slurm job that crashed, a sweep process that was killed)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

#: written by a run of a multirun that failed: {"error": one line, "exit_status": int}
FAILURE_FILE = "failure.json"
#: written by a search into each trial's run directory: {"trial", "state", "value", "reason"}
TRIAL_FILE = "trial.json"
#: in metrics.json: the epoch at which the pruner stopped the run (absent when it ran to its end)
PRUNED_KEY = "search/pruned_epoch"


@dataclass(frozen=True)
class Outcome:
    state: str  # "COMPLETE", "PRUNED" or "FAIL" (optuna.trial.TrialState's names)
    value: float | None = None
    reason: str = ""


def read_outcome(run_dir: Path, metric: str, launcher_error: str = "") -> Outcome:
    """The end of the trial whose job ran in ``run_dir``; ``launcher_error``: what the launcher said of
    the job, if it raised."""
    failure = run_dir / FAILURE_FILE
    if failure.is_file():
        return Outcome("FAIL", reason=json.loads(failure.read_text()).get("error", "the run failed"))
    metrics_file, state_file = run_dir / "metrics.json", run_dir / "job.json"
    finished = state_file.is_file() and json.loads(state_file.read_text()).get("status") == "finished"
    if not finished or not metrics_file.is_file():
        return Outcome(
            "FAIL", reason=launcher_error or f"the job ended without finishing its run ({run_dir})"
        )
    metrics = json.loads(metrics_file.read_text())
    value = metrics.get(metric)
    if PRUNED_KEY in metrics:
        pruned_value = value if isinstance(value, int | float) else None
        return Outcome("PRUNED", value=pruned_value, reason=f"pruned after epoch {metrics[PRUNED_KEY]}")
    if not isinstance(value, int | float) or isinstance(value, bool):
        known = ", ".join(sorted(k for k in metrics if not k.startswith("time/")))
        return Outcome(
            "FAIL", reason=f"hydra.sweeper.metric: {metric} is not in metrics.json (it has: {known})"
        )
    if not math.isfinite(value):
        return Outcome("FAIL", reason=f"{metric} is {value}")
    return Outcome("COMPLETE", value=float(value))
