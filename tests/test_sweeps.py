"""The sweep summary, on hand-made run directories."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from vaerun.cli.summary import main
from vaerun.evaluation.run_records import find_runs, load_run
from vaerun.evaluation.summaries import plotted_lines, summarize, swept_keys


def make_run(path: Path, model: str, overrides: list[str], metrics: dict) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (path / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": {"model": model}}}})
    )
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


@pytest.fixture
def sweep(tmp_path) -> Path:
    for number, (model, latent) in enumerate([("ae", 2), ("ae", 8), ("vae", 2), ("vae", 8)]):
        metrics = {
            "test/loss": 100.0 - latent - (model == "vae"),
            "test/reconstruction/mse": 0.1 / latent,
            "test/pca_mse": 0.2 / latent,
            "test/binarize": "none",  # not a number: kept out of the summary
        }
        if model == "vae":
            metrics["test/nll_iwae"] = 90.0 - latent
        make_run(
            tmp_path / "sweep" / str(number),
            model,
            [f"model={model}", f"latent={latent}", "data=digits"],
            metrics,
        )
    return tmp_path / "sweep"


def test_summary_has_one_row_per_run_with_overrides_and_metrics(sweep):
    records = summarize([sweep], sweep)
    assert len(records) == 4
    with open(sweep / "summary.csv") as handle:
        header, *_ = csv.reader(handle)
        handle.seek(0)
        rows = list(csv.DictReader(handle))
    assert header[:4] == ["run", "model", "data", "latent"]  # model=... is the model column, not a second one
    assert [(r["model"], r["latent"]) for r in rows] == [("ae", "2"), ("ae", "8"), ("vae", "2"), ("vae", "8")]
    assert float(rows[1]["test/reconstruction/mse"]) == pytest.approx(0.1 / 8)
    assert rows[0]["test/nll_iwae"] == "" and float(rows[2]["test/nll_iwae"]) == 88.0
    assert "test/binarize" not in rows[0]
    markdown = (sweep / "summary.md").read_text()
    assert "Common to all runs: data=digits" in markdown
    assert "| # | model | latent | test/loss | test/nll_iwae | test/reconstruction/mse" in markdown
    assert markdown.count("\n| ") == 5  # header and four runs
    assert (sweep / "summary.png").stat().st_size > 10_000


def test_swept_keys_are_the_ones_that_vary(sweep):
    from vaerun.evaluation.run_records import load_run

    records = [load_run(path) for path in find_runs([sweep])]
    assert swept_keys(records) == ["latent", "model"]


@pytest.mark.parametrize("broken", ["", "{not json", "[1, 2]", "\udcff"])
def test_a_record_file_that_is_not_vaeruns_json_marks_its_run_failed_and_the_others_are_summarised(
    sweep, broken, capsys
):
    (sweep / "1" / "metrics.json").write_bytes(broken.encode("utf-8", "surrogateescape"))
    main([str(sweep)])
    assert "4 runs" in capsys.readouterr().out
    with open(sweep / "summary.csv") as handle:
        rows = {row["run"]: row for row in csv.DictReader(handle)}
    assert rows["1"]["state"] == "failed" and rows["1"]["model"] == "ae" and rows["1"]["latent"] == "8"
    assert rows["1"]["error"].startswith("metrics.json is unreadable (")
    assert all(rows[run]["state"] == "finished" and rows[run]["test/loss"] for run in ("0", "2", "3"))


def test_the_command_rebuilds_a_summary_from_runs_of_different_sweeps(sweep, tmp_path, capsys):
    other = make_run(tmp_path / "elsewhere" / "run", "ae", ["model=ae", "latent=32"], {"test/loss": 50.0})
    main([str(sweep), str(other), "--out", str(tmp_path / "combined")])
    assert "5 runs" in capsys.readouterr().out
    with open(tmp_path / "combined" / "summary.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 5


def test_the_command_says_when_there_is_nothing_to_summarise(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 1
    assert "no runs (no metrics.json)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2


def test_a_sweep_without_a_numeric_axis_gets_no_plot_and_says_so(tmp_path, capsys):
    for estimator in ("reparam", "reinforce"):
        make_run(tmp_path / estimator, "vae", [f"model.estimator={estimator}"], {"test/loss": 100.0})
    (tmp_path / "summary.png").write_bytes(b"an older sweep's plot")
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "2 runs" in out and "(and summary.csv)" in out
    assert not (tmp_path / "summary.png").exists()  # not left to pass for a plot of these runs


def test_a_sweep_of_training_alone_is_summarised_by_its_best_validation_loss(tmp_path):
    for number, latent in enumerate((2, 8)):  # stage=train: metrics.json holds val/loss and the time
        metrics = {"val/loss": 30.0 - latent, "time/train_s": 1.5 + number}
        make_run(tmp_path / str(number), "vae", [f"latent={latent}"], metrics)
    assert len(summarize([tmp_path], tmp_path)) == 2
    table = (tmp_path / "summary.md").read_text().splitlines()
    assert "| # | model | latent | val/loss |" in table and "| 1 | vae | 8 | 22 |" in table
    assert (tmp_path / "summary.png").is_file()


def test_runs_that_differ_in_their_seed_alone_are_one_point_with_its_spread(tmp_path):
    """-m latent=2,8 optimizer.lr=...,... seed=0,1: a line per learning rate, each point the mean over the
    seeds with their standard deviation, and a table of the same beside the runs' own."""
    runs = [(latent, lr, seed) for latent in (2, 8) for lr in ("0.001", "0.01") for seed in (0, 1)]
    for number, (latent, lr, seed) in enumerate(runs):
        metrics = {"test/loss": 30.0 - latent + (1.0 if lr == "0.01" else 0.0) + 2.0 * seed}
        overrides = [f"latent={latent}", f"optimizer.lr={lr}", f"seed={seed}"]
        make_run(tmp_path / str(number), "vae", overrides, metrics)
    records = summarize([tmp_path], tmp_path)
    lines = plotted_lines(records, "test/loss", "latent", ["optimizer.lr"])
    spread = math.sqrt(2.0)  # the sample standard deviation of two values 2 apart
    assert [(label, xs, means) for label, xs, means, _ in lines] == [
        ("vae, optimizer.lr=0.001", [2.0, 8.0], [29.0, 23.0]),
        ("vae, optimizer.lr=0.01", [2.0, 8.0], [30.0, 24.0]),
    ]
    assert all(sd == pytest.approx(spread) for *_, spreads in lines for sd in spreads)
    table = (tmp_path / "summary.md").read_text().splitlines()
    assert "Over seed: mean ± standard deviation" in table
    assert "| model | latent | optimizer.lr | runs | test/loss |" in table
    assert "| vae | 2 | 0.001 | 2 | 29 ± 1.4 |" in table and "| vae | 8 | 0.01 | 2 | 24 ± 1.4 |" in table
    assert (tmp_path / "summary.png").is_file()


