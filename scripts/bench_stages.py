"""Every stage of a CelebA-sized 64-px colour run, timed: a folder of 64 x 64 photo crops (CelebA's 202,599
images by default, or --images N), then vae-run with the data=celeba64 preset, one training epoch and the
default stage=all (train, eval, sample), then stage=impute and stage=anomaly from its checkpoint.

    python scripts/bench_stages.py --folder /tmp/vaerun_celeba_stages --images 202599

CelebA itself needs a download; its stand-in is as many JPEG crops of scikit-learn's two photographs
(scripts/bench_memory.py's), one folder per photograph, so that stage=anomaly has a normal class (photo0)
and an anomalous one. Prints each stage's wall time and its parts (vae-run's time/*_s in metrics.json),
eval against the training epoch, and the command of each run; pass more vae-run overrides with --set.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_memory import write_folder

RUN = ["data=celeba64", "data.source.crop=null", "encoder=conv", "likelihood=discretized_logistic"]


def vae_run(*overrides: str) -> float:
    """Runs vae-run (this Python's vaerun) with the overrides; its wall seconds, start-up included."""
    command = [sys.executable, "-m", "vaerun.cli.main", *overrides, "trainer.enable_progress_bar=false"]
    print("$ vae-run " + " ".join(overrides), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def stage_times(run_dir: Path) -> dict[str, float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    times = {key: value for key, value in metrics.items() if key.startswith("time/")}
    return {key[len("time/") : -len("_s")]: value for key, value in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "vaerun_celeba_stages")
    parser.add_argument("--images", type=int, default=202_599)
    parser.add_argument("--out", type=Path, default=None, help="the runs' folder (default: a temporary one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one more override")
    args = parser.parse_args(argv)
    if len(list(args.folder.rglob("*.jpg"))) != args.images:
        seconds = write_folder(args.folder, args.images, class_folders=True)
        print(f"wrote {args.images:,} JPEG crops of 64 x 64 to {args.folder}: {seconds:.0f} s")
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_stages_"))
    data = [f"data.source.path={args.folder}", f"data.source.cache_dir={args.folder}_cache"]
    common = [*RUN, *data, "trainer.max_epochs=1", *args.set]
    walls = {"all": vae_run(*common, f"hydra.run.dir={out / 'all'}")}
    checkpoint = f"ckpt={out / 'all'}"
    walls["impute"] = vae_run(*common, "stage=impute", checkpoint, f"hydra.run.dir={out / 'impute'}")
    anomaly = ["stage=anomaly", "data.normal_class=0", checkpoint, f"hydra.run.dir={out / 'anomaly'}"]
    walls["anomaly"] = vae_run(*common, *anomaly)

    times = {name: stage_times(out / name) for name in walls}
    print(f"\n{args.images:,} images of 3 x 64 x 64; runs in {out}")
    print(f"{'stage':10s} {'seconds':>8s}  parts")
    runs = {"all": ("train", "eval", "sample"), "impute": ("impute",), "anomaly": ("anomaly",)}
    for run, stages in runs.items():
        for stage in stages:
            parts = sorted(
                (name[len(stage) + 1 :], seconds)
                for name, seconds in times[run].items()
                if name.startswith(stage + "_")
            )
            shown = ", ".join(f"{name} {seconds:.1f}" for name, seconds in parts)
            print(f"{stage:10s} {times[run].get(stage, float('nan')):8.1f}  {shown}")
    train, evaluation = times["all"].get("train"), times["all"].get("eval")
    if train and evaluation:
        print(f"eval / training epoch = {evaluation / train:.2f}")
    shown = ", ".join(f"{run} {seconds:.0f}" for run, seconds in walls.items())
    print(f"wall seconds per command, start-up included: {shown}")


if __name__ == "__main__":
    main()
