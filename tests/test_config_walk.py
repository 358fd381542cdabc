"""Every leaf of the composed config, for every option of every group, fed a wrong type and an
out-of-range value (~310 cases): each is refused by the check every run goes through, in a message naming
the key; and a fifth of them, spread over every group, through the real command line (in-process): one line
naming the key, exit 2, no traceback, nothing written. A command line costs ~0.3 s of Hydra's composition
whatever the value, the check alone milliseconds: the composition is the same for every case of an option,
so each option is composed once and each bad value set into a copy, as Hydra applies an override."""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import pytest
from conftest import main_in_process
from filelock import FileLock
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from vaerun.cli import main as cli
from vaerun.cli.main import checked_config
from vaerun.core.checks import ConfigError, leaves, rule_for

pytestmark = pytest.mark.long  # Hydra composes ~110 command lines and ~50 options: 10-15 s a test

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


def composed(overrides: list[str]) -> dict:
    """The config these overrides compose, unresolved (its interpolations as a run's config holds them)."""
    with initialize_config_module("vaerun.configs", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=False)


def walked_leaves(config: dict) -> list[tuple[str, object]]:
    resolved = OmegaConf.to_container(OmegaConf.create(config), resolve=True)
    return [(k, v) for k, v in leaves(resolved) if not k.endswith("._target_") or v is not None]


class Walk(NamedTuple):
    cases: list[tuple[str, str, str]]  # (the option that composes the leaf, key, bad value)
    configs: dict[str, dict]  # each of those options' composed config


def walk_every_option() -> Walk:
    """Every leaf of every option, each with its wrong type and its out-of-range value."""
    found: dict[tuple[str, str], str] = {}
    configs: dict[str, dict] = {}
    for group, options in GROUPS.items():
        for option in options:
            base = [f"{group}={option}"]
            # a key that must be set (data=csv's and data=image_folder's path): checked at load, not here
            config = composed(base)
            missing = [f"{key}=placeholder" for key, value in walked_leaves(config) if value == "???"]
            if missing:
                base += missing
                config = composed(base)
            configs[" ".join(base)] = config
            for key, value in walked_leaves(config):
                if key.startswith("hydra") or (key.split(".")[0] != group and option != options[0]):
                    continue  # the other groups' leaves are walked with their own options
                for bad in (WRONG_TYPE[type(value)], out_of_range(key, value)):
                    if bad is not None:
                        found.setdefault((key, bad), " ".join(base))
    cases = [(option, key, bad) for (key, bad), option in sorted(found.items())]
    return Walk(cases, {option: configs[option] for option in {case[0] for case in cases}})


@pytest.fixture(scope="session")
def walk(tmp_path_factory, worker_id) -> Walk:
    """The walk, composed once for the whole session (~50 compositions, seconds): by the first test
    worker that needs it, into the session's shared temporary folder, where the others read it."""
    if worker_id == "master":  # not distributed: the folder above the session's is shared by sessions
        with reading_configs_once():
            return walk_every_option()
    shared = tmp_path_factory.getbasetemp().parent / "config_walk.json"
    with FileLock(f"{shared}.lock"):
        if not shared.is_file():
            with reading_configs_once():
                shared.write_text(json.dumps(walk_every_option()._asdict()))
        stored = json.loads(shared.read_text())
        return Walk([tuple(case) for case in stored["cases"]], stored["configs"])


@pytest.fixture
def configs_read_once():
    with reading_configs_once():
        yield


def test_every_group_option_is_walked(walk):
    walked = {(group, option) for group, options in GROUPS.items() for option in options}
    assert {("model", "vae_mcmc"), ("encoder", "conv"), ("logger", "csv"), ("data", "image_folder")} <= walked
    assert len(walk.cases) > 300
    assert {case[0] for case in command_line_sample(walk.cases)} == set(walk.configs)


def test_every_wrong_type_or_out_of_range_value_is_refused_naming_the_key(walk):
    """Each bad value set into its option's composed config as Hydra applies an override (parsed by
    Hydra's own override grammar: "12345" an int, "[1,x]" a list), then the check of vae-run's main."""
    parse = OverridesParser.create().parse_override
    failures = []
    for option, key, bad in walk.cases:
        cfg = OmegaConf.create(walk.configs[option])
        OmegaConf.update(cfg, key, parse(f"{key}={bad}").value(), merge=True)
        try:
            checked_config(cfg)
            failures.append(f"{option} {key}={bad}: accepted")
        except ConfigError as err:
            if key not in str(err) or "\n" in str(err):
                failures.append(f"{option} {key}={bad}: {str(err)[:300]!r}")
    assert not failures, f"{len(failures)} of {len(walk.cases)}:\n" + "\n".join(failures)


def command_line_sample(cases: list[tuple[str, str, str]], every: int = 5) -> list[tuple[str, str, str]]:
    """Every ``every``-th case, and the first of each option that those miss: each option's command line."""
    sample = cases[::every]
    missed = {case[0]: case for case in reversed(cases)}  # the first case of each option
    return sample + [case for option, case in missed.items() if option not in {c[0] for c in sample}]


@pytest.mark.parametrize("chunk", range(2))
def test_a_wrong_type_or_out_of_range_value_is_one_line_naming_the_key(
    chunk, walk, tmp_path, capsys, refuse_to_run, configs_read_once
):
    failures = []
    sample = command_line_sample(walk.cases)
    for option, key, bad in sample[chunk::2]:
        run_dir = tmp_path / "run"
        argv = ["vae-run", *option.split(), f"{key}={bad}", f"hydra.run.dir={run_dir}"]
        code = main_in_process(*argv[1:])
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
    assert not failures, f"{len(failures)} of {len(sample[chunk::2])}:\n" + "\n".join(failures)
