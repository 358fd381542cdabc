"""A run put together from its config: data, model, loggers, callbacks and the Trainer.

``setup`` does everything that can fail on bad input before anything is written to the run directory.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import sys
import warnings
from collections.abc import Collection, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from vaerun.core.checkpoints import FOLDER as CHECKPOINT_FOLDER
from vaerun.core.checks import ConfigError, check_shape_dependent, leaves
from vaerun.core.errors import first_line
from vaerun.core.host_memory import keep_freed_memory
from vaerun.core.run_files import config_path, saved_config
from vaerun.core.spec import MODEL_PARTS, ModelSpec
from vaerun.data.datamodule import ImageDataModule
from vaerun.data.splits import Splits
from vaerun.models.likelihoods import DENSITY
from vaerun.search.study import TrialHandle
from vaerun.stages.checkpoints import checkpoint_step, load_module, reconcile_with_checkpoint
from vaerun.stages.context import Run
from vaerun.stages.machine import check_machine
from vaerun.training.adapters import hush_lightning_tips, hush_unused_srun_outside_slurm
from vaerun.training.callbacks import EncoderGradientVariance, ReconstructionImages
from vaerun.training.graphs import CudaGraphs, StepGraphs
from vaerun.training.guards import AtomicCheckpointIO, InterruptCheckpoint, Interruptions, LatestCheckpoint
from vaerun.training.module import AutoencoderModule
from vaerun.training.step_groups import StepGroups, StepProgressBar
from vaerun.training.trackers import run_arguments
from vaerun.training.visualisation import ImageSink

log = logging.getLogger(__name__)


def module_hparams(
    cfg: dict[str, Any], choices: dict[str, str], datamodule: ImageDataModule | None = None
) -> dict[str, Any]:
    """The LightningModule's hyperparameters from a run's config; the image shape and value range come
    from the data where given (a CSV file's columns are known only once it is read)."""
    image_shape = datamodule.image_shape if datamodule is not None else cfg["data"]["image_shape"] or ()
    hparams = ModelSpec.from_config(cfg, image_shape).as_dict()
    hparams.update(corruption=cfg["corruption"], optimizer=cfg["optimizer"], choices=choices)
    hparams.update(lr_schedule=cfg.get("lr_schedule"))
    if datamodule is not None:
        hparams.update(unit_range=datamodule.unit_range)
    return hparams


@rank_zero_only
def _record_source(run_dir: Path, datamodule: ImageDataModule) -> None:
    """The data set actually used (mnist may fall back to mnist5k), its class names (an image folder's)
    and the absolute path of a folder or file it was read from go into the run's saved config, so that
    the run's data can be found again from any directory (vaerun.load's ``split``, ``ckpt=RUN``). A
    source that fell back is saved as its fallback: found again, the data is what the run read, not a
    download of the full set where a network answers."""
    config = saved_config(run_dir)
    if config is not None:
        config.data.source_used = datamodule.source_used
        fallback = getattr(datamodule.source, "fallback", None)
        if (
            fallback is not None
            and datamodule.source_used == fallback.name
            and "fallback" in config.data.source
        ):
            config.data.source = OmegaConf.to_container(config.data.source.fallback, resolve=True)
        if datamodule.splits.classes:
            config.data.classes = list(datamodule.splits.classes)
        path = getattr(datamodule.source, "path", None)
        if isinstance(path, Path) and "path" in config.data.source:
            config.data.source.path = str(path.resolve())
        OmegaConf.save(config, config_path(run_dir))


def _warn_if_no_step_is_logged(steps_per_epoch: int, trainer: dict[str, Any]) -> None:
    """Lightning's own warning of this counts items, which are groups of steps here: it is replaced."""
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than")
    every = trainer.get("log_every_n_steps") or 1
    epochs = trainer.get("max_epochs") or 0
    if 0 < steps_per_epoch * epochs < every:
        log.warning(
            "%d training steps in all, fewer than trainer.log_every_n_steps=%d: no step's loss is logged",
            steps_per_epoch * epochs,
            every,
        )


def _tune_cpu_run(trainer: pl.Trainer) -> None:
    """Two fixed costs of a run on the CPU, cut. Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1
    (so that asking whether CUDA is there does not initialise it in a process that forks later). torch's
    Adam asks at every step, and with the variable set a CUDA build of torch that never initialises CUDA
    opens the NVML library each time: about 70 us a step on the CPU. A run on the CPU uses no CUDA in this
    process or its children, so the plain check serves it. And the C allocator keeps freed blocks for the
    next step's tensors (vaerun.core.host_memory)."""
    if isinstance(trainer.accelerator, CPUAccelerator):
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        keep_freed_memory()


def _use_cuda_graphs(cfg: dict[str, Any], module: AutoencoderModule, trainer: pl.Trainer) -> None:
    """``cuda_graphs``: the training step as a CUDA graph (vaerun.training.graphs), on one CUDA device and
    without fp16's gradient scaler (its check for infinite gradients reads them back on the host)."""
    if not cfg["cuda_graphs"] or trainer.strategy.root_device.type != "cuda":
        return
    if trainer.world_size > 1 or str(trainer.precision).startswith("16"):
        log.info("cuda_graphs: off (it serves one device, without 16-bit gradient scaling)")
        return
    module.use_step_graphs(StepGraphs(CudaGraphs()))


def refusal(err: Exception, cfg: dict[str, Any], within: str = "") -> ConfigError:
    """A library's refusal of the config while the run is built, as one line that names the config key:
    the node under ``within`` whose ``_target_`` the message names (Hydra names the class it failed to
    locate or call; torch names the class whose __init__ refused a keyword), else ``within`` itself."""
    if isinstance(err.__cause__, ConfigError):  # a part's own check, which names its key already
        return err.__cause__
    message = str(err)
    node = cfg
    for part in filter(None, within.split(".")):
        node = node[part]
    named = [
        key.removesuffix("._target_").removesuffix("_target_")
        for key, value in leaves(node, within)
        if key.endswith("_target_")
        and isinstance(value, str)
        and re.search(rf"\b{re.escape(value.rsplit('.', 1)[-1])}\b", message)
    ]
    key = max(named, key=len, default=within or "config").rstrip(".") or "config"
    cause = err.__cause__ or err  # Hydra chains the library's own exception
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    reason = " ".join(lines[:2]) if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return ConfigError(f"{key}: {reason}")


def build_loggers(cfg: dict[str, Any], run_dir: Path, resume_from: Path | None) -> list[Logger]:
    """One logger per entry of the ``logger`` group, each writing under the run directory."""
    loggers = []
    for name, spec in cfg["logger"].items():
        try:
            arguments = run_arguments(spec["_target_"], spec, run_dir)
            make: partial = instantiate(spec, **arguments, _partial_=True)
            if isinstance(make.func, type) and issubclass(make.func, TensorBoardLogger) and resume_from:
                # TensorBoard hides what the killed run logged after its checkpoint: no step appears twice
                make = partial(make, purge_step=checkpoint_step(resume_from))
            loggers.append(make())
        except Exception as err:
            raise refusal(err, cfg, f"logger.{name}") from None
    return loggers


def build_callbacks(
    cfg: dict[str, Any], run_dir: Path, sink: ImageSink, interruptions: Interruptions
) -> tuple[ModelCheckpoint, list[pl.Callback]]:
    """The ``callbacks`` group's callbacks (its model_checkpoint writes the best checkpoint to the run's
    checkpoints/, what eval reads), and vaerun's own: the newest state in checkpoints/last.ckpt (what
    resuming reads), the checkpoint on interruption, the reconstructions of every validation, the
    diagnostics asked for, the progress bar."""
    checkpoint_dir = run_dir / CHECKPOINT_FOLDER
    callbacks = []
    for name, spec in cfg["callbacks"].items():
        fixed = {"dirpath": checkpoint_dir, "save_last": False} if name == "model_checkpoint" else {}
        try:
            callbacks.append(instantiate(spec, **fixed))
        except Exception as err:
            raise refusal(err, cfg, f"callbacks.{name}") from None
    checkpoint = callbacks[list(cfg["callbacks"]).index("model_checkpoint")]
    callbacks += [
        LatestCheckpoint(checkpoint_dir),
        InterruptCheckpoint(checkpoint_dir, interruptions),
        ReconstructionImages(sink, cfg["sample"]["num_reconstructions"], cfg["seed"]),
    ]
    log_every = cfg["trainer"].get("log_every_n_steps") or 1
    if cfg["diagnostics"]["gradient_variance_samples"]:
        callbacks.append(EncoderGradientVariance(cfg["diagnostics"]["gradient_variance_samples"], log_every))
    trial = TrialHandle.from_env()
    if trial is not None:  # a trial of hydra/sweeper=optuna: its epochs go to the study, which may prune it
        from vaerun.training.pruning import TrialPruning

        callbacks.append(TrialPruning(trial))
    return checkpoint, callbacks


def build_module(
    cfg: dict[str, Any],
    choices: dict[str, str],
    overridden: set[str],
    datamodule: ImageDataModule,
    step_groups: StepGroups,
) -> AutoencoderModule:
    """The model of ``ckpt`` (its architecture, with a corruption typed on the command line), else a new
    one from the config; its optimizer is built once here, so that a keyword torch refuses is refused
    before the run writes anything."""
    try:
        if cfg["ckpt"] is not None:
            module = load_module(cfg["ckpt"], datamodule.image_shape)
            reconcile_with_checkpoint(cfg, module, overridden)
        else:
            module = AutoencoderModule(**module_hparams(cfg, choices, datamodule))
        module.configure_training(step_groups)
        module.configure_optimizers()
    except ConfigError:
        raise
    except Exception as err:
        model_keys = (*MODEL_PARTS, "corruption", "optimizer", "lr_schedule")
        raise refusal(err, {key: cfg[key] for key in model_keys}) from None
    if cfg["compile"] and module.model.forward_takes_gradients:
        raise ConfigError(
            "compile=true: this posterior's steps take gradients of log p(x, z), and torch.compile cannot "
            "differentiate through them (double backward); set compile=false"
        )
    if cfg["compile"]:
        module.compile_training_loss()
        module.fuse_likelihood_kernels()
    return module


def build_trainer(
    cfg: dict[str, Any],
    trainer_kwargs: dict[str, Any],
    step_groups: StepGroups,
    loggers: list[Logger],
    callbacks: list[pl.Callback],
    run_dir: Path,
) -> pl.Trainer:
    """Lightning's Trainer with the config's arguments (those the step groups take over removed), and a
    progress bar for a person at a terminal, not for a log file (``enable_progress_bar: null``)."""
    if trainer_kwargs.get("enable_progress_bar") is None:
        trainer_kwargs = {**trainer_kwargs, "enable_progress_bar": sys.stderr.isatty()}
    if trainer_kwargs["enable_progress_bar"]:
        # The bar counts steps and redraws at about the logging rate (the values it shows change no more
        # often), not every step; it can only move once per group of steps.
        log_every = cfg["trainer"].get("log_every_n_steps") or 1
        callbacks = [*callbacks, StepProgressBar(refresh_rate=max(1, log_every // step_groups.size))]
    hush_unused_srun_outside_slurm()
    hush_lightning_tips()
    try:
        return pl.Trainer(
            **trainer_kwargs,
            logger=loggers,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
            default_root_dir=str(run_dir),
        )
    except Exception as err:  # Lightning's own checks of its arguments (MisconfigurationException, ...)
        raise ConfigError(f"trainer: {first_line(err)}") from None


def check_splits_hold_images(
    splits: Splits, splits_read: Collection[str], cfg: dict[str, Any], normal_class: int | None
) -> None:
    """One line, before anything is written, for a split the run's stages read that holds no images (a
    small folder or CSV file whose fractions round to none), or a test split without the two kinds of
    image the anomaly stage compares, instead of a failure or NaN scores after training."""
    sizes = ", ".join(f"{split} {len(getattr(splits, split))}" for split in ("train", "val", "test"))
    for name, what, why in (
        ("val", "validation", "training keeps its best checkpoint by val/loss"),
        ("test", "test", f"stage={cfg['stage']} reads it"),
    ):
        if name in splits_read and len(getattr(splits, name)) == 0:
            # the test split keeps every class
            filtered = normal_class is not None and name == "val"
            kept = f" once only data.normal_class={normal_class} is kept" if filtered else ""
            settings = [
                f"data.source.{key}={value}" for key, value in cfg["data"]["source"].items() if name in key
            ]
            raise ConfigError(
                f"data: the {what} split of {splits.source} is empty{kept} ({sizes}): "
                f"{why}; use more data, or a larger share for that split"
                + (f" ({', '.join(settings)})" if settings else "")
            )
    if cfg["stage"] == "anomaly" and normal_class is not None:
        classes = sorted(set(splits.test.labels.tolist()))
        if normal_class not in classes or len(classes) < 2:
            raise ConfigError(
                f"data.normal_class={normal_class}: the test split of {splits.source} holds images of "
                f"{'class' if len(classes) == 1 else 'classes'} {', '.join(map(str, classes))} only: anomaly "
                "detection scores the normal class against the others and needs both"
            )


def check_likelihood_fits_values(
    cfg: dict[str, Any], choices: dict[str, str], datamodule: ImageDataModule
) -> None:
    """A likelihood of values in [0, 1] (binary, or the 256 levels of 8-bit images) on a table's standardised
    columns: one line, instead of a model of values the data do not take (or a keyword the table's
    likelihood settings give the other likelihood)."""
    likelihood = get_class(cfg["likelihood"]["_target_"])
    if getattr(likelihood, "values", DENSITY) != DENSITY and not datamodule.unit_range:
        raise ConfigError(
            f"likelihood={choices.get('likelihood', likelihood.__name__)}: {datamodule.source_used} holds "
            "standardised table columns, not the values in [0, 1] this likelihood models; use "
            "likelihood=gaussian"
        )


def build_data(
    cfg: dict[str, Any], choices: dict[str, str], step_groups: StepGroups, splits_read: Collection[str]
) -> ImageDataModule:
    """The data, read, with the checks that need it: the splits the stages read hold images, the likelihood
    models the data's values, and (where the config left the shape to the data) the shape's checks."""
    try:  # partial: instantiate would turn the StepGroups dataclass into a config node
        make_datamodule = instantiate(cfg["data"], _convert_="all", _partial_=True)
        datamodule: ImageDataModule = make_datamodule(
            steps_per_group=step_groups.size, limit_train_batches=step_groups.limit_train_batches
        )
    except ConfigError:
        raise
    except Exception as err:
        raise refusal(err, cfg, "data") from None
    datamodule.setup()
    check_splits_hold_images(datamodule.splits, splits_read, cfg, datamodule.normal_class)
    check_likelihood_fits_values(cfg, choices, datamodule)
    if cfg["data"]["image_shape"] is None:  # a CSV file's shape: the checks that needed it run now
        check_shape_dependent(cfg, datamodule.image_shape)
    return datamodule


def setup(
    cfg: dict[str, Any],
    run_dir: Path,
    choices: dict[str, str],
    overridden: set[str],
    extra_callbacks: Sequence[pl.Callback] = (),
    resume_from: Path | None = None,
    interruptions: Interruptions | None = None,
    splits_read: Collection[str] = ("val",),
) -> Run:
    """Everything that can fail on bad input comes first, before anything is written to the run dir.

    ``choices``: the group options picked (model=vae, ...); ``overridden``: the top-level keys typed on the
    command line; ``splits_read``: the splits beyond train that the run's stages read ("val", "test"),
    refused now where they hold no images."""
    cfg = copy.deepcopy(cfg)  # the run records what it found (data.source_used) in its own copy
    check_machine(cfg)
    pl.seed_everything(cfg["seed"], workers=True, verbose=False)
    step_groups, trainer_kwargs = StepGroups.from_trainer_config(cfg["steps_per_execution"], cfg["trainer"])
    datamodule = build_data(cfg, choices, step_groups, splits_read)
    steps_per_epoch = datamodule.train_dataloader().num_batches
    cfg["data"]["source_used"] = datamodule.source_used
    module = build_module(cfg, choices, overridden, datamodule, step_groups)
    if module.model.forward_takes_gradients:  # inference mode would forbid them in validation and test
        trainer_kwargs = {**trainer_kwargs, "inference_mode": False}

    loggers = build_loggers(cfg, run_dir, resume_from)
    tensorboard = next((logger for logger in loggers if isinstance(logger, TensorBoardLogger)), None)
    sink = ImageSink(loggers, run_dir / "images")
    checkpoint, callbacks = build_callbacks(cfg, run_dir, sink, interruptions or Interruptions())
    trainer = build_trainer(
        cfg, trainer_kwargs, step_groups, loggers, [*callbacks, *extra_callbacks], run_dir
    )
    step_groups.count_validation_interval(trainer, cfg["trainer"], steps_per_epoch)
    _tune_cpu_run(trainer)
    _use_cuda_graphs(cfg, module, trainer)
    if tensorboard is not None:  # its writer is made here, at its first use: its arguments are checked now
        try:
            tensorboard.experiment.add_text("config", "    " + OmegaConf.to_yaml(cfg).replace("\n", "\n    "))
        except Exception as err:
            raise refusal(err, cfg, "logger") from None
    # The checks are done: from here on the run writes to its directory.
    _warn_if_no_step_is_logged(steps_per_epoch, cfg["trainer"])
    _record_source(run_dir, datamodule)
    ckpt = cfg["ckpt"] or ""  # a model loaded from ckpt=: its metrics name that file
    return Run(
        cfg,
        run_dir,
        datamodule,
        module,
        trainer,
        sink,
        checkpoint,
        resume_from=resume_from,
        loaded_checkpoint=ckpt,
    )
