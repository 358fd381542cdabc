"""What vae-run's side of a Slurm sweep says. submitit polls ``sacct`` for its jobs' states; on a cluster
that keeps no accounting (a small or local one: ``AccountingStorageType=accounting_storage/none``) every
poll fails, sacct prints "Slurm accounting storage is disabled" and submitit "Bypassing sacct error ...,
status may be inaccurate", several times per job, while the jobs run as usual: submitit knows a job has
ended from its result file. There, vae-run asks sacct nothing and says so in one line; elsewhere a failing
sacct is reported once per sweep, and submitit's warnings once (it printed each to stdout and stderr)."""

from __future__ import annotations

import logging
import re
import subprocess
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

SACCT_NOISE = "Bypassing sacct error"


class OnceOnly(logging.Filter):
    """Lets the first record containing ``text`` through and drops the later ones."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.seen = text, False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.text not in record.getMessage():
            return True
        if self.seen:
            return False
        self.seen = True
        return True


def below_warning(record: logging.LogRecord) -> bool:
    return record.levelno < logging.WARNING


def accounting_disabled() -> bool:
    """Whether the cluster ``scontrol`` reaches keeps no job accounting (sacct has nothing to say)."""
    try:
        shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return re.search(r"AccountingStorageType\s*=\s*accounting_storage/none", shown.stdout) is not None


def no_status_command(watcher: Any) -> None:
    """In place of submitit's SlurmInfoWatcher._make_command: no sacct call; job states stay unknown and a
    job is done when its result file is there, as when sacct fails."""
    return None


class QuietSacct(Callback):
    """Hydra callback for sweeps through hydra-submitit-launcher."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = str(config.hydra.launcher.get("_target_", ""))
        if "submitit" not in target:
            return
        import submitit.slurm.slurm  # its import configures submitit's log handlers: adjusted after it

        submitit_log = logging.getLogger("submitit")
        if not any(isinstance(f, OnceOnly) for f in submitit_log.filters):
            submitit_log.addFilter(OnceOnly(SACCT_NOISE))
        # its records went to its stdout handler (DEBUG and up), its stderr one (WARNING and up) and Hydra's
        submitit_log.propagate = False
        for handler in submitit_log.handlers:
            if handler.name == "submitit_out":
                handler.addFilter(below_warning)
        if target.endswith("SlurmLauncher") and accounting_disabled():
            submitit.slurm.slurm.SlurmInfoWatcher._make_command = no_status_command
            log.info("Slurm keeps no job accounting here: job states come from their result files, not sacct")
