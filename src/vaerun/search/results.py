"""What a search leaves in its sweep folder when it ends: best.yaml (the best trial's overrides, to run it
again), the optimisation history and the parameters' importances as PNG files and in TensorBoard
(``SWEEP/tensorboard``). The per-run table is the sweep's summary (vaerun.evaluation.summaries), whose rows
gain each trial's number, state and value from its run directory's trial.json."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vaerun.core.atomic import atomic_path, write_text_atomically

log = logging.getLogger(__name__)


def write_results(study: Any, sweep_dir: Path, metric: str) -> dict[str, Any] | None:
    """best.yaml, history.png, importances.png (when there are two completed trials to weigh) and their
    TensorBoard events; returns the best trial's record, or None when no trial completed."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    figures = {"history": history_figure(trials, metric, study.direction.name.lower())}
    importances = parameter_importances(study) if len(completed) >= 2 else {}
    if importances:
        figures["importances"] = importance_figure(importances)
    for name, figure in figures.items():
        with atomic_path(sweep_dir / f"{name}.png") as partial:
            figure.savefig(partial)
    write_tensorboard(sweep_dir / "tensorboard", trials, figures)
    if not completed:
        return None
    best = study.best_trial
    record = {
        "trial": best.number,
        "value": best.value,
        "metric": metric,
        "direction": study.direction.name.lower(),
        "run_dir": best.user_attrs.get("run_dir"),
        "params": dict(best.params),
        "overrides": list(best.user_attrs.get("overrides", [])),
        "importances": importances,
    }
    command = "vae-run " + " ".join(
        f"'{o}'" if any(c in o for c in " ()[]{},") else o for o in record["overrides"]
    )
    header = (
        f"# The best of {len(completed)} completed trials ({len(trials)} in all) of study "
        f"{study.study_name!r}: {metric} = {best.value:.6g}\n# Run it again on its own with:\n#   {command}\n"
    )
    write_text_atomically(sweep_dir / "best.yaml", header + OmegaConf.to_yaml(OmegaConf.create(record)))
    states = {
        state.name: sum(t.state == state for t in trials) for state in TrialState if state.is_finished()
    }
    counts = ", ".join(f"{n} {name}" for name, n in states.items() if n)
    print(
        f"Best of {len(trials)} trials ({counts}): trial {best.number}, {metric} = {best.value:.6g}: "
        f"{sweep_dir / 'best.yaml'}"
    )
    return record


def parameter_importances(study: Any) -> dict[str, float]:
    """Optuna's fANOVA importances of the parameters that varied; empty where they cannot be computed."""
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study)
    except Exception as err:  # a single distinct value, too few trials
        log.info("No parameter importances: %s", err)
        return {}
    return {name: float(value) for name, value in found.items() if math.isfinite(value)}


def history_figure(trials: list[Any], metric: str, direction: str) -> Any:
    """Each finished trial's value by trial number (pruned ones at their last reported value), and the best
    so far."""
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    figure = Figure(figsize=(6.5, 4), dpi=100)
    axes = figure.add_subplot()
    complete = [(t.number, t.value) for t in trials if t.state == TrialState.COMPLETE]
    pruned = [
        (t.number, t.intermediate_values[max(t.intermediate_values)])
        for t in trials
        if t.state == TrialState.PRUNED and t.intermediate_values
    ]
    if complete:
        axes.plot(*zip(*complete, strict=True), "o", label="completed")
        pick = min if direction == "minimize" else max
        best, best_so_far = None, []
        for number, value in complete:
            best = value if best is None else pick(best, value)
            best_so_far.append((number, best))
        axes.step(*zip(*best_so_far, strict=True), where="post", label="best so far")
    if pruned:
        axes.plot(*zip(*pruned, strict=True), "x", color="grey", label="pruned (last epoch reported)")
    failed = [t.number for t in trials if t.state == TrialState.FAIL]
    title = f"{metric} by trial" + (f" ({len(failed)} failed)" if failed else "")
    axes.set(xlabel="trial", ylabel=metric, title=title)
    axes.grid(alpha=0.3)
    if complete or pruned:
        axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


def importance_figure(importances: dict[str, float]) -> Any:
    from matplotlib.figure import Figure

    names = list(importances)[::-1]
    figure = Figure(figsize=(6.5, 1.2 + 0.45 * len(names)), dpi=100)
    axes = figure.add_subplot()
    axes.barh(names, [importances[name] for name in names])
    axes.set(xlabel="importance (fANOVA)", title="What the value depends on")
    figure.tight_layout()
    return figure


def write_tensorboard(folder: Path, trials: list[Any], figures: dict[str, Any]) -> None:
    """search/value and search/best_value by trial number, and the figures, for ``tensorboard --logdir``."""
    from optuna.trial import TrialState
    from torch.utils.tensorboard import SummaryWriter

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("events.out.tfevents.*"):  # this search's state now, not every earlier ending's
        old.unlink()
    writer = SummaryWriter(str(folder))
    try:
        for trial in sorted(trials, key=lambda t: t.number):
            if trial.state == TrialState.COMPLETE:
                writer.add_scalar("search/value", trial.value, trial.number)
        for name, figure in figures.items():
            writer.add_figure(f"search/{name}", figure, close=False)
    finally:
        writer.close()
