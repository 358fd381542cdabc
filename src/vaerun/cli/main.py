"""``vae-run``: the console entry point, a thin Hydra main.

Only Hydra and the pure-Python checks are imported up front, so ``--help``, ``--cfg job`` and every config
error answer without loading torch or Lightning. The heavy work is imported once the config has passed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shlex
import signal
import sys
from functools import partial
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from vaerun.cli import output_folder, run_lock, run_state
from vaerun.cli.checkpoint_data import typed_keys, with_the_checkpoints_data
from vaerun.cli.help import (
    HELP_FLAGS,
    HYDRA_HELP_FLAG,
    VERSION_FLAG,
    help_text,
    version_text,
    with_vaeruns_version_flag,
)
from vaerun.cli.hydra_messages import one_line
from vaerun.cli.process_end import without_teardown
from vaerun.cli.refusals import (
    HeldStartupErrors,
    refuse_bad_flags,
    release_startup_errors,
    without_plus_on_trainer_keys,
)
from vaerun.cli.startup import without_mode_composition
from vaerun.core import run_files
from vaerun.core.atomic import write_text_atomically
from vaerun.core.checkpoints import checkpoint_file, last_checkpoint
from vaerun.core.checks import ConfigError, check_config
from vaerun.core.errors import ErrorExit, NonFiniteLossError, RunInterrupted, exit_with_error, first_line
from vaerun.core.spec import MODEL_PARTS
from vaerun.search.outcome import FAILURE_FILE

log = logging.getLogger("vaerun")

#: the config groups that ship with vaerun (a link to the top-level configs/ in a source checkout)
PACKAGE_CONFIGS = Path(__file__).resolve().parents[1] / "configs"

#: the config groups whose chosen option is recorded with the run (model=vae, encoder=mlp, ...)
RECORDED_GROUPS = (*MODEL_PARTS, "corruption", "data", "device", "optimizer")
# ${dirname:...} in a config: a run directory's name cut to what a file system takes (run_state.dirname)
OmegaConf.register_new_resolver("dirname", run_state.dirname, replace=True)


#: flags of Hydra's command line that a process of a distributed run must see again, with their value
_CONFIG_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")


def _single_run_argv(argv: list[str], task_overrides: list[str]) -> list[str]:
    """The command line of this one job: Lightning's DDP launcher starts the other processes by running
    sys.argv again, which inside a multirun would launch the whole sweep again. The job's own overrides
    replace the sweep's, and the config-folder flags are kept."""
    kept, rest = [argv[0]], iter(argv[1:])
    for token in rest:
        if token in _CONFIG_FLAGS:
            kept += [token, next(rest, "")]
        elif token.split("=", 1)[0] in _CONFIG_FLAGS:
            kept.append(token)
    return kept + list(task_overrides)


def _pin_run_dir_for_child_processes(run_dir: Path, task_overrides: list[str]) -> None:
    """Lightning's DDP launcher re-runs sys.argv with hydra.run.dir=HydraConfig.get().run.dir: make both
    name this job's directory, also inside a multirun (whose jobs live under hydra.sweep.dir)."""
    sys.argv = _single_run_argv(sys.argv, task_overrides)
    hydra_node = HydraConfig.get()
    with read_write(hydra_node), open_dict(hydra_node):
        hydra_node.run.dir = str(run_dir)


