"""Sweeps end to end: the real multirun, its summary, skipping finished runs, launchers and DDP on CPU."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY, read_metrics, vae_run

import vaerun
from vaerun.cli.main import _single_run_argv
from vaerun.cli.sweep_values import check_command_line_values
from vaerun.core.errors import ConfigError


def summary_rows(sweep: Path) -> list[dict]:
    with open(sweep / "summary.csv") as handle:
        return list(csv.DictReader(handle))


def run_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_a_multirun_writes_its_summary_and_a_rerun_skips_the_finished_runs(tmp_path):
    args = ["-m", "model=ae,vae", "latent=2,3", "data=digits", *TINY, "hydra.sweep.dir=sweep"]
    vae_run(*args, cwd=tmp_path)
    sweep = tmp_path / "sweep"
    rows = summary_rows(sweep)
    assert sorted((r["model"], r["latent"]) for r in rows) == [
        ("ae", "2"),
        ("ae", "3"),
        ("vae", "2"),
        ("vae", "3"),
    ]
    assert all(float(r["test/reconstruction/mse"]) > 0 and float(r["test/pca_mse"]) > 0 for r in rows)
    assert {"summary.md", "summary.png"} <= {p.name for p in sweep.iterdir()}
    # from Python: the same table as summary.csv, as a DataFrame
    table = vaerun.runs(sweep)
    pd.testing.assert_frame_equal(table, pd.read_csv(sweep / "summary.csv"))
    assert sorted(zip(table["model"], table["latent"], strict=True)) == [
        ("ae", 2),
        ("ae", 3),
        ("vae", 2),
        ("vae", 3),
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no runs"):
        vaerun.runs(tmp_path / "empty")
    stamps = {p: (p / "metrics.json").stat().st_mtime_ns for p in run_dirs(sweep)}

    again = vae_run(*args, cwd=tmp_path)
    assert again.stdout.count("Finished already with this config, skipped") == 4
    assert {p: (p / "metrics.json").stat().st_mtime_ns for p in run_dirs(sweep)} == stamps
    assert "source_used: digits" in (run_dirs(sweep)[0] / ".hydra" / "config.yaml").read_text()

    forced = vae_run(*args[:-1], "hydra.sweep.dir=sweep", "force=true", "latent=2", cwd=tmp_path)
    assert "skipped" not in forced.stdout  # force=true: the runs are made again


@pytest.mark.parametrize(
    ("swept", "message"),
    [
        (["latent=2,x"], "latent=2,x: latent must be an integer >= 1 (the latent dimension), got 'x'"),
        (
            ["data.batch_size=range(0,3)"],
            "data.batch_size=range(0,3): data.batch_size must be an integer >= 1, got 0",
        ),
        (
            ["model=ae,vae", "latent=abc"],
            "latent=abc: latent must be an integer >= 1 (the latent dimension), got 'abc'",
        ),
    ],
)
def test_a_multirun_value_its_key_refuses_is_one_line_before_any_run(tmp_path, swept, message):
    """Every value of the command line, each value of a sweep included, goes through its key's rule before
    the sweep makes its folder: without that check the runs before the bad value would all run first."""
    result = vae_run("-m", *swept, "data=digits", *TINY, "hydra.sweep.dir=sweep", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == f"vae-run: error: {message}; no run started"
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("sweeper", [[], ["hydra/sweeper=optuna", "latent=choice(2, 3)"]])
def test_resume_true_in_a_multirun_is_one_line_pointing_to_the_sweeps_own_way(tmp_path, sweeper):
    """resume=true would move each job into an earlier run's directory, out of the sweep's folder."""
    swept = sweeper or ["latent=2,3"]
    result = vae_run(
        "-m", *swept, "resume=true", "data=digits", "hydra.sweep.dir=sweep", cwd=tmp_path, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "vae-run: error: resume=true continues one run; a sweep (or a search)"
    )
    assert "hydra.sweep.dir=" in result.stderr and not (tmp_path / "sweep").exists()


def test_a_multirun_hydra_refuses_leaves_the_sweep_folder_as_it_found_it(tmp_path):
    """Hydra composes the jobs' configs, and refuses an unknown key or option, only after the sweep's
    folder, its lock and multirun.yaml were made: they go again, with the folders made for them; a folder
    that was there keeps what it held."""
    result = vae_run("-m", "latnt=2,4", "data=digits", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("vae-run: error: latnt: no such key in the config")
    assert list(tmp_path.iterdir()) == []  # no outputs/multirun/DATE/TIME
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    result = vae_run("-m", "model=ae,vea", "hydra.sweep.dir=mine", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "model=vea: no such option" in result.stderr
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_what_the_values_check_leaves_to_hydra_and_to_the_run():
    """A group's options (logger has a rule for its composed entries), deletions, interpolations and the
    sweeps a basic sweep does not take pass; a range is checked value by value."""
    groups = {"logger", "model", "data"}
    allowed = ["logger=csv,tensorboard", "model=ae,vae", "~trainer.max_time", "seed=${oc.env:SEED},3",
               "model.beta=interval(0,1)", "latent=range(1,4)", "data.batch_size=16"]  # fmt: skip
    check_command_line_values(allowed, groups)
    with pytest.raises(ConfigError, match=r"^latent=range\(-1,2\): latent must be an integer >= 1"):
        check_command_line_values(["latent=range(-1,2)"], groups)
    with pytest.raises(ConfigError, match=r"^seed=x,3: seed must be an integer"):
        check_command_line_values(["seed=x,3"], groups)


def test_a_run_that_only_its_whole_config_refuses_fails_alone_and_the_sweep_goes_on(tmp_path):
    """A block 9 pixels wide passes corruption.size's own rule and is refused in its run, on 8 x 8 digits:
    the other run finishes, the summary marks the failed one with its reason, the sweep exits 3."""
    sweep = ["-m", "model=dae", "corruption=block_mask", "corruption.size=9,2", "data=digits", *TINY]
    result = vae_run(*sweep, "stage=train", "hydra.sweep.dir=sweep", cwd=tmp_path, check=False)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1].startswith("vae-run: error: 1 of 2 runs failed, the others")
    rows = {row["corruption.size"]: row for row in summary_rows(tmp_path / "sweep")}
    assert (
        rows["9"]["state"] == "failed"
        and "corruption.size must be an integer in [1, 8]" in rows["9"]["error"]
    )
    assert rows["2"]["state"] == "finished" and float(rows["2"]["val/loss"]) > 0


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    args = ["data=digits", *TINY, "trainer.max_epochs=2", "hydra.run.dir=run"]
    vae_run(*args, cwd=tmp_path)
    run = tmp_path / "run"
    # What a kill after the first checkpoint leaves: the run marked running, no metrics.
    (run / "metrics.json").unlink()
    state = (run / "job.json").read_text().replace('"finished"', '"running"')
    (run / "job.json").write_text(state)
    resumed = vae_run(*args, cwd=tmp_path)
    assert "Resuming from" in resumed.stdout + resumed.stderr
    assert "test/elbo" in read_metrics(run)


def test_another_config_in_a_finished_run_directory_is_refused(tmp_path):
    vae_run("data=digits", *TINY, "hydra.run.dir=run", cwd=tmp_path)
    result = vae_run("data=digits", "latent=3", *TINY, "hydra.run.dir=run", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "holds a run of a different config" in result.stderr
    assert "latent: 16" in (tmp_path / "run" / ".hydra" / "config.yaml").read_text()  # nothing lost


def test_the_joblib_launcher_runs_two_jobs_in_parallel_processes(tmp_path):
    vae_run(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "latent=2,3",
        "data=digits",
        *TINY,
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert sorted(r["latent"] for r in summary_rows(tmp_path / "sweep")) == ["2", "3"]


def test_ddp_on_cpu_with_two_processes_inside_a_multirun_keeps_each_job_in_its_own_directory(tmp_path):
    result = vae_run(
        "-m", "latent=2,3", "device=ddp", "data=digits", *TINY, "hydra.sweep.dir=sweep", cwd=tmp_path
    )
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr
    # every logged value is reduced over the processes: Lightning finds none to warn about
    assert "when logging on epoch level in distributed setting" not in result.stdout + result.stderr
    sweep = tmp_path / "sweep"
    assert [p.name for p in run_dirs(sweep)] == ["0", "1"]
    assert sorted(r["latent"] for r in summary_rows(sweep)) == ["2", "3"]
    for run in run_dirs(sweep):
        metrics = read_metrics(run)
        assert metrics["test/loss"] > 0 and metrics["test/nll_iwae"] > 0
        assert '"finished"' in (run / "job.json").read_text()
        assert len(list((run / "images").glob("*.png"))) >= 4
    assert [p.name for p in tmp_path.iterdir()] == ["sweep"]  # no stray run directory of a second process


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["vae-run", "-m", "latent=2,4", "device=ddp"], ["vae-run", "latent=2", "device=ddp"]),
        (
            ["vae-run", "--config-dir", "mine", "-m", "data=x,y"],
            ["vae-run", "--config-dir", "mine", "latent=2", "device=ddp"],
        ),
        (
            ["vae-run", "-cd=mine", "--multirun", "latent=2,4"],
            ["vae-run", "-cd=mine", "latent=2", "device=ddp"],
        ),
    ],
)
def test_a_ddp_child_gets_the_jobs_own_command_line(argv, expected):
    assert _single_run_argv(argv, ["latent=2", "device=ddp"]) == expected


@pytest.mark.skipif(
    shutil.which("sbatch") is None or "SLURM_CONF" in os.environ or os.path.exists("/etc/slurm/slurm.conf"),
    reason="needs Slurm's sbatch with no cluster configured (as make test installs it)",
)
def test_the_slurm_launcher_without_a_cluster_is_one_line_saying_so(tmp_path):
    result = vae_run("-m", "hydra/launcher=slurm", "data=digits", "latent=2,3", cwd=tmp_path, check=False)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("vae-run: error: hydra/launcher=slurm: sbatch did not submit the jobs: ")
    assert "no Slurm controller answers here" in result.stderr
    assert not (tmp_path / "outputs").exists()  # no job was submitted: the sweep's folder goes too
