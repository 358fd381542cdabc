"""Summaries of sweeps: one row per finished run (its overrides and final metrics) as summary.csv, a readable
summary.md and summary.png (each metric against the swept value, one line per model, with the PCA line).

Used by the Hydra callback at the end of every multirun, and by ``vae-run-summary DIR...``
(vaerun.cli.summary) on any set of run directories. Pure Python plus matplotlib: no torch.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vaerun.core.atomic import atomic_path, write_text_atomically
from vaerun.core.errors import exit_with_error
from vaerun.evaluation.repeats import REPEAT_KEYS, by_config, mean_and_spread
from vaerun.evaluation.run_records import RunRecord, load_runs

log = logging.getLogger(__name__)

#: metrics shown in summary.md and summary.png, in this order, where the runs have them
HEADLINE_METRICS = (
    "test/loss",
    "test/nll_iwae",
    "test/nll_ais",
    "test/reconstruction/mse",
    "test/reconstruction/psnr",
    "test/reconstruction/ssim",
    "test/corrupted_input/psnr",
    "test/pca_fill/psnr",
    "test/observed_kept/psnr",
    "test/active_units",
    "impute/mcar_0.5/model/mse",
    "anomaly/reconstruction_error/auroc",
    "anomaly/negative_elbo/auroc",
    "anomaly/latent_mahalanobis/auroc",
    "anomaly/nll_iwae_minus_png_bits/auroc",
    "anomaly/likelihood_ratio/auroc",
    "anomaly/nearest_neighbours/auroc",
)
#: shown in their place where the runs have none of them (a sweep of stage=train): the best validation loss
TRAINING_METRIC = "val/loss"
#: plotted as a dashed line beside the models' metric named on the left
BASELINES = {
    "test/reconstruction/mse": "test/pca_mse",
    "test/reconstruction/psnr": "test/pca_psnr",
    "impute/mcar_0.5/model/mse": "impute/mcar_0.5/pca/mse",
    "anomaly/reconstruction_error/auroc": "anomaly/pca_reconstruction_error/auroc",
}


def _marks(records: Sequence[RunRecord]) -> list[str]:
    """The columns that say how each run ended, where any run needs them: a search's trial, its state and
    value; the state of runs that failed, and why."""
    searched = any(r.trial is not None for r in records)
    failed = any(r.error for r in records)
    return [
        *(["trial"] if searched else []),
        *(["state"] if searched or failed else []),
        *(["value"] if searched else []),
    ]


def _mark(record: RunRecord, column: str) -> str:
    value = getattr(record, column)
    if column == "value":
        return _format(value)
    return "" if value is None else str(value)


def swept_keys(records: Sequence[RunRecord]) -> list[str]:
    """The override keys whose value differs between runs."""
    keys = sorted({key for record in records for key in record.overrides})
    return [key for key in keys if len({record.overrides.get(key) for record in records}) > 1]


def _as_number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _format(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def _write_table(records: Sequence[RunRecord], handle: Any, base: Path) -> None:
    """run, model, every other override key, every metric: one row per run."""
    override_keys = sorted({key for record in records for key in record.overrides} - {"model"})
    metric_keys = sorted({key for record in records for key in record.metrics})
    marks = _marks(records)
    errors = ["error"] if any(r.error for r in records) else []
    writer = csv.writer(handle)
    writer.writerow(["run", *marks, "model", *override_keys, *metric_keys, *errors])
    for record in sorted(records, key=lambda r: (r.trial is None, r.trial or 0, str(r.path))):
        writer.writerow(
            [
                _relative(record.path, base),
                *(_mark(record, column) for column in marks),
                record.model,
                *(record.overrides.get(key, "") for key in override_keys),
                *(record.metrics.get(key, "") for key in metric_keys),
                *([record.error] if errors else []),
            ]
        )


def write_csv(records: Sequence[RunRecord], path: Path, base: Path) -> None:
    with atomic_path(path) as partial, open(partial, "w", newline="") as handle:
        _write_table(records, handle, base)


def runs(*paths: str | Path) -> Any:
    """The runs under ``paths`` (a sweep folder, run directories; searched recursively), one row each, as
    a pandas DataFrame: the table of a sweep's summary.csv (run, relative to the first path; model; the
    overrides; the metrics), as pandas reads that file."""
    import pandas as pd

    if not paths:
        raise TypeError("runs: give a sweep folder or run directories")
    folders = [Path(path).expanduser() for path in paths]
    missing = [str(folder) for folder in folders if not folder.exists()]
    if missing:
        raise FileNotFoundError(f"runs: no such directory: {', '.join(missing)}")
    records = load_runs(folders)
    if not records:
        raise FileNotFoundError(f"runs: no runs (no metrics.json) under {', '.join(map(str, folders))}")
    table = io.StringIO()
    _write_table(records, table, folders[0].resolve())
    table.seek(0)
    return pd.read_csv(table)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def headline_metrics(records: Sequence[RunRecord]) -> list[str]:
    """The headline metrics the runs have, in HEADLINE_METRICS' order; else TRAINING_METRIC if they have it
    and are no search's trials (whose table shows the value the search optimises)."""
    keys = [key for key in HEADLINE_METRICS if any(key in r.metrics for r in records)]
    trials = any(r.trial is not None for r in records)
    if not keys and not trials and any(TRAINING_METRIC in r.metrics for r in records):
        keys = [TRAINING_METRIC]
    return keys


