"""Robustness end to end: a loss that blows up, reproducible re-runs, Ctrl-C and SIGTERM, SIGKILL."""

from __future__ import annotations

import shlex
import signal
import subprocess
import time

import pytest
from conftest import TINY, read_events, read_metrics, vae_run, without_times


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_term(tmp_path):
    result = vae_run(
        "data=digits",
        "optimizer.lr=1e12",
        *TINY,
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=20",
        "hydra.run.dir=run",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "vae-run: error: the training loss became non-finite at step" in result.stderr
    assert "not finite" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert (tmp_path / "run" / ".hydra").is_dir()  # the run directory and any good checkpoint stay


def test_the_same_config_and_seed_give_the_same_metrics(tmp_path):
    for name in ("first", "second"):
        vae_run("data=digits", "model=dae", "encoder=conv", *TINY, f"hydra.run.dir={name}", cwd=tmp_path)
    assert without_times(read_metrics(tmp_path / "first")) == without_times(read_metrics(tmp_path / "second"))


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_save_a_checkpoint_and_exit(tmp_path, start_vae_run, signum, exit_code):
    args = [
        "data=mnist5k",
        "trainer.max_epochs=200",
        "trainer.enable_progress_bar=false",
        "hydra.run.dir=run",
    ]
    process = start_vae_run(*args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoints = tmp_path / "run" / "checkpoints"
    while not (checkpoints / "last.ckpt").exists() and process.poll() is None:
        time.sleep(0.2)  # polling for a file the run writes, not a timed assertion
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == exit_code, output
    assert "Interrupted: saved" in output and f"vae-run: interrupted by {signum.name}" in output
    assert (checkpoints / "interrupted.ckpt").is_file()
    assert "Traceback" not in output


def test_a_run_killed_with_sigkill_resumes_where_it_left_off_as_if_never_killed(tmp_path, start_vae_run):
    args = [
        "data=digits",
        *TINY,
        "trainer.limit_train_batches=null",
        "trainer.max_epochs=12",
        "eval.iwae_samples=0",
    ]
    vae_run(*args, "hydra.run.dir=uninterrupted", cwd=tmp_path)

    process = start_vae_run(
        *args, "hydra.run.dir=killed", cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    while not last.exists() and process.poll() is None:
        time.sleep(0.05)  # polling for the first checkpoint, not a timed assertion
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "metrics.json").exists(), "the run finished before it could be killed"

    resumed = vae_run(*args, "hydra.run.dir=killed", cwd=tmp_path)
    assert "Resuming from" in resumed.stdout + resumed.stderr
    # Epoch, optimizer, batch order and random state all continue: the same numbers as never killed.
    assert without_times(read_metrics(tmp_path / "killed")) == without_times(
        read_metrics(tmp_path / "uninterrupted")
    )
    steps = [event.step for event in read_events(tmp_path / "killed").Scalars("train/loss_step")]
    assert steps == sorted(set(steps))  # TensorBoard's curve continues without a duplicated step


def test_resume_true_continues_the_latest_unfinished_run_of_the_same_config(tmp_path):
    args = ["data=digits", *TINY, "trainer.max_epochs=2", "eval.iwae_samples=0"]
    vae_run(*args, "hydra.run.dir=outputs/day/first", cwd=tmp_path)
    first = tmp_path / "outputs" / "day" / "first"
    (first / "metrics.json").unlink()  # as if killed after its last checkpoint
    (first / "job.json").write_text((first / "job.json").read_text().replace('"finished"', '"running"'))
    result = vae_run(*args, "resume=true", "hydra.run.dir=outputs/day/second", cwd=tmp_path)
    assert f"continuing {first}" in result.stdout + result.stderr
    assert (first / "metrics.json").is_file() and not (tmp_path / "outputs" / "day" / "second").exists()

    nothing = vae_run(
        *args, "latent=5", "resume=true", "hydra.run.dir=outputs/day/third", cwd=tmp_path, check=False
    )
    assert nothing.returncode == 2 and "resume=true: no unfinished run of this config" in nothing.stderr
    assert "the latest unfinished one" not in nothing.stderr  # the first run finished
    (first / "job.json").write_text((first / "job.json").read_text().replace('"finished"', '"running"'))
    other = vae_run(*args, "latent=5", "resume=true", cwd=tmp_path, check=False)
    assert other.returncode == 2  # another config: the command that would continue the unfinished run
    assert f"the latest unfinished one, {first}, continues with: vae-run {shlex.join(args)} resume=true" in (
        other.stderr
    )
    assert [path.name for path in (tmp_path / "outputs").iterdir()] == ["day"]  # nothing left by the refusal


def test_an_output_directory_that_cannot_be_written_is_one_clear_line(tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    result = vae_run("data=digits", "hydra.run.dir=a_file/run", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "vae-run: error: hydra.run.dir: cannot write to a_file/run: Not a directory" in result.stderr
    result = vae_run("-m", "latent=2,3", "hydra.sweep.dir=a_file/sweep", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "hydra.sweep.dir: cannot write to a_file/sweep" in result.stderr
