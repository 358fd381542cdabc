"""What defines a model, known without torch: the config groups it is built from, its latent size and
image shape (``ModelSpec``), taken alike by building, the LightningModule's hyperparameters, checkpoints
and ``vaerun.load``; and the depth of a conv net at an image size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vaerun.core.names import DEFAULT_POSTERIOR

#: the config groups a model is built from (vaerun.models.build), whatever else goes with them
MODEL_PARTS = ("model", "encoder", "likelihood", "prior", "posterior")
#: what of a checkpoint defines its model; eval and sample take these from the checkpoint
ARCHITECTURE_KEYS = (*MODEL_PARTS, "corruption", "latent", "image_shape")

#: where a class of an earlier vaerun lived -> where it lives now: checkpoints keep their _target_ paths
_MOVED = {
    "vaerun.autoencoders": "vaerun.models.autoencoders",
    "vaerun.networks": "vaerun.models.networks",
    "vaerun.priors": "vaerun.models.priors",
    "vaerun.posteriors": "vaerun.models.posteriors",
    "vaerun.metflow": "vaerun.models.posteriors",
    "vaerun.hamiltonian": "vaerun.models.posteriors",
    "vaerun.corruption": "vaerun.models.corruption",
    "vaerun.objectives": "vaerun.models.likelihoods",
}


def current_target(target: str) -> str:
    """A ``_target_`` of an earlier vaerun's checkpoint, as it is spelled now (others unchanged)."""
    module, _, name = target.rpartition(".")
    return f"{_MOVED[module]}.{name}" if module in _MOVED else target


def current_targets(node: Any) -> Any:
    """A config node with each ``_target_`` as spelled now (``current_target``)."""
    if isinstance(node, Mapping):
        return {
            key: current_target(value)
            if key == "_target_" and isinstance(value, str)
            else current_targets(value)
            for key, value in node.items()
        }
    return node


@dataclass(frozen=True)
class ModelSpec:
    """A model's config dicts (``_target_`` entries for Hydra's ``instantiate``), latent size and image
    shape: all that rebuilds its architecture."""

    model: dict[str, Any]
    encoder: dict[str, Any]
    likelihood: dict[str, Any]
    prior: dict[str, Any]
    latent: int
    image_shape: tuple[int, ...]
    posterior: dict[str, Any] = field(default_factory=lambda: {"_target_": DEFAULT_POSTERIOR})

    @classmethod
    def from_config(cls, config: Mapping[str, Any], image_shape: Sequence[int]) -> ModelSpec:
        """From a run's config (or a checkpoint's hyperparameters, which keep the same keys). A checkpoint
        of an earlier vaerun may lack the posterior (the Gaussian) and name classes where they used to be."""
        parts = {key: current_targets(config[key]) for key in MODEL_PARTS if config.get(key) is not None}
        return cls(**parts, latent=int(config["latent"]), image_shape=tuple(int(n) for n in image_shape))

    def as_dict(self) -> dict[str, Any]:
        """The spec as the plain values a checkpoint's hyperparameters hold (image_shape as a list)."""
        values = asdict(self)
        values["image_shape"] = list(self.image_shape)
        return values


def conv_depth(image_shape: Sequence[int], smallest: int = 4) -> int:
    """How many stride-2 layers a conv net with ``channels: null`` has: one per halving of height and
    width while both stay even and the result at least ``smallest`` pixels (28 px: 2, 32: 3, 64: 4)."""
    height, width = image_shape[-2:]
    depth = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) // 2 >= smallest:
        height, width, depth = height // 2, width // 2, depth + 1
    return depth