def write_markdown(records: Sequence[RunRecord], path: Path, base: Path) -> None:
    """A table with one row per run: the model, the swept values and the headline metrics; the overrides
    common to every run are listed once above it, and each run's directory below it."""
    swept = [key for key in swept_keys(records) if key != "model"]
    common = [
        f"{key}={value}"
        for key, value in sorted(records[0].overrides.items() if records else ())
        if key not in swept and all(r.overrides.get(key) == value for r in records)
    ]
    baselines = [key for key in BASELINES.values() if any(key in r.metrics for r in records)]
    metric_keys = list(dict.fromkeys((*headline_metrics(records), *baselines)))
    marks = _marks(records)
    header = ["#", *marks, "model", *swept, *metric_keys]
    failed = sum(r.state in ("failed", "FAIL") for r in records)
    lines = [
        f"# Sweep summary: {len(records)} runs" + (f", {failed} failed" if failed else ""),
        "",
        f"Common to all runs: {' '.join(common) if common else '(defaults)'}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    ordered = sorted(
        records,
        key=lambda r: (
            r.trial is None,
            r.trial or 0,
            r.model,
            *(_sort_key(r.overrides.get(k)) for k in swept),
        ),
    )
    for number, record in enumerate(ordered):
        cells = [str(number), *(_mark(record, column) for column in marks), record.model]
        cells += [record.overrides.get(key, "") for key in swept]
        cells += [_format(record.metrics.get(key)) for key in metric_keys]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _over_seeds(records, metric_keys)
    lines += ["", "Run directories:", ""]
    lines += [
        f"{number}. {_relative(record.path, base)}"
        + (f" ({record.state}: {record.error})" if record.error else "")
        for number, record in enumerate(ordered)
    ]
    write_text_atomically(path, "\n".join(lines) + "\n")


