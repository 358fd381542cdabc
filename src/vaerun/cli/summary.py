"""``vae-run-summary DIR...``: the summary of any set of run directories (vaerun.evaluation.summaries)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from vaerun.cli.help import version_text
from vaerun.evaluation.run_records import load_runs
from vaerun.evaluation.summaries import write_summary, written_beside


class _PrintVersion(argparse.Action):
    """--version: the line as vae-run prints it (argparse's own action would wrap it)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_text("vae-run-summary"))
        parser.exit()


class _OneLineParser(argparse.ArgumentParser):
    """Bad input as one line, as vae-run answers it (argparse's own adds its usage text above it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: Sequence[str] | None = None) -> None:
    """``vae-run-summary``: rebuild the summary of any set of run directories."""
    parser = _OneLineParser(
        prog="vae-run-summary",
        description="Summarise vae-run runs (every directory holding a metrics.json under the given paths): "
        "summary.csv, summary.md and summary.png.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run or sweep directories, searched recursively")
    parser.add_argument("-o", "--out", type=Path, help="where to write the summary (default: the first path)")
    parser.add_argument("--version", action=_PrintVersion)
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        parser.error(f"no such directory: {', '.join(missing)}")
    if files := [str(p) for p in args.paths if not p.is_dir()]:  # a run's metrics.json, say
        parser.error(f"{', '.join(files)} is a file; give run or sweep directories")
    out_dir = args.out or args.paths[0]
    if out_dir.exists() and not out_dir.is_dir():
        parser.error(f"--out {out_dir} is a file; give a directory")
    records = load_runs(args.paths)
    if not records:  # said before anything is written
        print(
            f"vae-run-summary: error: no runs (no metrics.json) under {', '.join(map(str, args.paths))}",
            file=sys.stderr,
        )
        raise SystemExit(1)
    write_summary(records, out_dir)
    runs = "1 run" if len(records) == 1 else f"{len(records)} runs"
    print(f"{runs}: {out_dir / 'summary.md'} (and {written_beside(out_dir)})")
