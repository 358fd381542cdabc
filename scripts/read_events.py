"""Print what a run logged to TensorBoard, for a machine without a browser.

    python scripts/read_events.py outputs/2026-11-23/12-00-00

Lists every scalar tag with its last value and step, and every image tag with its number of images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "run_dir", type=Path, help="a vae-run run directory (it holds its TensorBoard events)"
    )
    args = parser.parse_args()
    # runs made before the events moved into the run directory kept them in tensorboard/
    legacy = args.run_dir / "tensorboard"
    events = EventAccumulator(
        str(legacy if legacy.is_dir() else args.run_dir), size_guidance={"images": 0, "scalars": 0}
    )
    events.Reload()
    tags = events.Tags()
    print(f"{'scalar':40s} {'step':>8s} {'last value':>14s}")
    for tag in sorted(tags["scalars"]):
        last = events.Scalars(tag)[-1]
        print(f"{tag:40s} {last.step:8d} {last.value:14.6g}")
    print(f"\n{'image':40s} {'count':>8s}")
    for tag in sorted(tags["images"]):
        print(f"{tag:40s} {len(events.Images(tag)):8d}")


if __name__ == "__main__":
    main()
