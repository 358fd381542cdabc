"""One writer per run directory: a second process aimed at a directory in use stops with one line naming the
owner, exit 2, touching nothing; a directory whose owner is gone is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, read_metrics, vae_run

from vaerun.cli import run_lock

HOLD = """
import sys, time
from pathlib import Path
from vaerun.cli.run_lock import acquire
acquire(Path(sys.argv[1]), "test")
print("held", flush=True)
time.sleep(120)
"""

TAKE = HOLD.replace("time.sleep(120)", "")  # takes the lock, says so and ends


@pytest.fixture
def holder():
    """Starts another process that holds the lock of a directory (vaerun's own acquire) until killed."""
    processes = []

    def hold(directory: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout.readline().strip() == "held"
        processes.append(process)
        return process

    yield hold
    for process in processes:
        process.kill()
        process.wait()
        process.stdout.close()


def snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(path.relative_to(directory)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_a_second_process_stops_naming_the_owner_and_touches_nothing(tmp_path, holder):
    run_dir = tmp_path / "run"
    owner = holder(run_dir)
    (run_dir / "notes.txt").write_text("the owner's")
    before = snapshot(run_dir)
    result = vae_run("data=digits", *TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vae-run: error: hydra.run.dir: {run_dir} is in use by ")
    assert f"process {owner.pid} on " in lines[0]
    assert snapshot(run_dir) == before  # no .hydra, no log, no checkpoint


def test_a_killed_owners_directory_is_taken_over(tmp_path, holder):
    run_dir = tmp_path / "run"
    owner = holder(run_dir)
    owner.send_signal(signal.SIGKILL)  # its lock goes with it; the file naming it stays behind
    owner.wait()
    assert json.loads((run_dir / run_lock.LOCK_FILE).read_text())["pid"] == owner.pid
    vae_run("data=digits", *TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert "test/loss" in read_metrics(run_dir)
    assert json.loads((run_dir / run_lock.LOCK_FILE).read_text())["pid"] != owner.pid


def test_a_sweep_into_a_sweep_directory_in_use_stops(tmp_path, holder):
    sweep_dir = tmp_path / "sweep"
    holder(sweep_dir)
    sweep = ["-m", "data=digits", "latent=2,4", *TINY, f"hydra.sweep.dir={sweep_dir}"]
    result = vae_run(*sweep, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"vae-run: error: hydra.sweep.dir: {sweep_dir} is in use by ")
    assert sorted(p.name for p in sweep_dir.iterdir()) == [run_lock.LOCK_FILE]


def test_a_process_holds_a_lock_once_and_lets_it_go(tmp_path):
    run_lock.acquire(tmp_path, "hydra.run.dir")
    run_lock.acquire(tmp_path, "hydra.run.dir")  # again from the same process: still its own
    record = json.loads((tmp_path / run_lock.LOCK_FILE).read_text())
    assert record["pid"] == os.getpid() and run_lock.describe(record).startswith(f"process {os.getpid()} on ")
    probe = subprocess.run([sys.executable, "-c", TAKE, str(tmp_path)], capture_output=True, text=True)
    assert probe.returncode == 2 and f"process {os.getpid()} on " in probe.stderr
    run_lock.release(tmp_path)
    probe = subprocess.run([sys.executable, "-c", TAKE, str(tmp_path)], capture_output=True, text=True)
    assert probe.returncode == 0 and probe.stdout.strip() == "held"
