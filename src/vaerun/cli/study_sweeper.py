"""The sweep loop of ``hydra/sweeper=optuna`` (the plugin class is hydra_plugins.vaerun_optuna_sweeper's):
ask the study for trials, launch them as Hydra jobs through whatever launcher is configured (basic, joblib,
slurm), read how each ended, tell the study.

A search is resumable: its study lives in a storage (a journal file in the sweep folder by default), and the
same command into the same ``hydra.sweep.dir`` continues it. Finished trials (COMPLETE, PRUNED, FAIL) are
neither run nor counted again; a trial left RUNNING by a sweep that was killed runs again in its own run
directory (which resumes from its last checkpoint); ``n_trials`` is the study's total.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from vaerun.cli import output_folder
from vaerun.cli.sweep_values import check_command_line_values
from vaerun.core.atomic import write_text_atomically
from vaerun.core.checks import check_values
from vaerun.core.errors import ConfigError, exit_with_error, first_line
from vaerun.search.outcome import TRIAL_FILE, Outcome, read_outcome
from vaerun.search.space import SearchSpace, search_space
from vaerun.search.study import (
    TRIAL_VARIABLE,
    PrunerSpec,
    TrialHandle,
    make_sampler,
    open_storage,
    storage_url,
)

log = logging.getLogger(__name__)


class StudySweeper(Sweeper):
    """Hydra's Sweeper interface over an Optuna study (the plugin class, in hydra_plugins, is this one)."""

    def __init__(
        self,
        n_trials: int = 20,
        direction: str = "minimize",
        metric: str = "val/loss",
        sampler: str = "tpe",
        seed: int | None = 0,
        pruner: str | None = None,
        pruner_startup_trials: int = 2,
        pruner_warmup_epochs: int = 1,
        n_jobs: int = 1,
        storage: str | None = None,
        study_name: str = "vaerun",
        params: dict[str, str] | None = None,
    ) -> None:
        self.n_trials, self.direction, self.metric = n_trials, direction, metric
        self.sampler_name, self.seed, self.n_jobs = sampler, seed, n_jobs
        self.pruner_name = pruner
        self.pruner_startup_trials, self.pruner_warmup_epochs = pruner_startup_trials, pruner_warmup_epochs
        self.storage, self.study_name, self.params = storage, study_name, dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None
        self.storage_url = ""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _check(self) -> None:
        keys = {
            "direction": self.direction,
            "sampler": self.sampler_name,
            "pruner": self.pruner_name,
            "n_trials": self.n_trials,
            "n_jobs": self.n_jobs,
            "seed": self.seed,
            "pruner_startup_trials": self.pruner_startup_trials,
            "pruner_warmup_epochs": self.pruner_warmup_epochs,
            "metric": self.metric,
            "study_name": self.study_name,
            "storage": self.storage,
        }
        check_values("hydra.sweeper", keys)
        if self.pruner_name and not self.metric.startswith("val/") and self.direction != "minimize":
            raise ConfigError(
                f"hydra.sweeper.pruner: trials are pruned on val/loss, which is minimized, while the "
                f"search maximizes {self.metric}; set pruner=null, or search a val/ metric"
            )
        if self.sampler_name == "cmaes":
            try:
                import cmaes  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "hydra.sweeper.sampler=cmaes needs the cmaes package: pip install cmaes"
                ) from None

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:
            self._check()
            parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
            given = [f"{key}={value}" for key, value in self.params.items()] + list(arguments)
            try:
                overrides = parser.parse_overrides(given)
            except Exception as err:
                raise ConfigError(first_line(err)) from None
            groups = set(self.config.hydra.runtime.choices)
            space = search_space(overrides, groups)
            check_command_line_values(list(space.fixed), groups)  # the same in every trial
            study = self._open_study(sweep_dir)
        except ConfigError as err:
            output_folder.discard_unstarted()
            exit_with_error(str(err))
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self._run_trials(study, space, sweep_dir)
        from vaerun.search.results import write_results

        best = write_results(study, sweep_dir, self.metric)
        if best is None:
            from vaerun.evaluation.summaries import summarize

            summarize([sweep_dir], sweep_dir)
            states = _count_states(study)
            exit_with_error(
                f"hydra.sweeper: no trial completed ({states}); why each ended: {sweep_dir / 'summary.md'}"
            )
        return best

    def _open_study(self, sweep_dir: Path) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # vaerun says what each trial did
        url = storage_url(self.storage, sweep_dir)
        storage = open_storage(url)
        pruner = PrunerSpec(
            self.pruner_name,
            self.pruner_startup_trials,
            self.pruner_warmup_epochs,
            OmegaConf.select(self.config, "trainer.max_epochs"),
        )
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=self.study_name,
                sampler=make_sampler(self.sampler_name, self.seed),
                pruner=pruner.build(),
                direction=self.direction,
                load_if_exists=True,
            )
        except Exception as err:
            raise ConfigError(f"hydra.sweeper.storage: {first_line(err)}") from None
        existing = study.direction.name.lower()
        if existing != self.direction:
            raise ConfigError(
                f"hydra.sweeper.direction: the study {self.study_name!r} in {url} is to {existing}; "
                "continue it with that direction, or start a new one (another hydra.sweep.dir or study_name)"
            )
        if study.user_attrs.get("metric", self.metric) != self.metric:
            raise ConfigError(
                f"hydra.sweeper.metric: the study {self.study_name!r} in {url} searches "
                f"{study.user_attrs['metric']}; continue it with that metric, or start a new one"
            )
        if self.seed is not None and study.trials:  # a resumed search draws on, not the same values again
            study.sampler = make_sampler(self.sampler_name, self.seed + len(study.trials))
        study.set_user_attr("metric", self.metric)
        study.set_user_attr("pruner", pruner.as_dict())
        self.storage_url = url
        return study

    def _run_trials(self, study: Any, space: SearchSpace, sweep_dir: Path) -> None:
        from optuna.trial import Trial, TrialState

        killed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
        if killed:
            log.info(
                "Trials %s did not end (their sweep was stopped): running them again",
                ", ".join(str(t.number) for t in killed),
            )
        for start in range(0, len(killed), self.n_jobs):
            batch = [(Trial(study, t._trial_id), dict(t.params)) for t in killed[start : start + self.n_jobs]]
            self._run_batch(study, space, sweep_dir, batch)
        while True:
            counted = len(study.get_trials(deepcopy=False))
            remaining = self.n_trials - counted
            if remaining <= 0:
                break
            batch = []
            for _ in range(min(self.n_jobs, remaining)):
                trial = study.ask(space.distributions())
                batch.append((trial, dict(trial.params)))
            self._run_batch(study, space, sweep_dir, batch)

    def _run_batch(
        self, study: Any, space: SearchSpace, sweep_dir: Path, batch: list[tuple[Any, dict]]
    ) -> None:
        """Launch the batch's trials at once (in runs of consecutive numbers: a job's number names its run
        directory) and tell the study how each ended."""
        assert self.config is not None and self.hydra_context is not None
        jobs: dict[int, tuple[Any, list[str], Path]] = {}
        for trial, params in batch:
            overrides = space.overrides(params)
            trial.set_user_attr("overrides", list(overrides))
            handle = TrialHandle(self.storage_url, self.study_name, trial.number, _monitor(self.metric))
            overrides.append(self._environment_override(handle))
            try:
                run_dir = self._run_dir(overrides, trial.number, sweep_dir)
            except Exception as err:  # a drawn value no config takes (model=choice(vae, nonesuch))
                self._tell(
                    study, trial, sweep_dir / str(trial.number), Outcome("FAIL", reason=first_line(err))
                )
                continue
            jobs[trial.number] = (trial, overrides, run_dir)
        for numbers in _consecutive(sorted(jobs)):
            launcher_error = ""
            try:
                self.launcher.launch([jobs[n][1] for n in numbers], initial_job_idx=numbers[0])
            except Exception as err:  # a job the launcher lost (a crashed Slurm job): its files say the rest
                launcher_error = first_line(err, with_type=True)
            for number in numbers:
                trial, _, run_dir = jobs[number]
                self._tell(study, trial, run_dir, read_outcome(run_dir, self.metric, launcher_error))

    @staticmethod
    def _environment_override(handle: TrialHandle) -> str:
        """The trial's handle in the job's environment, beside the user's own hydra.job.env_set."""
        return f"++hydra.job.env_set.{TRIAL_VARIABLE}='{handle.to_env()}'"

    def _run_dir(self, overrides: list[str], number: int, sweep_dir: Path) -> Path:
        """The run directory the launcher will give job ``number``; composing its config also finds a value
        no config takes before anything is launched."""
        assert self.config is not None and self.hydra_context is not None
        job_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(job_config):
            job_config.hydra.job.num = number
            job_config.hydra.job.id = f"trial_{number}"
            job_config.hydra.sweep.dir = str(sweep_dir)
        return sweep_dir / str(job_config.hydra.sweep.subdir)

    def _tell(self, study: Any, trial: Any, run_dir: Path, outcome: Outcome) -> None:
        from optuna.trial import TrialState

        if outcome.reason:
            trial.set_user_attr("reason", outcome.reason)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        if outcome.state == "COMPLETE":
            study.tell(trial, outcome.value)
        else:
            study.tell(trial, state=TrialState[outcome.state])
        # beside the run's files; a trial that never ran (a drawn value no config takes) gets a folder for it
        run_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "trial": trial.number,
            "state": outcome.state,
            "value": outcome.value,
            "reason": outcome.reason,
            "overrides": trial.user_attrs.get("overrides", []),
        }
        write_text_atomically(run_dir / TRIAL_FILE, json.dumps(record) + "\n")
        shown = " ".join(f"{key}={value}" for key, value in trial.params.items())
        result = f"{self.metric}={outcome.value:.6g}" if outcome.value is not None else outcome.reason
        log.info("Trial %d %s: %s (%s)", trial.number, outcome.state, result, shown)


def _count_states(study: Any) -> str:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))


def _monitor(metric: str) -> str:
    """The validation metric a trial reports after each epoch: the searched one where it is a val/ metric,
    else the validation loss."""
    return metric if metric.startswith("val/") else "val/loss"


def _consecutive(numbers: Sequence[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for number in numbers:
        if runs and runs[-1][-1] == number - 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return runs