def test_a_sweep_of_one_run_per_config_has_no_table_over_seeds(sweep):
    summarize([sweep], sweep)
    assert "Over seed" not in (sweep / "summary.md").read_text()


def test_a_sweep_without_any_metric_is_summarised_without_a_plot(tmp_path):
    for number, latent in enumerate((2, 8)):  # trainer.limit_val_batches=0: the stage's time only
        make_run(tmp_path / str(number), "vae", [f"latent={latent}"], {"time/train_s": 1.5 + number})
    assert len(summarize([tmp_path], tmp_path)) == 2
    assert (tmp_path / "summary.csv").is_file() and not (tmp_path / "summary.png").exists()


def test_a_deleted_key_among_a_runs_overrides_is_no_column_and_breaks_no_row(tmp_path):
    make_run(tmp_path / "sweep" / "0", "vae", ["latent=2", "~logger", "+trainer.limit_val_batches=1"], {})
    record = load_run(tmp_path / "sweep" / "0")
    assert record.overrides == {"latent": "2", "trainer.limit_val_batches": "1"} and record.model == "vae"


def test_the_commands_bad_input_is_one_line(capsys, tmp_path):
    (tmp_path / "metrics.json").write_text("{}")  # a run's file, given in place of its directory
    for argv, said in (
        ([], "the following arguments are required: paths"),
        ([str(tmp_path / "nothing")], f"no such directory: {tmp_path / 'nothing'}"),
        (["--latest", str(tmp_path)], "unrecognized arguments: --latest"),
        (
            [str(tmp_path / "metrics.json")],
            f"{tmp_path / 'metrics.json'} is a file; give run or sweep directories",
        ),
        (
            [str(tmp_path), "-o", str(tmp_path / "metrics.json")],
            f"--out {tmp_path / 'metrics.json'} is a file",
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"vae-run-summary: error: {said}") and err.endswith(" (see --help)\n")
        assert err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:  # no runs: said before anything is written
        main([str(tmp_path / "empty")])
    assert exit_info.value.code == 1 and "error: no runs (no metrics.json) under" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []


def test_the_command_prints_its_version_on_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    said = capsys.readouterr().out
    assert said.startswith("vae-run-summary ") and "pytorch-lightning" in said and said.count("\n") == 1
