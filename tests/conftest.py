"""Shared helpers: running the real ``vae-run`` in a subprocess and reading its TensorBoard events back."""

from __future__ import annotations

import atexit
import functools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch

#: a run of a few batches: enough to exercise every stage, small enough for a 2-core CI machine
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "data.batch_size=32",
    "sample.num_images=8",
    "sample.manifold_size=5",
    "eval.iwae_samples=10",
    "eval.projector_points=50",
    "eval.ais_temperatures=3",
    "eval.ais_images=16",
    "sample.mcmc_steps=2",
]

VAE_RUN = Path(sys.executable).with_name("vae-run")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist every worker (and each vae-run it starts) gets its share of the cores, not all of
    them: two workers with two threads each on two cores spend their time swapping (the AIS tests took 4-5
    times as long). The variable reaches the vae-runs they start; a plugin may have imported torch into
    the worker already, which read it then, so the worker's own torch is set too.

    The suite tests CPU behaviour, the same on a machine with a GPU: CUDA is hidden from it (and from every
    vae-run it starts) unless the run selects the GPU tests, ``pytest -m gpu``."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if "gpu" not in (config.option.markexpr or ""):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items[:] = _dealt_longest_first(items, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_tests:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU: run `pytest -m gpu -p no:benchmark` on one")
        for item in gpu_tests:
            item.add_marker(skip)


#: what a test that starts processes calls (most take 2-40 s; the rest of the suite, a second or less)
_STARTS_PROCESSES = {"vae_run", "run_script", "subprocess", "start_vae_run"}


def _starts_processes(item: pytest.Item) -> bool:
    """Whether the test, a function defined in it or one of its fixtures calls what starts a process."""
    fixtures = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    functions = [getattr(item, "function", None), *(d.func for defs in fixtures.values() for d in defs)]
    names, codes = set(getattr(item, "fixturenames", ())), [getattr(f, "__code__", None) for f in functions]
    while codes:
        code = codes.pop()
        if code is not None:
            names.update(code.co_names)
            codes.extend(const for const in code.co_consts if hasattr(const, "co_names"))
    return bool(_STARTS_PROCESSES & names)


