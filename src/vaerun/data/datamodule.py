"""The LightningDataModule: a source's splits on the training device (or in host memory, or mapped from a
file, where they do not fit), served as uint8 batches that become floats in [0, 1] on the device."""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor

from vaerun.core.checks import ConfigError, check_value
from vaerun.data.batches import BatchGroup, TensorBatches, group_size
from vaerun.data.placement import Placement, place
from vaerun.data.splits import Split, Splits, as_trained, normal_label, sized, to_unit_float


def mutate_pixels(images: Tensor, rate: float) -> Tensor:
    """Each pixel (each value of a colour pixel) replaced, with probability ``rate``, by a uniformly drawn
    level 0..255: Ren et al. (2019)'s perturbation for a background model (uint8 in, uint8 out)."""
    replaced = torch.rand(images.shape, device=images.device) < rate
    levels = torch.randint(0, 256, images.shape, device=images.device, dtype=images.dtype)
    return torch.where(replaced, levels, images)


class ImageDataModule(pl.LightningDataModule):
    """Serves a source's splits as uint8 batches; training batches are reshuffled each epoch (``seed``).

    ``binarize``: ``none`` keeps grey levels in [0, 1]; ``dynamic`` re-samples every image as
    Bernoulli(pixel) each time it is drawn (Salakhutdinov & Murray 2008); ``static`` uses one fixed sample
    (drawn with ``binarize_seed``). The likelihoods of the literature are measured on binary data.

    ``dequantize``: training batches of grey levels k become (k + u) / 256 with u ~ U(0, 1) drawn anew each
    time, so that a density on [0, 1] (a Gaussian likelihood) is trained as a density of the 256 bins:
    -log p(x) + D log 256 is then a bound on -log P(x) of the 8-bit data (Theis et al. 2016). Evaluation
    scores the levels k / 255 themselves.

    ``normal_class``: train and validate on the images of that class only (the one-class protocol of
    anomaly detection); the test split keeps every class. A class's name (an image folder's sub-folder)
    becomes its label at setup.

    ``steps_per_group``: training batches come in groups of that many (vaerun.training.step_groups);
    ``limit_train_batches`` (Lightning's, taken over by the groups) is applied here, in batches.

    ``image_size``, ``channels``: what an image folder's source makes of its images (S x S, 1 or 3
    channels); given both, the model's input shape is known before the images are read.

    ``device_memory_fraction``, ``max_host_memory_gb``: where the data lives while the model trains
    (vaerun.data.placement): on the training device when it takes at most that fraction of the device's
    free memory, else in host memory, else (an image folder past ``max_host_memory_gb``; None: half the
    machine's memory) in its memory-mapped cache file.
    """

    def __init__(
        self,
        source,
        image_shape: Sequence[int] | None,
        batch_size: int = 128,
        seed: int = 0,
        binarize: str = "none",
        binarize_seed: int = 0,
        normal_class: int | str | None = None,
        dequantize: bool = False,
        mutation_rate: float = 0.0,
        steps_per_group: int = 1,
        limit_train_batches: int | float | None = None,
        image_size: int | None = None,
        channels: int | None = None,
        device_memory_fraction: float = 0.5,
        max_host_memory_gb: float | None = None,
    ) -> None:
        super().__init__()
        check_value("data.binarize", binarize)
        check_value("data.dequantize", dequantize)
        if dequantize and binarize != "none":
            raise ConfigError(
                f"data.dequantize=true spreads grey levels over their bins; data.binarize={binarize} makes "
                "the images binary: use one of them"
            )
        check_value("data.mutation_rate", mutation_rate)
        self.mutation_rate = float(mutation_rate)
        check_value("data.device_memory_fraction", device_memory_fraction)
        check_value("data.max_host_memory_gb", max_host_memory_gb)
        self.device_memory_fraction, self.max_host_memory_gb = device_memory_fraction, max_host_memory_gb
        self.placement: Placement | None = None
        self.training_device = torch.device("cpu")
        self.source = sized(source, image_size, channels)
        # None: the data's own shape (a CSV file's columns, a folder's images), known once it is loaded;
        # a folder's images resized to a square with given channels have a known shape
        if image_shape is None and image_size is not None and channels is not None:
            image_shape = (channels, image_size, image_size)
        self.image_shape = tuple(int(n) for n in image_shape) if image_shape is not None else None
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.binarize = binarize
        self.binarize_seed = int(binarize_seed)
        self.normal_class = normal_class
        self.dequantize = dequantize
        self.steps_per_group, self.limit_train_batches = steps_per_group, limit_train_batches
        self.splits: Splits | None = None
        self._shuffle = torch.Generator().manual_seed(self.seed)

    def state_dict(self) -> dict[str, Tensor]:
        """Saved in checkpoints: a resumed run shuffles its next epochs as the uninterrupted run would."""
        return {"shuffle_state": self._shuffle.get_state()}

    def load_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        self._shuffle.set_state(state_dict["shuffle_state"])

    def transform(self, images: Tensor, training: bool = False) -> Tensor:
        """uint8 images (on any device) -> the model's float input in [0, 1]; standardised rows with their
        missing cells at the column mean, 0."""
        if images.is_floating_point():
            return torch.nan_to_num(images, nan=0.0)
        if training and self.mutation_rate > 0:
            images = mutate_pixels(images, self.mutation_rate)
        if training and self.dequantize:
            return (images.float() + torch.rand(images.shape, device=images.device)) / 256
        x = to_unit_float(images)
        return torch.bernoulli(x) if self.binarize == "dynamic" else x

    def clip(self, x: Tensor) -> Tensor:
        """A baseline's output brought into the data's range: [0, 1] for images; as it is for tables."""
        return x.clamp(0, 1) if self.unit_range else x

    @property
    def unit_range(self) -> bool:
        """Whether values lie in [0, 1] (images), where clamping, PSNR, SSIM and BCE make sense."""
        self.setup()
        return not self.splits.train.images.is_floating_point()

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:  # loaded once, however many stages run
            self.splits = self._load()
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if device is not None and (self.placement is None or device != self.training_device):
            self.training_device = device  # placed once, however many stages use that device
            self.splits, self.placement = place(
                self.splits, device, self.device_memory_fraction, self.max_host_memory_gb
            )

    def _load(self) -> Splits:
        splits = self.source.load()
        shape = tuple(splits.train.images.shape[1:])
        if self.image_shape is None:
            self.image_shape = shape
        if shape != self.image_shape:
            raise ConfigError(
                f"data.image_shape is {list(self.image_shape)} but source {splits.source} gives {list(shape)}"
            )
        if self.binarize != "none" and splits.train.images.is_floating_point():
            raise ConfigError(f"data.binarize={self.binarize} is for images; {splits.source} is tabular")
        if self.dequantize and splits.train.images.is_floating_point():
            raise ConfigError(f"data.dequantize=true is for 8-bit images; {splits.source} is tabular")
        self.normal_class = normal_label(self.normal_class, splits)
        if self.normal_class is not None:
            labels = splits.train.labels.unique().tolist()
            if self.normal_class not in labels:
                raise ConfigError(
                    f"data.normal_class={self.normal_class}: no training image of {splits.source} has that "
                    f"label; the labels are {', '.join(map(str, labels))}"
                )
        return as_trained(splits, self.binarize, self.binarize_seed, self.normal_class)

    @property
    def source_used(self) -> str:
        self.setup()
        return self.splits.source

    def on_after_batch_transfer(
        self, batch: tuple[Tensor, Tensor], dataloader_idx: int
    ) -> tuple[Tensor, Tensor]:
        """Batches travel to the device as uint8 (4x less to copy) and become floats there."""
        if isinstance(batch, BatchGroup):
            return BatchGroup(self.on_after_batch_transfer(one, dataloader_idx) for one in batch)
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        return self.transform(images, training), labels

    def _batches(self, split: Split, generator: torch.Generator | None = None, **grouping) -> TensorBatches:
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        pin = self.placement is not Placement.DEVICE and self.training_device.type == "cuda"
        return TensorBatches(
            split, self.batch_size, generator, rank=rank, world_size=world_size, pin=pin, **grouping
        )

    def train_dataloader(self) -> TensorBatches:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        return self._batches(
            self.splits.train,
            self._shuffle,
            group=group_size(self.steps_per_group, world_size),
            max_batches=self.limit_train_batches,
        )

    def val_dataloader(self) -> TensorBatches:
        return self._batches(self.splits.val)

    def test_dataloader(self) -> TensorBatches:
        return self._batches(self.splits.test)
