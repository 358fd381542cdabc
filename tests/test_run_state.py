import json

import pytest

from vaerun.cli.run_state import fingerprint, plan, record
from vaerun.core.checks import ConfigError

CONFIG = {"latent": 2, "force": False, "data": {"batch_size": 32}}


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("latent: 2\n")
    return tmp_path


def test_fingerprint_ignores_force_only():
    assert fingerprint(CONFIG) == fingerprint({**CONFIG, "force": True})
    assert fingerprint(CONFIG) != fingerprint({**CONFIG, "latent": 3})


def test_a_new_directory_starts_fresh(run_dir):
    assert plan(run_dir, fingerprint(CONFIG), force=False) == plan(run_dir, "other", force=False)
    assert not plan(run_dir, "x", force=False).skip


def test_a_finished_run_is_skipped_and_its_saved_config_put_back(run_dir):
    record(run_dir, "abc", "finished")
    (run_dir / ".hydra" / "config.yaml").write_text("rewritten by hydra\n")
    assert plan(run_dir, "abc", force=False).skip
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "latent: 2\n"


def test_a_killed_run_resumes_from_its_last_checkpoint(run_dir):
    record(run_dir, "abc", "running")
    assert plan(run_dir, "abc", force=False).resume_from is None  # killed before the first checkpoint
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert plan(run_dir, "abc", force=False).resume_from == run_dir / "checkpoints" / "last.ckpt"


def test_another_config_in_the_same_directory_is_refused_and_nothing_is_lost(run_dir):
    record(run_dir, "abc", "finished")
    (run_dir / ".hydra" / "config.yaml").write_text("latent: 3\n")
    with pytest.raises(ConfigError, match=r"holds a run of a different config.*force=true"):
        plan(run_dir, "def", force=False)
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "latent: 2\n"


def test_force_removes_the_earlier_results(run_dir):
    record(run_dir, "abc", "finished")
    (run_dir / "metrics.json").write_text("{}")
    (run_dir / "checkpoints").mkdir()
    assert not plan(run_dir, "def", force=True).skip
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "checkpoints").exists()
    assert not (run_dir / "job.json").exists() and (run_dir / ".hydra").is_dir()


def test_the_state_file_is_plain_json(run_dir):
    record(run_dir, "abc", "running")
    state = json.loads((run_dir / "job.json").read_text())
    assert state["status"] == "running" and state["hydra_files"]["config.yaml"] == "latent: 2\n"


def test_force_removes_what_a_run_wrote_and_keeps_the_rest(tmp_path):
    written = ["checkpoints/last.ckpt", "images/a.png", "metrics.json", "job.json", "csv/metrics.csv",
               "events.out.tfevents.1.host.0", "hparams.yaml", "projector_config.pbtxt",
               "00042/latent_means/tensors.tsv"]  # fmt: skip
    kept = [".hydra/config.yaml", "vae_run.log", "notes.txt"]
    for name in written + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert plan(tmp_path, "abc", force=True) == plan(tmp_path / "new", "abc", force=False)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(kept)


def test_a_sweep_run_directory_name_is_cut_to_what_a_file_system_takes_and_stays_unique():
    from vaerun.cli.run_state import DIRNAME_LIMIT, dirname

    assert dirname("latent=2,model=ae") == "latent=2,model=ae"
    long_a, long_b = "x=1," + "a" * 300, "x=2," + "a" * 300
    assert len(dirname(long_a).encode()) <= DIRNAME_LIMIT
    assert dirname(long_a) == dirname(long_a) != dirname(long_b)  # stable: a re-run finds its runs
    assert len(dirname("é" * 200).encode()) <= DIRNAME_LIMIT  # cut on a character, not inside one
