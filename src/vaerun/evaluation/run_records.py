"""A finished, failed or searched run as a summary reads it back from its directory: its overrides, model,
final metrics (metrics.json), failure and trial records. Pure Python: no torch."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaerun.core.run_files import chosen_option, typed_overrides
from vaerun.search.outcome import FAILURE_FILE, TRIAL_FILE


@dataclass
class RunRecord:
    path: Path
    overrides: dict[str, str]
    model: str
    metrics: dict[str, float] = field(default_factory=dict)
    #: "finished" or "failed"; a search's trial: its Optuna state (COMPLETE, PRUNED, FAIL)
    state: str = "finished"
    error: str = ""
    #: a search's trial: its number and the value the study was told
    trial: int | None = None
    value: float | None = None


#: the files that make a directory a run of a summary: its metrics, its failure, its trial
RUN_FILES = ("metrics.json", FAILURE_FILE, TRIAL_FILE)


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Every directory under the given paths (or the paths themselves) holding a metrics.json, or the record
    of a failure or of a search's trial."""
    found: set[Path] = set()
    for path in paths:
        path = Path(path)
        for name in RUN_FILES:
            if (path / name).is_file():
                found.add(path.resolve())
            found.update(p.parent.resolve() for p in path.rglob(name))
    return sorted(found)


def load_runs(paths: Iterable[Path]) -> list[RunRecord]:
    """The records of every run ``find_runs`` finds under ``paths``."""
    return [load_run(run_dir) for run_dir in find_runs(paths)]


def _keyed(overrides: Iterable[Any]) -> dict[str, str]:
    """KEY=VALUE overrides by key, without their + or ~ (a ~key without a value deletes: no column)."""
    pairs = [str(item).split("=", 1) for item in overrides if "=" in str(item)]
    return {key.lstrip("+~"): value for key, value in pairs}


def _overrides(run_dir: Path) -> dict[str, str]:
    return _keyed(item for item in typed_overrides(run_dir) if not item.startswith("hydra"))


def _model(run_dir: Path, overrides: dict[str, str]) -> str:
    return chosen_option(run_dir, "model") or overrides.get("model", "?")


class UnreadableRecord(ValueError):
    """A run's record file that is not the JSON object vaerun writes: its run is marked failed."""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnreadableRecord(f"{path.name} is unreadable ({err})") from None
    if not isinstance(record, dict):
        raise UnreadableRecord(f"{path.name} is unreadable (not a JSON object)")
    return record


def load_run(run_dir: Path) -> RunRecord:
    try:
        return _load_run(run_dir)
    except UnreadableRecord as err:  # edited by hand, say: the other runs are still summarised
        overrides = _overrides(run_dir)
        return RunRecord(run_dir, overrides, _model(run_dir, overrides), state="failed", error=str(err))


def _load_run(run_dir: Path) -> RunRecord:
    metrics = _read_json(run_dir / "metrics.json")
    numeric = {
        k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    overrides = _overrides(run_dir)
    record = RunRecord(run_dir, overrides, _model(run_dir, overrides), numeric)
    failure = _read_json(run_dir / FAILURE_FILE)
    if failure:
        record.state, record.error = "failed", str(failure.get("error", ""))
    trial = _read_json(run_dir / TRIAL_FILE)
    if trial:
        if not record.overrides:  # a trial that never ran: its overrides are in its record
            record.overrides = _keyed(trial.get("overrides", []))
        record.trial, record.value = trial["trial"], trial.get("value")
        record.state, record.error = trial["state"], str(trial.get("reason", ""))
    return record
