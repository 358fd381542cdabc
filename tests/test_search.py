"""hydra/sweeper=optuna: the search space from Hydra's sweep syntax, and real studies on digits (resumed,
with a failing trial, with a pruned one, in parallel through joblib). The study through Slurm is in
test_slurm.py."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import TINY, read_metrics, vae_run
from hydra.core.override_parser.overrides_parser import OverridesParser

from vaerun.core.errors import ConfigError
from vaerun.search.space import search_space
from vaerun.search.study import load_study, storage_url

SEARCH = ["-m", "hydra/sweeper=optuna", "data=digits", *TINY, "stage=train", "hydra.sweep.dir=sweep"]


def space_of(*overrides: str):
    return search_space(OverridesParser.create().parse_overrides(list(overrides)))


def test_hydra_sweep_syntax_becomes_optuna_distributions():
    space = space_of(
        "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
        "latent=choice(2, 8, 16)",
        "model=ae,vae",
        "data.batch_size=range(32, 257, 32)",
        "+model.beta=interval(0.5, 4)",
        "encoder.width=tag(int, log, interval(64, 512))",
        "encoder.hidden=choice([256,128], [512,256])",
        "data=digits",
    )
    found = space.distributions()
    assert found["optimizer.lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert found["latent"] == optuna.distributions.CategoricalDistribution((2, 8, 16))
    assert found["model"] == optuna.distributions.CategoricalDistribution(("ae", "vae"))
    assert found["data.batch_size"] == optuna.distributions.IntDistribution(32, 256, step=32)
    assert found["model.beta"] == optuna.distributions.FloatDistribution(0.5, 4.0)
    assert found["encoder.width"] == optuna.distributions.IntDistribution(64, 512, log=True)
    assert found["encoder.hidden"] == optuna.distributions.CategoricalDistribution(("[256,128]", "[512,256]"))
    assert space.fixed == ("data=digits",)
    # a trial's overrides: the fixed ones, then each drawn value, with the key as it was typed
    params = {
        "optimizer.lr": 0.001,
        "latent": 8,
        "model": "vae",
        "data.batch_size": 64,
        "model.beta": 1.5,
        "encoder.width": 128,
        "encoder.hidden": "[512,256]",
    }
    assert space.overrides(params) == [
        "data=digits",
        "optimizer.lr=0.001",
        "latent=8",
        "model=vae",
        "data.batch_size=64",
        "+model.beta=1.5",
        "encoder.width=128",
        "encoder.hidden=[512,256]",
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=digits"], "nothing to search"),
        (
            ["optimizer.lr=tag(log, interval(0, 1))"],
            "optimizer.lr: a log-scale interval needs a positive start",
        ),
        (["latent=tag(int, interval(2.5, 8))"], "latent: tag\\(int, interval"),
    ],
)
def test_a_space_that_cannot_be_searched_is_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        space_of(*overrides)


def test_a_config_groups_options_are_searched_as_options_not_checked_as_values():
    """logger and callbacks are groups whose composed value has a rule of its own (named entries with a
    _target_): their options on the command line are Hydra's to refuse, not that rule's."""
    overrides = OverridesParser.create().parse_overrides(
        ["logger=choice(csv, tensorboard)", "latent=choice(2, 3)"]
    )
    space = search_space(overrides, groups={"logger", "callbacks", "model"})
    assert space.distributions()["logger"] == optuna.distributions.CategoricalDistribution(
        ("csv", "tensorboard")
    )
    with pytest.raises(ConfigError, match="logger must be named entries"):
        search_space(overrides)  # without the groups, the rule of the logger entries judges its options


def trials_of(sweep: Path) -> list[optuna.trial.FrozenTrial]:
    return load_study(storage_url(None, sweep), "vaerun").get_trials()


def rows_of(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv") as handle:
        return list(csv.DictReader(handle))


def test_a_study_resumes_to_its_total_reruns_a_killed_trial_and_tolerates_a_failing_value(tmp_path):
    """4 trials (a block 9 pixels wide fails in its job on 8 x 8 digits: FAIL, and the study goes on); a
    trial left RUNNING, as by a search that was killed; then the same command with n_trials=7, two trials
    at once through joblib: the killed trial runs again with its own parameters, two new ones are added,
    the first four stay as they were."""
    search = [*SEARCH, "model=dae", "corruption=block_mask", "corruption.size=choice(9, 2, 3)",
              "optimizer.lr=tag(log, interval(1e-3, 1e-2))", "hydra.sweeper.sampler=random"]  # fmt: skip
    vae_run(*search, "hydra.sweeper.n_trials=4", cwd=tmp_path)
    sweep = tmp_path / "sweep"
    first = trials_of(sweep)
    assert len(first) == 4
    states = {t.number: t.state.name for t in first}
    sizes = {t.number: t.params["corruption.size"] for t in first}
    assert all(states[n] == ("FAIL" if sizes[n] == 9 else "COMPLETE") for n in states)
    assert "FAIL" in states.values() and "COMPLETE" in states.values()
    for trial in first:
        if trial.state.name == "COMPLETE":  # the value told is the run's best validation loss
            assert trial.value == read_metrics(sweep / str(trial.number))["val/loss"]
        else:
            assert "corruption.size must be an integer in [1, 8]" in trial.user_attrs["reason"]
    stamps = {p: p.stat().st_mtime_ns for n in range(4) for p in (sweep / str(n)).rglob("*") if p.is_file()}
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    completed = [t for t in first if t.state.name == "COMPLETE"]
    assert best["value"] == min(t.value for t in completed)
    assert f"corruption.size={best['params']['corruption.size']}" in best["overrides"]
    assert {"history.png", "importances.png", "summary.md", "summary.png"} <= {
        p.name for p in sweep.iterdir()
    }
    header = next(line for line in (sweep / "summary.md").read_text().splitlines() if line.startswith("| #"))
    assert "| value |" in header and "val/loss" not in header  # the value is the best val/loss, once
    assert list((sweep / "tensorboard").glob("events.out.tfevents.*"))

    study = load_study(storage_url(None, sweep), "vaerun")
    study.enqueue_trial({"corruption.size": 2, "optimizer.lr": 0.003})
    killed = study.ask(space_of(*search[-3:-1]).distributions())
    assert killed.number == 4  # never told: RUNNING, as when its search was killed
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]
    vae_run(*search, *parallel, "hydra.sweeper.n_trials=7", cwd=tmp_path)
    after = trials_of(sweep)
    assert len(after) == 7 and after[4].params == killed.params
    assert [(t.number, t.state, t.params, t.value) for t in after[:4]] == [
        (t.number, t.state, t.params, t.value) for t in first
    ]
    assert all(
        t.state.name == ("FAIL" if t.params["corruption.size"] == 9 else "COMPLETE") for t in after[4:]
    )
    kept = {p: p.stat().st_mtime_ns for n in range(4) for p in (sweep / str(n)).rglob("*") if p.is_file()}
    assert kept == stamps  # the first four runs were neither run nor rewritten
    for trial in after[5:]:  # the two new trials, launched together through joblib
        assert "Stage train" in (sweep / str(trial.number) / "vae_run.log").read_text()
    rows = rows_of(sweep)
    assert sorted(int(r["trial"]) for r in rows) == list(range(7))
    for row in rows:
        assert row["state"] == after[int(row["trial"])].state.name
        assert row["corruption.size"] == str(after[int(row["trial"])].params["corruption.size"])
        assert (row["state"] == "FAIL") == bool(row["error"])


def test_the_median_pruner_stops_a_hopeless_trial_early_and_it_skips_evaluation(tmp_path):
    """Three trials at a working learning rate, then one at 1e-9 (the random sampler's draws with seed 2):
    after its second epoch its validation loss is above the others' median, so it stops there, PRUNED,
    with its checkpoint; the completed ones ran every stage."""
    search = [
        "-m", "hydra/sweeper=optuna", "data=digits", *TINY, "trainer.max_epochs=3", "hydra.sweep.dir=sweep",
        "optimizer.lr=choice(0.003, 1e-9)", "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler=random",
        "hydra.sweeper.seed=2", "hydra.sweeper.pruner=median",
    ]  # fmt: skip
    vae_run(*search, cwd=tmp_path)
    sweep = tmp_path / "sweep"
    trials = trials_of(sweep)
    assert [t.params["optimizer.lr"] for t in trials] == [0.003, 0.003, 0.003, 1e-9]
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    assert sorted(trials[3].intermediate_values) == [0, 1]  # stopped after its second of three epochs
    pruned = read_metrics(sweep / "3")
    assert pruned["search/pruned_epoch"] == 1 and "test/loss" not in pruned
    assert (sweep / "3" / "checkpoints" / "last.ckpt").is_file()
    assert "test/loss" in read_metrics(sweep / "0")
    assert sorted(trials[0].intermediate_values) == [0, 1, 2]


def test_a_study_where_no_trial_completes_ends_with_one_line(tmp_path):
    too_large = ["corruption=block_mask", "corruption.size=choice(9, 10)"]  # for 8 x 8 digits, in each trial
    result = vae_run(*SEARCH, *too_large, "hydra.sweeper.n_trials=2", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("vae-run: error: hydra.sweeper: no trial completed (2 FAIL)")
    )
    assert "Traceback" not in result.stderr
    assert [r["state"] for r in rows_of(tmp_path / "sweep")] == ["FAIL", "FAIL"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "hydra.sweeper.sampler=nope",
            "hydra.sweeper.sampler must be one of tpe, random, cmaes, gp, got 'nope'",
        ),
        ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials must be an integer >= 1, got 0"),
        (  # the sampler's seed, refused before the study's storage is opened
            "hydra.sweeper.seed=x",
            "hydra.sweeper.seed must be null or an integer in [0, 2**32 - 1] (numpy's seeds), got 'x'",
        ),
        (
            "hydra.sweeper.pruner_warmup_epochs=-1",
            "hydra.sweeper.pruner_warmup_epochs must be an integer >= 0, got -1",
        ),
        (
            "hydra.sweeper.pruner=sometimes",
            "hydra.sweeper.pruner must be one of median, hyperband, null, got 'sometimes'",
        ),
        (  # a space that reaches values the key's rule refuses: every trial there would fail
            "latent=choice(0, 2)",
            "latent=choice(0, 2): the search reaches 0, and latent must be an integer >= 1 (the latent "
            "dimension), got 0",
        ),
        (
            "optimizer.lr=interval(0, 0.01)",
            "optimizer.lr=interval(0, 0.01): the search reaches 0.0, and optimizer.lr must be a number > 0, "
            "got 0.0",
        ),
        (
            "latent=interval(2, 8)",
            "latent=interval(2, 8): the search reaches 2.0, and latent must be an integer >= 1 (the latent "
            "dimension), got 2.0; tag(int, interval(2, 8)) draws integers",
        ),
        (  # a value every trial would take: each would fail on it
            "data.batch_size=0",
            "data.batch_size=0: data.batch_size must be an integer >= 1, got 0; no run started",
        ),
    ],
)
def test_a_bad_sweeper_setting_is_one_line_and_leaves_no_sweep_folder(tmp_path, setting, message):
    searched = [] if "=choice" in setting or "=interval" in setting else ["latent=choice(2, 3)"]
    result = vae_run(*SEARCH, *searched, setting, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == f"vae-run: error: {message}"
    assert not (tmp_path / "sweep").exists()
