"""How a ``vae-run`` process ends: as Python ends it, less the interpreter's teardown.

With torch and Lightning loaded, Python's finalisation frees every object of every module one at a time
before the operating system frees the whole process anyway: about 1 s of every run on the idle 2-core
machine, more on a busy one (docs/speed.md), paid by every run and every process of a DDP run.
Inside ``without_teardown`` the process ends right after all of a normal exit that anyone can observe: the
interpreter joins the other threads and runs the exit handlers (those registered after ours run before it,
as atexit runs the last registered first: torch's, multiprocessing's, the trackers'), then ours shuts
logging down (its handlers flushed and closed) and flushes the standard streams. The lock files and every
other descriptor go with the process, as they do at any exit.

Only an ending of the program's choosing takes this path: a return or a SystemExit (an error explained in
one line, an interruption's 128 + N), and a reader of the output that has gone (`vae-run --help | head -1`),
which ends it silently with SIGPIPE's status, 141. Output that cannot be written out at the end (a full
disk) is said in one line, with the status Python gives it, 120. An uncaught exception ends the ordinary
way, with its traceback, and Ctrl-C outside a run with the signal's own status.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: a program whose reader has gone ends as SIGPIPE ends one that does not catch it (128 + N, the shell's
#: convention that vae-run follows for the signals it does catch); silently, with no traceback
BROKEN_PIPE_STATUS = 128 + signal.SIGPIPE

#: Python's own status for output it could not write out at exit (a full disk)
UNWRITTEN_OUTPUT_STATUS = 120

#: the exit status main() ended with; None until it has ended by a return or a SystemExit
_status: int | None = None
_registered = False


@contextmanager
def without_teardown() -> Iterator[None]:
    """Around the whole of main(): once the interpreter has done its exit handlers, end the process."""
    global _registered, _status
    if not _registered:  # first: every handler registered later (by the imports to come) runs before it
        atexit.register(_end_process)
        _registered = True
    try:
        yield
    except SystemExit as stop:
        _status = exit_status(stop.code)
        raise
    except BrokenPipeError:  # the reader of the output has gone: end silently, as SIGPIPE would end it
        _status = BROKEN_PIPE_STATUS
        raise SystemExit(_status) from None
    _status = 0


def exit_status(code: object) -> int:
    """The status the interpreter gives ``SystemExit(code)``: None is 0, an integer itself, anything else
    (a message, which the interpreter prints) 1."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _end_process() -> None:
    if _status is None:  # an uncaught exception: Python's own ending
        return
    status = _status
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # `vae-run --help | head -1`: not all of it was read
            status = status or BROKEN_PIPE_STATUS
        except ValueError:  # a stream closed: nothing more to write to it
            pass
        except OSError as err:  # a full disk: said in one line, with the status Python gives it
            status = status or UNWRITTEN_OUTPUT_STATUS
            _say(f"vae-run: error: {getattr(stream, 'name', 'output')}: {err}")
    os._exit(status)


def _say(line: str) -> None:
    """A last line on stderr, where stderr can still take one."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
