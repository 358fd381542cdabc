"""A whole vae-run process, timed from outside: its wall time, and the part after its last line of output
(the interpreter's ending: exit handlers, and the teardown unless vaerun skips it), medians of --repeats.

    python scripts/bench_process.py --repeats 5
    python scripts/bench_process.py --repeats 5 -- data=digits latent=2 stage=train trainer.max_epochs=1

The run is this Python's vaerun (PYTHONPATH chooses another checkout's: `PYTHONPATH=OTHER/src python
scripts/bench_process.py`), by default the 3-epoch train-only Fashion-MNIST command of docs/speed.md's
fixed costs; any overrides after `--` replace it. Each run writes into a fresh temporary folder.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_RUN = [
    "stage=train",
    "data=fashion_mnist",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
]


def timed_run(overrides: list[str]) -> tuple[float, float]:
    """(wall seconds, seconds from the last line of output to the process's end) of one vae-run."""
    with tempfile.TemporaryDirectory(prefix="bench_process_") as folder:
        command = [
            sys.executable,
            "-m",
            "vaerun.cli.main",
            *overrides,
            f"hydra.run.dir={Path(folder) / 'run'}",
        ]
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        last_line = start
        for _ in process.stdout:
            last_line = time.perf_counter()
        status = process.wait()
        end = time.perf_counter()
        if status != 0:
            raise SystemExit(f"bench_process.py: vae-run ended with status {status}: {' '.join(command)}")
    return end - start, end - last_line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "overrides", nargs="*", help="vae-run's overrides (after --); default: " + " ".join(DEFAULT_RUN)
    )
    args = parser.parse_args(argv)
    overrides = args.overrides or DEFAULT_RUN
    import vaerun

    print(f"vaerun from {Path(vaerun.__file__).parent}; {platform.processor() or platform.machine()}")
    print("$ vae-run " + " ".join(overrides))
    walls, endings = zip(*(timed_run(overrides) for _ in range(args.repeats)), strict=True)
    print(f"wall: median {statistics.median(walls):.2f} s (runs: {', '.join(f'{w:.2f}' for w in walls)})")
    print(
        f"after the last line: median {statistics.median(endings):.2f} s "
        f"(runs: {', '.join(f'{e:.2f}' for e in endings)})"
    )


if __name__ == "__main__":
    main()
