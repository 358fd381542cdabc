"""A multirun refused before its first run leaves the sweep's folder as it found it.

The folder is made early (``WritableOutputDir`` tries it, ``RunDirLock`` locks it, Hydra's sweeper writes
``multirun.yaml`` into it), but some refusals come after: Hydra composes every job's config only in its
sweeper (``-m latnt=2,4``, ``-m model=ae,vea``), and vaerun's Optuna sweeper checks its space there. Where
such a refusal ends the command and the folder holds nothing new but those files, they go again, and so do
the folders this process made for the sweep (``outputs/multirun/DATE/TIME`` and those above it that were
not there). A ``multirun.yaml`` that was there before (an earlier sweep's) has been rewritten by Hydra and
stays.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Hydra's record of a multirun's config, written into its folder before the jobs are composed
HYDRA_RECORD = "multirun.yaml"


@dataclass
class _SweepFolder:
    path: Path
    names_before: set[str]  # what it held before the command (nothing: it was not there)
    made: list[Path]  # the folders this process made for it: the sweep's own first, then its new parents


#: the folder of this process's sweep, noted before it was made
_noted: _SweepFolder | None = None


def note_sweep_folder(sweep_dir: Path) -> None:
    """Before the sweep's folder is made: remember what it and its parents hold now."""
    global _noted
    sweep_dir = sweep_dir.resolve()
    names = {p.name for p in sweep_dir.iterdir()} if sweep_dir.is_dir() else set()
    made = []
    for path in (sweep_dir, *sweep_dir.parents):
        if path.exists():
            break
        made.append(path)
    _noted = _SweepFolder(sweep_dir, names, made)


def discard_unstarted_sweep() -> None:
    """Undo what the refused sweep wrote into its folder, and the folders made for it, if that was no more
    than its lock and HYDRA_RECORD."""
    from vaerun.cli import run_lock  # here: run_lock reads run_state, which notes the folder here

    if _noted is None or not _noted.path.is_dir():
        return
    folder = _noted.path
    new = {p.name for p in folder.iterdir()} - _noted.names_before
    if not new <= {run_lock.LOCK_FILE, HYDRA_RECORD}:
        return
    if HYDRA_RECORD in new:
        (folder / HYDRA_RECORD).unlink()
    if run_lock.LOCK_FILE in new:
        (folder / run_lock.LOCK_FILE).unlink(missing_ok=True)  # ours: unlinked before it is let go
    run_lock.release(folder)
    for directory in _noted.made:
        try:
            os.rmdir(directory)  # only when empty: never removes anything else
        except OSError:
            break
