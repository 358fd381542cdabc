"""A command refused before its run or sweep started leaves the output folder as it found it.

Hydra makes the folder and writes its record there (a run's ``.hydra/`` and log, a multirun's
``multirun.yaml``; ``RunDirLock`` adds its lock) before some refusals can come: vaerun's checks of a single
run's config, Hydra's composition of each job of a sweep (``-m latnt=2,4``), the Optuna sweeper's check of
its space. ``note`` remembers, before the folder is made, what it held. ``discard_unstarted`` undoes what
the refused command wrote: the files it added go, the records it rewrote (an earlier run's ``.hydra/``, an
earlier sweep's ``multirun.yaml``) get their earlier bytes back, the logs it appended to are cut back to
their earlier length, and the folders made for it (``outputs/DATE/TIME`` and those above it that were not
there) go when empty. A folder that holds anything else new is left alone: a run started there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from vaerun.core import run_files
from vaerun.core.atomic import atomic_path

#: Hydra's record of a multirun's config, written into its folder before the jobs are composed
HYDRA_RECORD = "multirun.yaml"


@dataclass
class _Noted:
    path: Path
    names_before: set[str]  # what it held (nothing: it was not there)
    records: dict[Path, bytes]  # Hydra's record files as they were
    log_sizes: dict[Path, int]  # the logs as long as they were
    made: list[Path]  # the folders this process made for it: its own first, then its new parents


#: the output folder of this process's run or sweep, noted before it was made
_noted: _Noted | None = None


def _record_files(folder: Path) -> list[Path]:
    hydra_dir = folder / run_files.FOLDER
    files = sorted(p for p in hydra_dir.iterdir() if p.is_file()) if hydra_dir.is_dir() else []
    return [folder / HYDRA_RECORD, *files] if (folder / HYDRA_RECORD).is_file() else files


def note(folder: Path) -> None:
    """Before the run's or sweep's folder is made or written to: remember what it and its parents hold."""
    global _noted
    folder = folder.resolve()
    there = folder.is_dir()
    made = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        made.append(path)
    _noted = _Noted(
        path=folder,
        names_before={p.name for p in folder.iterdir()} if there else set(),
        records={p: p.read_bytes() for p in _record_files(folder)} if there else {},
        log_sizes={p: p.stat().st_size for p in folder.glob("*.log")} if there else {},
        made=made,
    )


def discard_unstarted(folder: Path | None = None, launcher_files: Collection[str] = ()) -> None:
    """Undo what the refused command wrote into the noted folder (``folder``, where given, must be it), and
    remove the folders made for it, if it wrote no more than a lock, Hydra's records and logs, and
    ``launcher_files``: what a launcher that submitted no job wrote there (submitit's ``.submitit``)."""
    from vaerun.cli import run_lock  # here: run_lock reads run_state, which notes the folder here

    noted = _noted
    if noted is None or not noted.path.is_dir() or (folder is not None and folder.resolve() != noted.path):
        return
    written_before_start = {run_lock.LOCK_FILE, HYDRA_RECORD, run_files.FOLDER, *launcher_files}
    new = {p.name for p in noted.path.iterdir()} - noted.names_before
    if any(name not in written_before_start and not name.endswith(".log") for name in new):
        return
    for name in new & set(launcher_files):
        shutil.rmtree(noted.path / name, ignore_errors=True)
    for path in _record_files(noted.path):
        earlier = noted.records.get(path)
        if earlier is None:
            path.unlink(missing_ok=True)
        elif path.read_bytes() != earlier:
            with atomic_path(path) as partial:
                partial.write_bytes(earlier)
    if run_files.FOLDER in new:
        shutil.rmtree(noted.path / run_files.FOLDER, ignore_errors=True)
    for log_file in noted.path.glob("*.log"):
        if log_file in noted.log_sizes:
            os.truncate(log_file, noted.log_sizes[log_file])
        else:
            log_file.unlink(missing_ok=True)
    if run_lock.LOCK_FILE in new:
        (noted.path / run_lock.LOCK_FILE).unlink(missing_ok=True)  # ours: unlinked before it is let go
    run_lock.release(noted.path)
    for directory in noted.made:
        try:
            os.rmdir(directory)  # only when empty: never removes anything else
        except OSError:
            break