def _continue_earlier_run(new_dir: Path, config_fingerprint: str) -> tuple[Path, run_state.Plan]:
    """resume=true: the new, empty run directory is dropped and the earlier run continues in its own."""
    root = new_dir.parent.parent  # outputs/DATE/TIME -> outputs
    earlier = run_state.find_resumable(root, config_fingerprint)
    if earlier is None:
        hint = ""
        if unfinished := run_state.unfinished_runs(root):  # the one the user most likely meant
            run_dir, state = unfinished[0]
            command = shlex.join(["vae-run", *run_state.overrides_of(state), "resume=true"])
            hint = f"; the latest unfinished one, {run_dir}, continues with: {command}"
        _fail(f"resume=true: no unfinished run of this config with a checkpoint under {root}{hint}", new_dir)
    run_lock.acquire(earlier, "resume=true")  # refused, with the owner, while that run is still going
    output_folder.discard_unstarted(new_dir)
    handler = logging.FileHandler(earlier / "vae_run.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    log.info("resume=true: continuing %s", earlier)
    return earlier, run_state.Plan(resume_from=last_checkpoint(earlier))


def _resolve_checkpoints(config: dict) -> None:
    """``ckpt=`` and ``anomaly.background_ckpt=`` take a run directory too: its best checkpoint."""
    if config["ckpt"] is not None:
        config["ckpt"] = str(checkpoint_file(Path(config["ckpt"]).expanduser()))
    if config["anomaly"].get("background_ckpt") is not None:
        path = Path(config["anomaly"]["background_ckpt"]).expanduser()
        config["anomaly"]["background_ckpt"] = str(checkpoint_file(path))


def _fail(message: str, run_dir: Path) -> NoReturn:
    # a sweep's run keeps its .hydra and log beside its failure.json
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        output_folder.discard_unstarted(run_dir)
    exit_with_error(message)


def _config_folders(argv: list[str]) -> tuple[list[Path], list[str]]:
    """The config folders (the package's, then each --config-dir) and the overrides of a command line."""
    folders, overrides = [PACKAGE_CONFIGS], []
    tokens = iter(argv)
    for token in tokens:
        name, equals, value = token.partition("=")
        if name in _CONFIG_FLAGS:
            value = value if equals else next(tokens, "")
            if name in ("--config-dir", "-cd"):
                folders.append(Path(value).expanduser())
        elif not token.startswith("-"):
            overrides.append(token)
    return folders, overrides


def _check_config_dir_files(folders: list[Path]) -> None:
    """A YAML file of the user's --config-dir that does not parse is one line naming it and the place, not
    Hydra's traceback from inside its config loader."""
    import yaml

    for folder in folders:
        for path in sorted(folder.rglob("*.yaml")) if folder.is_dir() else []:
            try:
                OmegaConf.load(path)
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None)
                where = f", line {mark.line + 1}" if mark is not None else ""
                problem = getattr(err, "problem", None) or first_line(err)
                exit_with_error(f"--config-dir: {path}{where}: {problem}")


def _print_help(folders: list[Path], overrides: list[str]) -> None:
    try:
        text = help_text(folders, overrides)
    except Exception as err:  # Hydra's refusal of an override given with --help
        exit_with_error(one_line(str(err), folders))
    print(text)


def main() -> None:
    """The console entry point: the user's own config files checked, then Hydra's main, whose own
    refusals of the command line are answered in one line. The process ends without the interpreter's
    teardown (vaerun.cli.process_end): main() is for the process's entry, not for calling in another
    program."""
    with without_teardown():
        trainer_defaults = PACKAGE_CONFIGS / "trainer" / "default.yaml"
        sys.argv[1:] = without_plus_on_trainer_keys(sys.argv[1:], trainer_defaults)
        folders, overrides = _config_folders(sys.argv[1:])
        _check_config_dir_files(folders[1:])
        if any(flag in sys.argv[1:] for flag in HELP_FLAGS):
            _print_help(folders, overrides)
            return
        if VERSION_FLAG in sys.argv[1:]:
            print(version_text())
            return
        refuse_bad_flags(sys.argv[1:])
        if HYDRA_HELP_FLAG in sys.argv[1:]:  # Hydra prints its help, then exits
            # it composes Hydra's config alone, which has no key of vae-run's to override
            apps = {override for override in overrides if not override.lstrip("+~").startswith("hydra")}
            sys.argv[1:] = [token for token in sys.argv[1:] if token not in apps]
            with contextlib.redirect_stdout(io.StringIO()) as hydra_help:
                try:
                    with HeldStartupErrors(folders), without_mode_composition(folders, overrides):
                        _hydra_main()
                except SystemExit as ended:
                    if ended.code:
                        raise
            print(with_vaeruns_version_flag(hydra_help.getvalue()), end="")
            return
        with HeldStartupErrors(folders), without_mode_composition(folders, overrides):
            _hydra_main()


