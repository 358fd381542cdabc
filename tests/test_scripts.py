"""The scripts run on tiny sizes and print what they promise (their numbers are measured, not tested)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_prints_its_table_and_the_floor_and_vaerun_agree_on_the_elbo():
    args = [
        "--data",
        "digits",
        "--epochs",
        "2",
        "--repeats",
        "1",
        "--limit-batches",
        "4",
        "--matmul-size",
        "128",
        "--methods",
        "abcl",
        "--precision",
        "32-true,bf16-mixed",
    ]
    out = subprocess.run(
        [sys.executable, ROOT / "scripts" / "bench.py", *args], capture_output=True, text=True, check=True
    ).stdout
    fp32, bf16 = out.split("\nbf16-mixed\n")
    rows = {line[0]: line.split() for line in fp32.splitlines() if line[:2] in ("a ", "b ", "c ", "d ", "l ")}
    assert set(rows) == {"a", "b", "c", "d", "l"}
    assert "b/a = " in fp32 and "b/c = " in fp32 and "l/a = " in fp32 and "peak memory" in out
    assert rows["a"][-1] == rows["b"][-1]  # same math, same seed: the same final training ELBO
    assert "largest |ELBO a - ELBO b| over seeds: 0.0000 nats" in fp32
    assert "b / fp32 a = " in bf16  # the bf16 run is compared with the fp32 floor


def test_read_events_lists_scalars_and_images(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tensorboard"))
    writer.add_scalar("val/loss", 1.5, 3)
    writer.close()
    out = subprocess.run(
        [sys.executable, ROOT / "scripts" / "read_events.py", tmp_path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "val/loss" in out and "1.5" in out