def _dealt_longest_first(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """The tests that start processes or are marked ``long`` first, then the rest, dealt out in turn into
    ``workers`` runs of the list: pytest-xdist's work stealing hands each worker one such run and steals
    from the ends of the queues, so every queue starts with the long tests and ends with short ones, and no
    worker waits at the end while another runs a 30-second test (it did, 25 s of the suite's 7 minutes).
    The same order on every worker, as xdist requires."""
    if workers < 2:
        return items

    def long(item: pytest.Item) -> bool:
        return item.get_closest_marker("long") is not None or _starts_processes(item)

    ordered = sorted(items, key=lambda item: not long(item))  # stable: the files' order kept
    return [item for worker in range(workers) for item in ordered[worker::workers]]


@pytest.fixture
def refuse_to_run(monkeypatch):
    """For ``vaerun.cli.main.main()`` called in the test's process: were a bad config let through, the run
    itself would start (``vaerun.stages.run``); it fails the test instead."""

    def run(cfg, *args, **kwargs):
        raise AssertionError("the config was accepted and the run started")

    monkeypatch.setitem(sys.modules, "vaerun.stages", types.SimpleNamespace(run=run))


def main_in_process(*args: str) -> int:
    """``vae-run ARGS`` as ``vaerun.cli.main.main()`` called in the test's process (with refuse_to_run: the
    checks alone, without a subprocess); its exit status."""
    from hydra.core.global_hydra import GlobalHydra

    from vaerun.cli import main as cli

    GlobalHydra.instance().clear()
    saved, sys.argv = sys.argv, ["vae-run", *args]
    try:
        cli.main()
        return 0
    except SystemExit as stop:
        return stop.code
    finally:
        sys.argv = saved


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU generator seeded at 0: each test's random tensors the same on every run."""
    import torch  # here, as in the hooks: conftest is imported before pytest_configure sets the threads

    return torch.Generator().manual_seed(0)


@pytest.fixture
def start_vae_run():
    """Start ``vae-run`` in the background (subprocess.Popen's keyword arguments); whatever the test's
    outcome, a process still running at its end is killed, so a failed test never leaves a run training."""
    processes: list[subprocess.Popen] = []

    def start(*args: str, cwd: Path, **popen_kwargs) -> subprocess.Popen:
        process = subprocess.Popen([str(VAE_RUN), *args], cwd=cwd, **popen_kwargs)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate()


def vae_run(
    *args: str, cwd: Path, check: bool = True, executable: Path = VAE_RUN
) -> subprocess.CompletedProcess:
    """Run ``vae-run`` to its end. The installed console script itself is forked from a warmed-up server
    (tests/vae_run_server.py: the same ``main``, without ~5 s of imports per run) while CUDA is hidden; with a
    GPU in use (``pytest -m gpu``, where a forked CUDA is not to be trusted), with VAERUN_TEST_FORK=0 and for
    any other ``executable``, a fresh interpreter each time."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    if executable == VAE_RUN and _forking():
        result = _server().run(list(args), cwd=cwd, env=env, timeout=600)
    else:
        result = subprocess.run(
            [str(executable), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600
        )
    if check and result.returncode != 0:
        pytest.fail(f"vae-run {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def run_script(script: Path, *args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS...`` to its end, its output captured; a failure fails the test with it. Forked
    from the same warmed-up server as ``vae_run`` where that forks (most scripts import what vae-run does:
    ~5-10 s each in a fresh interpreter)."""
    argv, cwd = [str(arg) for arg in args], Path.cwd() if cwd is None else cwd
    if _forking():
        result = _server().run(argv, cwd=cwd, env=dict(os.environ), timeout=600, script=Path(script))
    else:
        command = [sys.executable, str(script), *argv]
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        output = f"{result.stdout}\n{result.stderr}"
        pytest.fail(f"{script} {' '.join(argv)} exited {result.returncode}:\n{output}")
    return result


def _forking() -> bool:
    """Whether runs fork from the warmed-up server: while CUDA is hidden, unless VAERUN_TEST_FORK=0."""
    cuda_hidden = os.environ.get("CUDA_VISIBLE_DEVICES") == ""
    return cuda_hidden and os.environ.get("VAERUN_TEST_FORK", "1") != "0"


class _VaeRunServer:
    """The test worker's end of tests/vae_run_server.py: one request at a time (a worker runs one test at a
    time), the child killed if it outlives its timeout."""

    def __init__(self) -> None:
        server = Path(__file__).with_name("vae_run_server.py")
        self.process = subprocess.Popen(
            [sys.executable, str(server), str(VAE_RUN)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reply(timeout=300)  # {"ready": true} once the imports are done

    def _reply(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            raise TimeoutError(f"the vae-run test server gave no answer in {timeout:.0f} s")
        return json.loads(line)

    def run(
        self, args: list[str], cwd: Path, env: dict[str, str], timeout: float, script: Path | None = None
    ) -> subprocess.CompletedProcess:
        """vae-run with these arguments, or ``script`` where given."""
        command = [str(VAE_RUN) if script is None else str(script), *args]
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            request = {"args": args, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            if script is not None:
                request["script"] = str(script.resolve())
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            pid = self._reply(timeout=60)["pid"]
            try:
                returncode = self._reply(timeout)["returncode"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._reply(timeout=60)
                raise subprocess.TimeoutExpired(command, timeout) from None
            return subprocess.CompletedProcess(
                command,
                returncode,
                out.read_text(errors="replace"),
                err.read_text(errors="replace"),
            )

    def close(self) -> None:
        self.process.stdin.close()  # the server's loop ends at end of input
        self.process.wait(timeout=60)
        self.process.stdout.close()


@functools.cache
def _server() -> _VaeRunServer:
    server = _VaeRunServer()
    atexit.register(server.close)
    return server


def read_events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def read_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def shipped_option(group: str, option: str) -> dict:
    """A config group's option as vaerun ships it (configs/GROUP/OPTION.yaml), as a plain dict."""
    from omegaconf import OmegaConf

    import vaerun.configs

    path = Path(vaerun.configs.__file__).parent / group / f"{option}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path))


def without_times(metrics: dict[str, float]) -> dict[str, float]:
    """A run's metrics less its wall times (time/*), which differ from run to run."""
    return {key: value for key, value in metrics.items() if not key.startswith("time/")}


def hparams_of(events) -> tuple[dict, set[str]]:
    """The hparams a run registered for TensorBoard's HParams tab, and the metric tags it pairs them with."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    info = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in info.session_start_info.hparams.items()}
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    return hparams, {metric.name.tag for metric in experiment.metric_infos}
