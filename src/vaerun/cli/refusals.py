"""Hydra's own refusals of a command line (a key not in the config, an option that does not exist, a
``+`` on a key that does), answered as vae-run answers every bad input: one line that names the key and
says what would work, exit 2; and Hydra's flags checked before Hydra reads them.

Hydra prints its refusal before any of vae-run's code runs, so what it writes to stderr until the task
function starts is held back (``HeldStartupErrors``) and, if it ends the command, rewritten as one line
(``vaerun.cli.hydra_messages``).
"""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path
from types import TracebackType

from hydra.errors import HydraException
from omegaconf import OmegaConf

from vaerun.cli import output_folder
from vaerun.cli.hydra_messages import SBATCH_REFUSAL, one_line
from vaerun.core.errors import exit_with_error


def without_plus_on_trainer_keys(argv: list[str], trainer_config: Path) -> list[str]:
    """``+trainer.KEY=VALUE`` for a KEY that configs/trainer/default.yaml now lists (an earlier vaerun
    needed the +) sets it, as ``trainer.KEY=VALUE`` does, instead of Hydra's refusal to add a key twice."""
    listed = set(OmegaConf.load(trainer_config)) if trainer_config.is_file() else set()

    def as_set(token: str) -> str:
        found = re.fullmatch(r"\+trainer\.(\w+)=.*", token)
        return token[1:] if found and found.group(1) in listed else token

    return [as_set(token) for token in argv]


def refuse_bad_flags(argv: list[str]) -> None:
    """Hydra's own flags, read with Hydra's own parser: a bad value (``--cfg jobs``) would get argparse's
    usage text, and more than one of Hydra's modes (-m, --cfg, --info, --run, --shell-completion) a
    ValueError's traceback; each gets one line instead."""
    from hydra._internal.utils import get_args_parser

    def refuse(message: str) -> None:  # argparse's "argument --cfg/-c: invalid choice: ..."
        exit_with_error(re.sub(r"^argument (--[\w-]+)(/-\w+)?: ", r"\1: ", message))

    parser = get_args_parser()
    parser.error = refuse  # type: ignore[method-assign]
    args, unknown = parser.parse_known_args(argv)
    if flags := [token for token in unknown if token.startswith("-")]:
        name = flags[0].lstrip("-")  # --latent=2: an override written as a flag
        hint = f"; an override has no dashes: {name}" if "=" in name else ""
        exit_with_error(f"{flags[0]}: no such flag{hint} (vae-run --help lists the flags)")
    modes = {
        "--run": args.run,
        "--multirun": args.multirun,
        "--cfg": args.cfg is not None,
        "--info": args.info is not None,
        "--shell-completion": args.shell_completion,
    }
    given = [flag for flag, on in modes.items() if on]
    if len(given) > 1:
        exit_with_error(f"{', '.join(given)}: Hydra takes one of these at a time; give one of them")


#: what the Slurm launcher writes into the sweep's folder before it calls sbatch (the jobs, pickled)
SUBMITIT_FOLDER = ".submitit"


class _HeldStream(io.StringIO):
    """Python-level writes held back; the file descriptor stays the real stderr's, for child processes
    (a launcher's workers) that write to it directly."""

    def __init__(self, real: io.TextIOBase) -> None:
        super().__init__()
        self.real = real

    def fileno(self) -> int:
        return self.real.fileno()

    def isatty(self) -> bool:
        return self.real.isatty()


class HeldStartupErrors:
    """Holds back what goes to stderr until ``release()`` (called where the task function starts); if
    the command ends before that with Hydra's exit status 1, its text becomes one vae-run error line.
    HYDRA_FULL_ERROR=1 leaves Hydra's own output as it is."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self.stderr = sys.stderr
        self.held = _HeldStream(self.stderr)

    def __enter__(self) -> HeldStartupErrors:
        global _holding
        if os.environ.get("HYDRA_FULL_ERROR") != "1":
            sys.stderr, _holding = self.held, self
        return self

    def release(self) -> None:
        if sys.stderr is self.held:
            sys.stderr = self.stderr
            self.stderr.write(self.held.getvalue())

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        global _holding
        _holding = None
        if sys.stderr is not self.held:
            return
        sys.stderr = self.stderr
        text = self.held.getvalue()
        if isinstance(error, SystemExit) and error.code == 1 and text.strip():
            # Hydra refused a job's config after the folder was made, or sbatch submitted none of the jobs
            submitted_nothing = SBATCH_REFUSAL.search(text) is not None
            output_folder.discard_unstarted(launcher_files=(SUBMITIT_FOLDER,) if submitted_nothing else ())
            exit_with_error(one_line(text, self.folders))
        if isinstance(error, HydraException) or _raised_in_hydra(error):
            # --hydra-help's composition, a flag's check (--resolve without --cfg): raised, not reported
            exit_with_error(one_line(f"{error}\n{text}", self.folders))
        self.stderr.write(text)


def _raised_in_hydra(error: BaseException | None) -> bool:
    """Whether ``error`` is an Exception raised by Hydra's own code (its innermost frame is Hydra's)."""
    if not isinstance(error, Exception) or error.__traceback__ is None:
        return False
    trace = error.__traceback__
    while trace.tb_next is not None:
        trace = trace.tb_next
    return str(trace.tb_frame.f_globals.get("__name__", "")).startswith("hydra.")


#: the holder in force, if any: a module attribute, so that the task function (which a launcher may
#: pickle and run in another process) refers to it through ``release_startup_errors`` alone
_holding: HeldStartupErrors | None = None


def release_startup_errors() -> None:
    """Where the task function starts: what Hydra wrote so far goes to stderr, and the rest goes there
    directly."""
    if _holding is not None:
        _holding.release()