@hydra.main(version_base="1.3", config_path="pkg://vaerun.configs", config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    release_startup_errors()
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return _run_in_sweep(cfg)
    return _run(cfg)


def _run_in_sweep(cfg: DictConfig) -> float | None:
    """A run of a multirun: one that fails says why in its failure.json (which the sweep's summary and a
    search read) and ends, so that the sweep's other runs go on. An interruption is a plain SystemExit
    (128 + N), not caught here: it still stops the sweep."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    failure = run_dir / FAILURE_FILE
    failure.unlink(missing_ok=True)  # an earlier attempt's
    try:
        return _run(cfg)
    except ErrorExit as err:
        reason, status = err.message, int(err.code or 1)
    except Exception as err:  # a defect: its traceback goes to the run's log, the sweep goes on
        log.exception("The run failed")
        reason, status = first_line(err, with_type=True), 1
    if run_state.process_rank() == 0:
        write_text_atomically(failure, json.dumps({"error": reason, "exit_status": status}) + "\n")
    return None


def _run(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    config, config_fingerprint, plan = _checked_config_and_plan(cfg, run_dir)
    if plan.skip:
        print(f"Finished already with this config, skipped (force=true runs it again): {run_dir}")
        return _objective(run_dir)
    if config["resume"] and plan.resume_from is None and run_state.process_rank() == 0:
        run_dir, plan = _continue_earlier_run(run_dir, config_fingerprint)
    _pin_run_dir_for_child_processes(run_dir, list(hydra_cfg.overrides.task))
    metrics = _run_stages(config, run_dir, config_fingerprint, plan.resume_from)
    if run_state.process_rank() != 0:  # the other processes of a DDP run: rank 0 reports
        return None
    log.info("Run directory: %s", run_dir)
    _print_where_to_look(run_dir, config["logger"])
    return _objective(run_dir, metrics)


def checked_config(cfg: DictConfig) -> dict:
    """The composed config resolved and checked, as a run reads it; a bad one raises ConfigError with the
    line the user sees (an interpolation that does not resolve: "KEY: what OmegaConf says")."""
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
        check_config(config)
        _resolve_checkpoints(config)
    except ConfigError:
        raise
    except Exception as err:  # OmegaConf's errors end in lines of their own: the key, the node's type
        key = getattr(err, "full_key", None) or "invalid config"
        raise ConfigError(f"{key}: {first_line(err)}") from err
    return config


def _typed_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task)


def _checked_config_and_plan(cfg: DictConfig, run_dir: Path) -> tuple[dict, str, run_state.Plan]:
    """The resolved and checked config, its fingerprint, and what to do with the run directory: a bad
    config ends the run here, with one line."""
    try:
        config, run_data = with_the_checkpoints_data(checked_config(cfg), _typed_overrides())
        if run_data is not None:
            check_config(config)
            log.info("Data: the checkpoint's run's (data=%s); data=OPTION picks other data", run_data)
        config_fingerprint = run_state.fingerprint(config)
        # Only rank 0 decides what to do with the directory; the other processes of a DDP run follow it.
        plan = (
            run_state.plan(run_dir, config_fingerprint, config["force"])
            if run_state.process_rank() == 0
            else None
        )
    except ConfigError as err:
        _fail(str(err), run_dir)
    except Exception as err:  # the run directory's state unreadable
        _fail(f"hydra.run.dir: {run_dir}: {first_line(err)}", run_dir)
    if plan is None:
        plan = run_state.Plan(resume_from=last_checkpoint(run_dir))
    elif run_data is not None and not plan.skip:
        run_files.replace_data(run_dir, config["data"])
    return config, config_fingerprint, plan


def _run_stages(config: dict, run_dir: Path, config_fingerprint: str, resume_from: Path | None) -> dict:
    """The stages' metrics; Lightning and torch are imported here, off the --help and config-error path
    (a model that refuses its config is built, and refused, with torch alone)."""
    hydra_cfg = HydraConfig.get()
    choices = {group: hydra_cfg.runtime.choices.get(group) for group in RECORDED_GROUPS}
    overridden = {key.split(".")[0] for key in typed_keys(_typed_overrides())}

    from vaerun.models.build import check_buildable  # torch alone: a third of Lightning's import time

    try:
        check_buildable(config)
    except ConfigError as err:
        _fail(str(err), run_dir)

    import warnings

    # Lightning 2.6 on torch >= 2.10 calls a deprecated pytree constructor inside fit; not the user's concern.
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from vaerun.stages import run

    try:
        return run(
            config,
            run_dir,
            choices,
            overridden,
            resume_from,
            record_status=partial(run_state.record, run_dir, config_fingerprint),
        )
    except ConfigError as err:
        _fail(str(err), run_dir)
    except NonFiniteLossError as err:
        exit_with_error(f"{err} ({run_dir / 'checkpoints'})", status=3)
    except (RunInterrupted, SIGTERMException) as err:
        interrupted = err if isinstance(err, RunInterrupted) else RunInterrupted(signal.SIGTERM)
        print(f"vae-run: interrupted by {interrupted}: {run_dir}", file=sys.stderr)
        raise SystemExit(interrupted.exit_code) from None


def _print_where_to_look(run_dir: Path, loggers: dict) -> None:
    """The run directory, and where each logger keeps the run (the TensorBoard command that shows it)."""
    from vaerun.training.trackers import where_to_look

    print("\n" + "\n".join([f"Run directory: {run_dir}", *where_to_look(loggers, run_dir)]))


def _objective(run_dir: Path, metrics: dict[str, float] | None = None) -> float | None:
    """What a Hydra sweeper optimises: the test loss, else the validation loss."""
    if metrics is None:
        saved = run_dir / "metrics.json"
        metrics = json.loads(saved.read_text()) if saved.is_file() else {}
    return metrics.get("test/loss", metrics.get("val/loss"))


if __name__ == "__main__":
    main()
