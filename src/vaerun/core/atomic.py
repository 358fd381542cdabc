"""Files that appear whole or not at all: written beside their target, then renamed into place, so a run
killed during a write never leaves a truncated metrics.json, job.json, summary or checkpoint behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: beside it, hidden, one per process
    (the runs of a sweep may write the same file at once, as when they decode the same image folder)."""
    return path.with_name(f".partial.{os.getpid()}.{path.name}")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path in the same folder (keeping the file's extension, for writers that go by
    it); when the block ends without an error, it replaces ``path``. On an error it is removed."""
    path = Path(path)
    partial = partial_path(path)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_path(path) as partial:
        partial.write_text(text)
