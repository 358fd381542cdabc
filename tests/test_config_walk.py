"""Every leaf of the composed config, for every option of every group, fed a wrong type and an
out-of-range value through the real command line (in-process, so the ~180 cases take seconds): one line
naming the key, exit 2, no traceback, nothing written."""

from __future__ import annotations

import contextlib
import copy
import json
import sys
import types
from pathlib import Path
from unittest import mock

import pytest
from filelock import FileLock
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from vaerun.cli import main as cli
from vaerun.core.checks import leaves, rule_for

CONFIGS = Path(cli.__file__).parents[3] / "configs"
#: group -> its options; every option is walked with the others at their defaults. Not walked: the
#: experiments, the searches and the inference methods, which are bundles of the other groups' options
GROUPS = {
    path.name: sorted(p.stem for p in path.glob("*.yaml") if not p.stem.startswith("_"))
    for path in sorted(CONFIGS.iterdir())
    if path.is_dir() and path.name not in ("hydra", "experiment", "inference", "search", "__pycache__")
}
WRONG_TYPE = {bool: "12345", int: "abc", float: "abc", str: "12345", list: "abc", type(None): "[1,x]"}


def out_of_range(key: str, value):
    """A value of the right type that no rule allows, or None where every value of the type is fine."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) or value is None:
        return "-1000000"
    if isinstance(value, list):
        return "[-1]"
    rule = rule_for(key)
    if rule is not None and getattr(rule, "__qualname__", "").startswith("choice"):
        return "no_such_option"
    return None  # free text: a path, a name


@contextlib.contextmanager
def reading_configs_once():
    """Hydra reads and parses each YAML file of vaerun's configs twice per command; the walk runs ~200
    commands, so each file is parsed once and handed out as a copy (the same content Hydra would read)."""
    from hydra._internal.core_plugins.importlib_resources_config_source import (
        ImportlibResourcesConfigSource as Source,
    )

    read, parsed = Source.load_config, {}

    def load_config(self, config_path: str):
        key = (self.path, config_path)
        if key not in parsed:
            parsed[key] = read(self, config_path)
        return copy.deepcopy(parsed[key])

    with mock.patch.object(Source, "load_config", load_config):
        yield


def composed_leaves(overrides: list[str]) -> list[tuple[str, object]]:
    with initialize_config_module("vaerun.configs", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    container = OmegaConf.to_container(cfg, resolve=True)
    return [(k, v) for k, v in leaves(container) if not k.endswith("._target_") or v is not None]


def cases() -> list[tuple[str, str, str]]:
    """(the option that composes the leaf, key, bad value) for every leaf of every option."""
    found: dict[tuple[str, str], str] = {}
    for group, options in GROUPS.items():
        for option in options:
            base = [f"{group}={option}"]
            # a key that must be set (data=csv's and data=image_folder's path): checked at load, not here
            composed = composed_leaves(base)
            missing = [f"{key}=placeholder" for key, value in composed if value == "???"]
            if missing:
                base += missing
                composed = composed_leaves(base)
            for key, value in composed:
                if key.startswith("hydra") or (key.split(".")[0] != group and option != options[0]):
                    continue  # the other groups' leaves are walked with their own options
                for bad in (WRONG_TYPE[type(value)], out_of_range(key, value)):
                    if bad is not None:
                        found.setdefault((key, bad), " ".join(base))
    return [(option, key, bad) for (key, bad), option in sorted(found.items())]


@pytest.fixture(scope="session")
def walk(tmp_path_factory, worker_id) -> list[tuple[str, str, str]]:
    """The cases, composed once for the whole session (~50 compositions, seconds): by the first test
    worker that needs them, into the session's shared temporary folder, where the others read them."""
    if worker_id == "master":  # not distributed: the folder above the session's is shared by sessions
        with reading_configs_once():
            return cases()
    shared = tmp_path_factory.getbasetemp().parent / "config_walk_cases.json"
    with FileLock(f"{shared}.lock"):
        if not shared.is_file():
            with reading_configs_once():
                shared.write_text(json.dumps(cases()))
        return [tuple(case) for case in json.loads(shared.read_text())]


@pytest.fixture
def configs_read_once():
    with reading_configs_once():
        yield


@pytest.fixture
def refuse_to_run(monkeypatch):
    """Were a bad value let through, the run itself would start: it fails the test instead."""

    def run(cfg, *args, **kwargs):
        raise AssertionError("the bad value was accepted and the run started")

    monkeypatch.setitem(sys.modules, "vaerun.stages", types.SimpleNamespace(run=run))


def test_every_group_option_is_walked(walk):
    walked = {(group, option) for group, options in GROUPS.items() for option in options}
    assert {("model", "vae_mcmc"), ("encoder", "conv"), ("logger", "csv"), ("data", "image_folder")} <= walked
    assert len(walk) > 150


@pytest.mark.parametrize("chunk", range(4))
def test_a_wrong_type_or_out_of_range_value_is_one_line_naming_the_key(
    chunk, walk, tmp_path, capsys, refuse_to_run, configs_read_once
):
    failures = []
    for option, key, bad in walk[chunk::4]:
        run_dir = tmp_path / "run"
        argv = ["vae-run", *option.split(), f"{key}={bad}", f"hydra.run.dir={run_dir}"]
        GlobalHydra.instance().clear()
        sys_argv, sys.argv = sys.argv, argv
        try:
            cli.main()
            code = 0
        except SystemExit as exit:
            code = exit.code
        finally:
            sys.argv = sys_argv
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        ok = (
            code == 2
            and len(lines) == 1
            and lines[0].startswith("vae-run: error: ")
            and key in lines[0]
            and "Traceback" not in err
            and not run_dir.exists()
        )
        if not ok:
            failures.append(f"{' '.join(argv[1:-1])}: exit {code}, {err.strip()[:300]!r}")
    assert not failures, f"{len(failures)} of {len(walk[chunk::4])}:\n" + "\n".join(failures)
