"""ckpt=RUN without a data option reads RUN's data: vaerun.cli.checkpoint_data, on a run directory as
Hydra and vaerun leave it (.hydra/config.yaml with what the run recorded, hydra.yaml's choices)."""

from __future__ import annotations

import pytest
import yaml

from vaerun.cli.checkpoint_data import with_the_checkpoints_data
from vaerun.core.errors import ConfigError

COMMAND_LINE = {
    "ckpt": None,
    "seed": 5,
    "data": {"_target_": "default", "batch_size": 128, "normal_class": None},
}


@pytest.fixture
def run(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "checkpoints").mkdir()
    trained = {
        "seed": 3,
        "data": {
            "_target_": "vaerun.data.datamodule.ImageDataModule",
            "seed": "${seed}",
            "batch_size": 32,
            "normal_class": 4,
            "source": {"_target_": "vaerun.data.DigitsSource", "path": "/abs/digits"},
            "source_used": "digits",  # recorded by the run once it read its data
            "classes": ["a", "b"],
        },
    }
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(trained))
    (run_dir / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": {"data": "digits"}}}})
    )
    return run_dir


def test_without_ckpt_or_with_a_data_option_the_command_lines_data_stays(run):
    assert with_the_checkpoints_data(COMMAND_LINE, []) == (COMMAND_LINE, None)
    config = {**COMMAND_LINE, "ckpt": str(run / "checkpoints" / "best.ckpt")}
    assert with_the_checkpoints_data(config, ["data=mnist5k", "data.batch_size=64"]) == (config, None)


def test_ckpt_alone_takes_its_runs_data_resolved_with_the_typed_data_keys_on_top(run):
    config = {
        **COMMAND_LINE,
        "ckpt": str(run / "checkpoints" / "best.ckpt"),
        "data": {**COMMAND_LINE["data"]},
    }
    config["data"]["batch_size"] = 64
    del config["data"]["normal_class"]  # ~data.normal_class
    got, option = with_the_checkpoints_data(config, ["data.batch_size=64", "~data.normal_class", "seed=5"])
    assert option == "digits"
    assert got["data"] == {
        "_target_": "vaerun.data.datamodule.ImageDataModule",
        "seed": 3,  # the run's, as it trained
        "batch_size": 64,
        "source": {"_target_": "vaerun.data.DigitsSource", "path": "/abs/digits"},
    }
    assert got["seed"] == 5 and config["data"]["batch_size"] == 64  # the rest is the command line's


def test_a_runs_data_that_cannot_be_read_is_one_line(run):
    saved = run / ".hydra" / "config.yaml"
    saved.write_text(saved.read_text().replace("${seed}", "${oc.env:VAERUN_NO_SUCH_VARIABLE}"))
    config = {**COMMAND_LINE, "ckpt": str(run / "checkpoints" / "best.ckpt")}
    with pytest.raises(ConfigError, match=r"^ckpt: the data of its run \(.*config.yaml\) cannot be read"):
        with_the_checkpoints_data(config, [])