def _over_seeds(records: Sequence[RunRecord], metric_keys: list[str]) -> list[str]:
    """Where runs repeat configs with other seeds: a table of each config's mean and standard deviation
    over its seeds (none where every config ran once, or for a search's trials)."""
    repeats, swept = _repeats_swept(records), _configs_swept(records)
    groups = _configs_in_order([r for r in records if r.state == "finished"], swept)
    if not repeats or any(r.trial is not None for r in records) or all(len(g) < 2 for _, g in groups):
        return []
    header = ["model", *swept, "runs", *metric_keys]
    lines = [
        "",
        f"Over {', '.join(repeats)}: mean ± standard deviation",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for (model, *values), members in groups:
        cells = [model, *values, str(len(members))]
        for key in metric_keys:
            measured = [r.metrics[key] for r in members if key in r.metrics]
            mean, spread = mean_and_spread(measured) if measured else (math.nan, math.nan)
            cells.append(_format(mean) + (f" ± {spread:.2g}" if not math.isnan(spread) else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _sort_key(value: str | None) -> tuple[float, str]:
    number = _as_number(value)
    return (number if number is not None else math.inf, value or "")


def _configs_swept(records: Sequence[RunRecord]) -> list[str]:
    """The swept keys that change a run's config: all but the model and the seeds (REPEAT_KEYS)."""
    return [key for key in swept_keys(records) if key != "model" and key not in REPEAT_KEYS]


def _repeats_swept(records: Sequence[RunRecord]) -> list[str]:
    """The swept keys that repeat a config (REPEAT_KEYS: the seed)."""
    return [key for key in swept_keys(records) if key in REPEAT_KEYS]


def _configs_in_order(
    records: Sequence[RunRecord], keys: Sequence[str]
) -> list[tuple[tuple[str, ...], list[RunRecord]]]:
    """The runs grouped by model and values of ``keys`` (``by_config``), numbers in their numeric order."""
    return sorted(by_config(records, keys).items(), key=lambda item: [_sort_key(v) for v in item[0]])


def plotted_lines(
    records: Sequence[RunRecord], key: str, x_key: str, line_keys: Sequence[str]
) -> list[tuple[str, list[float], list[float], list[float]]]:
    """The lines of metric ``key`` against ``x_key``: one per model and values of ``line_keys``, as (label,
    x values, means, standard deviations), the runs at one x that differ in their seed alone averaged."""
    lines = []
    for (model, *values), members in _configs_in_order(records, line_keys):
        by_x: dict[float, list[float]] = {}
        for record in members:
            if key in record.metrics:
                by_x.setdefault(_as_number(record.overrides[x_key]), []).append(record.metrics[key])
        if by_x:
            xs = sorted(by_x)
            means, spreads = zip(*(mean_and_spread(by_x[x]) for x in xs), strict=True)
            label = ", ".join([model, *(f"{k}={v}" for k, v in zip(line_keys, values, strict=True))])
            lines.append((label, xs, list(means), list(spreads)))
    return lines


def write_plot(records: Sequence[RunRecord], path: Path) -> bool:
    """Each headline metric against the first numeric swept value, one line per model and value of the
    other swept keys; runs that differ only in their seed are one point, their mean, with their standard
    deviation as an error bar. False if no such value (nothing to plot against) or no metric to plot."""
    from matplotlib.figure import Figure

    def numeric(keys: list[str]) -> list[str]:
        return [key for key in keys if all(_as_number(r.overrides.get(key)) is not None for r in records)]

    x_keys = numeric(_configs_swept(records)) or numeric(_repeats_swept(records))  # seeds alone: the seed
    metric_keys = headline_metrics(records)
    if not x_keys or not metric_keys:
        return False
    x_key = x_keys[0]
    line_keys = [key for key in _configs_swept(records) if key != x_key]
    columns = min(3, len(metric_keys))
    rows = math.ceil(len(metric_keys) / columns)
    figure = Figure(figsize=(4.5 * columns, 3.8 * rows), dpi=100)
    panels = {key: plotted_lines(records, key, x_key, line_keys) for key in metric_keys}
    labels = dict.fromkeys(label for lines in panels.values() for label, *_ in lines)
    colours = {label: f"C{number % 10}" for number, label in enumerate(labels)}  # a model's, in every panel
    for index, (key, lines) in enumerate(panels.items()):
        axes = figure.add_subplot(rows, columns, index + 1)
        for label, xs, means, spreads in lines:
            spread = [0.0 if math.isnan(sd) else sd for sd in spreads]
            yerr = spread if any(spread) else None
            axes.errorbar(xs, means, yerr=yerr, marker="o", capsize=3, label=label, color=colours[label])
        baseline = BASELINES.get(key)
        if baseline:
            by_x = {
                _as_number(r.overrides[x_key]): r.metrics[baseline] for r in records if baseline in r.metrics
            }
            if by_x:
                axes.plot(*zip(*sorted(by_x.items()), strict=True), "k--", marker="s", label="PCA")
        if x_key == "latent":
            axes.set_xscale("log", base=2)
        _finish_panel(axes, xlabel=x_key, title=key)
    return _save_figure(figure, path)


def _finish_panel(axes: Any, **labels: str) -> None:
    axes.set(**labels)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")


def _save_figure(figure: Any, path: Path) -> bool:
    figure.tight_layout()
    with atomic_path(path) as partial:
        figure.savefig(partial)
    return True


def write_search_plot(records: Sequence[RunRecord], path: Path) -> bool:
    """A search's value against each searched parameter, a panel each: completed trials as dots, pruned ones
    (at the value they were told) as grey crosses; False where no trial has a value."""
    from matplotlib.figure import Figure

    told = [r for r in records if r.trial is not None and r.value is not None]
    keys = [key for key in swept_keys(told) if key != "model"]
    if not told or not keys:
        return False
    columns = min(3, len(keys))
    figure = Figure(figsize=(4.5 * columns, 3.8 * math.ceil(len(keys) / columns)), dpi=100)
    for index, key in enumerate(keys):
        axes = figure.add_subplot(math.ceil(len(keys) / columns), columns, index + 1)
        values = [r.overrides.get(key, "") for r in told]
        numbers = [_as_number(value) for value in values]
        if all(number is not None for number in numbers):
            positions = numbers
            if min(numbers) > 0 and max(numbers) / min(numbers) > 20:
                axes.set_xscale("log")
        else:  # categories at 0, 1, ... in the order of their sort keys
            levels = sorted(set(values), key=_sort_key)
            positions = [levels.index(value) for value in values]
            axes.set_xticks(range(len(levels)), levels, rotation=20, fontsize="small")
        for state, marker, colour in (("COMPLETE", "o", None), ("PRUNED", "x", "grey")):
            points = [(x, r.value) for x, r in zip(positions, told, strict=True) if r.state == state]
            if points:
                axes.plot(*zip(*points, strict=True), marker, color=colour, label=state.lower())
        _finish_panel(axes, xlabel=key, ylabel="value", title=f"value by {key}")
    return _save_figure(figure, path)


def summarize(paths: Iterable[Path], out_dir: Path) -> list[RunRecord]:
    """Write summary.csv, summary.md and summary.png of the runs found under ``paths`` into ``out_dir``."""
    return write_summary(load_runs(paths), out_dir)


def write_summary(records: list[RunRecord], out_dir: Path) -> list[RunRecord]:
    """Write summary.csv, summary.md and summary.png of ``records`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir.resolve()
    write_csv(records, out_dir / "summary.csv", base)
    write_markdown(records, out_dir / "summary.md", base)
    searched = any(record.trial is not None for record in records)
    plot = write_search_plot if searched else write_plot
    plotted = plot(records, out_dir / "summary.png") if records else False
    if not plotted:  # no plot of these runs: an older one must not pass for theirs
        (out_dir / "summary.png").unlink(missing_ok=True)
    log.info(
        "Sweep summary of %d runs: %s%s",
        len(records),
        out_dir / "summary.md",
        "" if plotted else " (no plot)",
    )
    return records


def written_beside(out_dir: Path) -> str:
    """The summary files beside summary.md: the csv always, the plot where there was one to draw."""
    return ", ".join(name for name in ("summary.csv", "summary.png") if (out_dir / name).is_file())


class SweepSummary(Callback):
    """Hydra callback: when a multirun ends, summarise its runs in the sweep directory."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        records = summarize([sweep_dir], sweep_dir)
        print(f"Sweep summary: {sweep_dir / 'summary.md'} (and {written_beside(sweep_dir)})")
        failed = [r for r in records if r.state == "failed"]
        if failed and not any(r.trial is not None for r in records):  # a search tolerates its failed trials
            first = failed[0]
            exit_with_error(
                f"{len(failed)} of {len(records)} runs failed, the others finished (summary: "
                f"{sweep_dir / 'summary.md'}); {_relative(first.path, sweep_dir.resolve())}: {first.error}",
                status=3,
            )
