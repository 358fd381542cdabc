"""A trained model from Python, in a notebook or another program: no config, Trainer or LightningModule to
set up, and neither Lightning nor torchvision is imported.

    import vaerun
    model = vaerun.load("outputs/2026-11-30/12-00-00")      # a run directory: its best checkpoint
    codes = model.encode(images).mean                        # images: uint8, or floats in [0, 1]
    pictures = model.sample(16, temperature=0.8, seed=0)

Images go in as uint8 tensors or arrays (0..255) or as floats in [0, 1], one image (C, H, W) or a batch
(N, C, H, W) of the run's shape (a grey batch may be (N, H, W), any batch may be flat (N, C*H*W)); what
comes out is a float batch on the model's device. Every method runs without gradients.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from vaerun.core.checkpoints import checkpoint_file, read_checkpoint, run_of
from vaerun.core.checks.values import int_at_least, number_in
from vaerun.core.run_files import saved_config
from vaerun.core.spec import ModelSpec, current_targets
from vaerun.models.autoencoders import Autoencoder, VariationalAutoencoder

if TYPE_CHECKING:
    import pandas

    from vaerun.data.tables import TableColumns


class Encoding(NamedTuple):
    """What ``encode`` returns: the code (the posterior mean for a VAE; with a flow posterior, the flow's
    image of its Gaussian's mean), and for a VAE the log-variances of q(z|x)'s Gaussian (None for an AE
    or DAE)."""

    mean: Tensor
    logvar: Tensor | None


def _count(method: str, name: str, value: Any, low: int) -> int:
    """``value`` (a NumPy integer too) as an int of at least ``low``, else the config's ConfigError (a
    ValueError) for ``method: name``."""
    value = value.item() if isinstance(value, np.integer) else value
    int_at_least(low)(f"{method}: {name}", value)
    return value


def _run_config(checkpoint_path: Path, hparams: dict[str, Any]) -> dict[str, Any]:
    """The run's whole config (.hydra/config.yaml beside the checkpoints folder), else the checkpoint's
    model hyperparameters."""
    from omegaconf import OmegaConf

    config = saved_config(run_of(checkpoint_path))
    if config is None:
        return dict(hparams)
    try:
        return OmegaConf.to_container(config, resolve=True)
    except Exception:  # an interpolation of the training machine's environment
        return OmegaConf.to_container(config, resolve=False)


def load(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The model of a checkpoint (a ``.ckpt`` file) or of a run directory (its best checkpoint), in eval
    mode on ``device``. A missing path raises FileNotFoundError; a file that is not a vaerun checkpoint
    raises ValueError. Checkpoints load with weights_only=True: loading one cannot run code."""
    from vaerun.models.build import build_autoencoder

    try:
        checkpoint_path = checkpoint_file(Path(path).expanduser())
        checkpoint = read_checkpoint(checkpoint_path)
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"vaerun.load: {err}") from None
    hparams = dict(checkpoint["hyper_parameters"])
    try:
        model = build_autoencoder(ModelSpec.from_config(hparams, hparams["image_shape"]))
        weights = {
            k[len("model.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")
        }
        model.load_state_dict(weights)
        from hydra.utils import instantiate

        corruption = instantiate(current_targets(hparams["corruption"]))
    except Exception as err:
        raise ValueError(f"vaerun.load: {checkpoint_path} is not a vaerun checkpoint ({err})") from None
    config = _run_config(checkpoint_path, hparams)
    return TrainedModel(model, corruption, config, checkpoint_path, hparams.get("unit_range", True)).to(
        device
    )


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """torch's random numbers from ``seed`` inside, the global state untouched outside; no-op for None."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        yield


class TrainedModel:
    """A trained AE, DAE or VAE for inference. ``config``: the run's config (as in its
    .hydra/config.yaml); ``checkpoint``: the file it came from; ``network``: the torch module itself."""

    def __init__(
        self,
        network: Autoencoder,
        corruption: Any,
        config: dict[str, Any],
        checkpoint: Path,
        unit_range: bool = True,
    ) -> None:
        self.network, self.corruption = network.eval(), corruption
        self.config, self.checkpoint, self.unit_range = config, checkpoint, unit_range

    def __repr__(self) -> str:
        kind, shape = type(self.network).__name__, list(self.image_shape)
        return f"TrainedModel({kind}, latent {self.latent_dim}, images {shape}, {self.checkpoint})"

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.network.image_shape

    @property
    def latent_dim(self) -> int:
        return self.network.latent_dim

    @property
    def is_variational(self) -> bool:
        return isinstance(self.network, VariationalAutoencoder)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: str | torch.device) -> TrainedModel:
        self.network.to(device)
        return self

    @staticmethod
    def _as_tensor(x: Tensor | np.ndarray) -> Tensor:
        if isinstance(x, tuple) and len(x) == 2 and all(isinstance(part, Tensor) for part in x):
            # the commonest slip: encode(model.split("test")), which is (images, labels)
            raise ValueError("images expected, got a pair of tensors: split() gives (images, labels)")
        try:
            return torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"images as a tensor or NumPy array expected, got {type(x).__name__}") from error

    def images(self, x: Tensor | np.ndarray) -> Tensor:
        """``x`` as the model's input: a float batch (N, C, H, W) on its device, uint8 scaled to [0, 1]."""
        x = self._as_tensor(x)
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        x = x.to(self.device, torch.float32)
        shape, size = tuple(self.image_shape), math.prod(self.image_shape)
        grey = shape[0] == 1
        if tuple(x.shape) == shape or (grey and tuple(x.shape) == shape[1:]):  # one image
            x = x.reshape(1, *shape)
        elif (x.dim() == 2 and x.shape[1] == size) or (grey and x.dim() == 3 and x.shape[1:] == shape[1:]):
            x = x.reshape(len(x), *shape)  # flat rows, or a grey batch without its channel
        if tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"images of shape {list(shape)} (or a batch of them) expected, got {list(x.shape)}"
            )
        if not torch.isfinite(x).all():  # NaN passes both range comparisons below
            raise ValueError("images hold NaN or infinite values")
        if self.unit_range and x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError("float images must lie in [0, 1] (or pass uint8 images, 0..255)")
        return x

    def split(self, name: str = "test") -> tuple[Tensor, Tensor]:
        """The run's own ``train``, ``val`` or ``test`` images (uint8, on the CPU) and labels, as the run
        trained and tested on them: its config's data source and split, its static binarisation (the same
        binary images) and its normal class (train and val of that class only). A run that binarised
        dynamically drew fresh binary images at each use: its split keeps the grey levels."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"split: train, val or test, not {name!r}")
        data = self.config.get("data", {})
        source = data.get("source")
        if not isinstance(source, dict):
            raise ValueError(f"split: {self.checkpoint} has no run config (.hydra/config.yaml) beside it")
        from hydra.utils import instantiate

        from vaerun.data.splits import as_trained, normal_label, sized

        source = sized(instantiate(source, _convert_="all"), data.get("image_size"), data.get("channels"))
        splits = source.load()
        normal_class = normal_label(data.get("normal_class"), splits)
        splits = as_trained(
            splits, data.get("binarize", "none"), int(data.get("binarize_seed", 0)), normal_class
        )
        chosen = getattr(splits, name)
        return chosen.images, chosen.labels

    @torch.no_grad()
    def encode(self, x: Tensor | np.ndarray) -> Encoding:
        """The codes of images: (N, latent) means, and for a VAE the log-variances of q(z|x); a VQ-VAE's code
        is its grid of code vectors, flattened (N, grid height x width x latent)."""
        x = self.images(x)
        if self.is_variational:
            return Encoding(*self.network.code_and_logvar(x))
        return Encoding(self.network.encode(x), None)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """The images (N, C, H, W) that codes (N, latent) stand for: the likelihood's mean."""
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        size = self.network.code_size
        if not (z.dim() in (1, 2) and z.shape[-1] == size):
            raise ValueError(f"decode: codes of shape (N, {size}) or ({size},) expected, got {list(z.shape)}")
        return self.network.mean(z.reshape(-1, size))

    @torch.no_grad()
    def reconstruct(self, x: Tensor | np.ndarray) -> Tensor:
        """decode(encode(x).mean): a DAE's denoised images when ``x`` is corrupted."""
        return self.network.reconstruct(self.images(x))

    @torch.no_grad()
    def corrupt(self, x: Tensor | np.ndarray, seed: int | None = None) -> Tensor:
        """The corruption the model was trained with (a DAE's; the images as they are for a model without
        one), with fresh randomness, or the same every time for a given seed."""
        x = self.images(x)
        generator = None if seed is None else torch.Generator(device=x.device).manual_seed(seed)
        return self.corruption(x, generator=generator)

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, seed: int | None = None, codes: Tensor | None = None
    ) -> Tensor:
        """``n`` new images from the model's prior, its spread scaled by ``temperature``. An AE has no
        prior: pass ``codes`` (say ``encode(training_images).mean``) to draw from a Gaussian fitted to
        them; a VQ-VAE fits its PixelCNN code prior to them (``model.code_prior``)."""
        n = _count("sample", "n", n, 0)
        number_in(0, low_open=True)("sample: temperature", temperature)  # as stage=sample's rule
        if codes is None and self.network.prior_is_fitted:
            raise ValueError(
                "sample: an AE, DAE or VQ-VAE has no prior of its own; pass "
                "codes=model.encode(training_images).mean to fit one to them"
            )
        prior = self.network.generative_prior(
            None if codes is None else torch.as_tensor(codes).to(self.device)
        )
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return self.network.mean(self.network.sample_codes(prior, n, generator, temperature))

    @torch.no_grad()
    def elbo(self, x: Tensor | np.ndarray, seed: int | None = None) -> Tensor:
        """The evidence lower bound of log p(x) per image, in nats, from one sample of q(z|x): (N,)."""
        x = self._variational_input(x, "elbo")
        with _seeded(seed, self.device):
            return -self.network.negative_elbo(x, x)

    @torch.no_grad()
    def log_likelihood(self, x: Tensor | np.ndarray, k: int = 100, seed: int | None = None) -> Tensor:
        """The IWAE estimate of log p(x) per image with ``k`` importance samples, in nats: (N,). It rises
        towards log p(x) as k grows; k = 1 is the ELBO."""
        k = _count("log_likelihood", "k", k, 1)
        x = self._variational_input(x, "log_likelihood")
        with _seeded(seed, self.device):
            return self.network.log_likelihood(x, x, k)

    @torch.no_grad()
    def impute(
        self,
        x: Tensor | np.ndarray,
        missing: Tensor | np.ndarray | None = None,
        iterations: int = 20,
        seed: int | None = None,
    ) -> Tensor:
        """``x`` with its missing values filled in by the model and the rest as given: the cells that are
        NaN (a table's empty fields, as ``split()`` gives them) and, where ``missing`` is given (True where
        a value is missing, one per value of ``x``), those. A DAE, AE or VQ-VAE fills them in one pass, a
        VAE by ``iterations`` sweeps of pseudo-Gibbs sampling, as stage=impute does."""
        iterations = _count("impute", "iterations", iterations, 1)
        x = self._as_tensor(x)
        absent = torch.isnan(x) if x.is_floating_point() else torch.zeros_like(x, dtype=torch.bool)
        if missing is not None:
            missing = torch.as_tensor(missing)
            if missing.dtype != torch.bool or missing.numel() != x.numel():
                raise ValueError(f"impute: missing must be a bool mask of x's shape {list(x.shape)}")
            absent = absent | missing.reshape(x.shape)
        x = self.images(torch.where(absent, torch.zeros((), dtype=x.dtype), x))
        present = ~absent.to(x.device).reshape(x.shape)
        with _seeded(seed, self.device):
            return self.network.impute(torch.where(present, x, 0.0), present, iterations)

    def impute_table(
        self, table: str | Path | pandas.DataFrame, iterations: int = 20, seed: int | None = None
    ) -> pandas.DataFrame:
        """A table of a data=csv run's columns (a CSV file's path, or a pandas DataFrame) with its empty
        cells filled in by the model, in the table's own units, as a new DataFrame; its other columns (the
        labels, say) and its present cells as they were."""
        import pandas as pd

        from vaerun.data.tables import numeric_values

        columns = self._table_columns()
        if isinstance(table, pd.DataFrame):
            frame, name = table.copy(), "the table"
        else:
            try:
                frame, name = pd.read_csv(Path(table).expanduser()), Path(table).name
            except (OSError, ValueError, UnicodeDecodeError) as err:
                raise ValueError(f"impute_table: {table} is no readable CSV file ({err})") from None
        absent = [column for column in columns.names if column not in frame.columns]
        if absent:
            raise ValueError(f"impute_table: {name} lacks the run's columns {', '.join(absent)}")
        values = numeric_values(frame[list(columns.names)], "impute_table", name)
        rows = columns.standardised(torch.tensor(values, dtype=torch.float32).reshape(len(frame), 1, 1, -1))
        filled = columns.in_table_units(self.impute(rows, iterations=iterations, seed=seed).cpu())
        filled = np.where(np.isnan(values), filled.reshape(len(frame), -1).double().numpy(), values)
        for index, column in enumerate(columns.names):
            if np.isnan(values[:, index]).any():  # a complete column keeps its values and its dtype
                frame[column] = filled[:, index]
        return frame

    def _table_columns(self) -> TableColumns:
        """The run's table columns and their standardisation: its CSV file's, read again."""
        from hydra.utils import instantiate

        source = self.config.get("data", {}).get("source")
        if not (isinstance(source, dict) and str(source.get("_target_", "")).endswith("CSVSource")):
            raise ValueError("impute_table: the model was not trained on a table (data=csv); use impute()")
        return instantiate(source, _convert_="all").load().columns

    def _variational_input(self, x: Tensor | np.ndarray, method: str) -> Tensor:
        if not self.is_variational:
            raise TypeError(f"{method}: an AE or DAE defines no density p(x); a VAE (model=vae, ...) does")
        return self.images(x)
