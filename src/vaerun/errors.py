"""How vae-run ends on an error: one line on stderr that starts with ``vae-run: error:``, and an exit
status (2: bad input, 3: a run that failed, 128 + N: stopped by signal N)."""

from __future__ import annotations

import sys
from typing import NoReturn


def exit_with_error(message: str, status: int = 2) -> NoReturn:
    print(f"vae-run: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def first_line(err: BaseException) -> str:
    """What a library's exception says, on one line: its first line, or its type where it says nothing."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
