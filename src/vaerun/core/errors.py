"""Every error of vaerun's own, and how vae-run ends on one: a line on stderr that starts with
``vae-run: error:``, and an exit status (2: bad input, 3: a run that failed, 128 + N: stopped by signal N)."""

from __future__ import annotations

import signal
import sys
from typing import NoReturn


class ConfigError(ValueError):
    """A config value outside what is allowed; the message names the key."""


class NonFiniteLossError(RuntimeError):
    """The loss became nan or inf; the message names the step and the term that blew up."""


class RunInterrupted(BaseException):
    """Ctrl-C (SIGINT) or SIGTERM (``kill``, a cluster's pre-emption) ended the run. A BaseException, as
    KeyboardInterrupt is: no ``except Exception`` on the way up may swallow it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class ErrorExit(SystemExit):
    """How vae-run ends on an error it has explained: the line is on stderr; ``message`` keeps it for a
    sweep, whose other runs go on (vaerun.cli.main records it in the run's failure.json)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status)
        self.message = message


def exit_with_error(message: str, status: int = 2) -> NoReturn:
    """Print ``vae-run: error: MESSAGE`` and end with ``status``: on one line, whatever line breaks a
    library's text quoted in the message held."""
    message = " ".join(message.split())
    print(f"vae-run: error: {message}", file=sys.stderr)
    raise ErrorExit(status, message)


def first_line(err: BaseException, with_type: bool = False) -> str:
    """What a library's exception says, on one line: its first line, or its type where it says nothing;
    ``with_type``: "Type: first line" (the type alone where it says nothing)."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    return f"{type(err).__name__}: {text.splitlines()[0]}" if with_type else text.splitlines()[0]
