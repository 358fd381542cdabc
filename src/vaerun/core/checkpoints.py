"""A run directory's checkpoints, for runs (resume, ``ckpt=``) and ``vaerun.load`` alike.

``checkpoints/last.ckpt`` is the newest state, what a killed run resumes from; the best checkpoint is the
one the checkpoint callback recorded as best by validation loss (``checkpoints/best-*.ckpt``; where a
resumed run left several, the one named in last.ckpt's saved callback state). Paths only, torch is
imported only to read a checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaerun.core.errors import first_line

FOLDER = "checkpoints"
LAST = "last.ckpt"


def run_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint file was saved in (``RUN/checkpoints/NAME.ckpt``)."""
    return checkpoint.parent.parent


def last_checkpoint(run_dir: Path) -> Path | None:
    last = run_dir / FOLDER / LAST
    return last if last.is_file() else None


def best_checkpoint(run_dir: Path) -> Path:
    """A run directory's best checkpoint, else its last one; FileNotFoundError where it has neither."""
    folder = run_dir / FOLDER
    best = sorted(folder.glob("best-*.ckpt"))
    if len(best) > 1 and (folder / LAST).is_file():
        state = read_checkpoint(folder / LAST).get("callbacks", {})
        recorded = [Path(v.get("best_model_path", "")).name for v in state.values() if isinstance(v, dict)]
        best = [path for path in best if path.name in recorded] or best
    for candidate in (*best[-1:], folder / LAST):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{run_dir} holds no {FOLDER}/best-*.ckpt or {FOLDER}/{LAST}")


def checkpoint_file(path: Path) -> Path:
    """A checkpoint file as it is, or a run directory's best checkpoint."""
    if path.is_dir():
        return best_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file or run directory: {path}")
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A vaerun checkpoint's contents, loaded with weights_only (reading one cannot run code); ValueError
    for a file that is not one. torch's own advice on its refusals (weights_only=False) is left out."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a truncated or foreign file
        raise ValueError(f"{path} is not a vaerun checkpoint ({refusal_reason(err, path)})") from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= checkpoint.keys():
        raise ValueError(f"{path} is not a vaerun checkpoint (no model hyperparameters in it)")
    return checkpoint


def refusal_reason(err: BaseException, path: Path | str) -> str:
    """torch's reason for refusing the file at ``path``, without its advice to load it with
    weights_only=False (which would let a malicious pickle run code)."""
    try:
        with open(path, "rb") as file:
            head = file.read(2)
    except OSError:  # unreadable: torch's own reason
        head = b"PK"
    # torch.save writes a zip archive, or (long ago, or by hand) a pickle: anything else, a JSON file or a
    # picture, met the weights-only unpickler as bytes it does not know, which is no sign of code
    if head != b"PK" and head[:1] != b"\x80":
        return "not a file torch.save wrote"
    text = str(err)
    if "Weights only load failed" not in text:
        return first_line(err)
    what = next((line.strip() for line in text.splitlines() if "unsupported" in line.lower()), "")
    return "it holds code, not only tensors and plain values; not loaded" + (f": {what}" if what else "")
