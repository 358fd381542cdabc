"""The stages of a run: train, eval (test metrics) and sample (pictures), alone or chained by stage=all.

``run(cfg, run_dir, choices, overridden)`` is what the CLI calls once the config has passed its checks.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from vaerun import run_state
from vaerun.anomaly import detection_metrics, reconstruction_error
from vaerun.atomic import write_text_atomically
from vaerun.baselines import active_units, fit_pca
from vaerun.callbacks import EncoderGradientVariance, ReconstructionImages, StepProgressBar
from vaerun.data import ImageDataModule, observed_cells
from vaerun.guards import AtomicCheckpointIO, InterruptCheckpoint
from vaerun.imputation import (
    column_mean_imputation,
    missing_block,
    missing_completely_at_random,
    missing_pixel_metrics,
    observed_only,
    pca_imputation,
)
from vaerun.module import AutoencoderModule
from vaerun.objectives import bits_per_dim
from vaerun.validation import ConfigError, check_shape_dependent, is_int, validation_interval_in_items
from vaerun.visualisation import (
    ImageSink,
    image_grid,
    interpolation_grid,
    latent_scatter,
    manifold_codes,
    reconstruction_grid,
    traversal_codes,
)

log = logging.getLogger(__name__)

#: the hparams of a checkpoint that define its model; eval and sample take them from the checkpoint
ARCHITECTURE_KEYS = ("model", "encoder", "likelihood", "prior", "corruption", "latent", "image_shape")


@dataclass
class Run:
    """What the stages share: the config, the run directory and the objects built from them."""

    cfg: dict[str, Any]
    run_dir: Path
    datamodule: ImageDataModule
    module: AutoencoderModule
    trainer: pl.Trainer
    logger: TensorBoardLogger
    sink: ImageSink
    checkpoint: ModelCheckpoint
    metrics: dict[str, float] = field(default_factory=dict)
    resume_from: Path | None = None
    #: what metrics.json holds: the final metrics of every stage that ran, and how they were measured
    record: dict[str, Any] = field(default_factory=dict)


def _write_metrics(run: Run) -> None:
    text = json.dumps(run.record, indent=2, sort_keys=True) + "\n"
    write_text_atomically(run.run_dir / "metrics.json", text)


def _check_device(trainer_cfg: dict[str, Any]) -> None:
    if str(trainer_cfg.get("accelerator")) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "device=gpu: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); "
            "use device=cpu or device=auto"
        )


def load_module(ckpt: str, image_shape: tuple[int, ...]) -> AutoencoderModule:
    """Rebuild the model a checkpoint was trained as; weights_only: a checkpoint cannot run code."""
    try:
        module = AutoencoderModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a truncated or foreign file
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"ckpt: {ckpt} is not a loadable vaerun checkpoint ({first_line})") from None
    trained_shape = tuple(module.hparams.image_shape)
    if trained_shape != image_shape:
        raise ConfigError(
            f"ckpt: the checkpoint's model takes images of shape {list(trained_shape)}, but the data "
            f"gives {list(image_shape)}; pick the data set it was trained on"
        )
    return module


def _reconcile_with_checkpoint(cfg: dict[str, Any], module: AutoencoderModule, overridden: set[str]) -> None:
    """The checkpoint defines the model; a corruption typed on the command line replaces the stored one
    (to test a denoiser on another corruption). Other architecture keys typed are reported as ignored."""
    for key in sorted(overridden & set(ARCHITECTURE_KEYS) - {"corruption"}):
        stored = module.hparams.get("choices", {}).get(key) or module.hparams.get(key)
        log.warning("%s from the command line is ignored: the checkpoint's model has %s=%s", key, key, stored)
    if "corruption" in overridden:
        module.corruption = instantiate(cfg["corruption"])
        log.info(
            "corruption: using the command line's %s, not the checkpoint's", cfg["corruption"]["_target_"]
        )


def _module_hparams(
    cfg: dict[str, Any], choices: dict[str, str], datamodule: ImageDataModule | None = None
) -> dict[str, Any]:
    """The module's hyperparameters; the image shape and value range come from the data where given (a
    CSV file's columns are known only once it is read)."""
    hparams = {
        "model": cfg["model"],
        "encoder": cfg["encoder"],
        "likelihood": cfg["likelihood"],
        "prior": cfg["prior"],
        "corruption": cfg["corruption"],
        "optimizer": cfg["optimizer"],
        "latent": cfg["latent"],
        "image_shape": list(cfg["data"]["image_shape"] or ()),
        "choices": choices,
    }
    if datamodule is not None:
        hparams.update(image_shape=list(datamodule.image_shape), unit_range=datamodule.unit_range)
    return hparams


def _checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True).get("global_step", 0))


@rank_zero_only
def _record_source(run_dir: Path, source: str) -> None:
    """The data set actually used (mnist may fall back to mnist5k) goes into the run's saved config."""
    saved = run_dir / ".hydra" / "config.yaml"
    if saved.is_file():
        config = OmegaConf.load(saved)
        config.data.source_used = source
        OmegaConf.save(config, saved)


def _warn_if_no_step_is_logged(datamodule: ImageDataModule, trainer: dict[str, Any]) -> None:
    """Lightning's own warning of this counts items, which are groups of batches here: it is replaced."""
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than")
    batches = datamodule.train_dataloader().num_batches
    every = trainer.get("log_every_n_steps") or 1
    epochs = trainer.get("max_epochs") or 0
    if 0 < batches * epochs < every:
        log.warning(
            "%d training steps in all, fewer than trainer.log_every_n_steps=%d: no step's loss is logged",
            batches * epochs,
            every,
        )


def _skip_nvml_probe_on_cpu(trainer: pl.Trainer) -> None:
    """Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 (so that asking whether CUDA is there does
    not initialise it in a process that forks later). torch's Adam asks at every step, and with the
    variable set a CUDA build of torch that never initialises CUDA opens the NVML library each time: about
    70 us a step on the CPU. A run on the CPU uses no CUDA in this process or its children, so the plain
    check serves it."""
    if isinstance(trainer.accelerator, CPUAccelerator):
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def count_validation_interval_in_items(
    trainer: pl.Trainer, datamodule: ImageDataModule, trainer_cfg: Mapping[str, Any]
) -> None:
    """Lightning counts an integer val_check_interval in training items; here an item holds a group of
    steps, and the interval is given in steps. Under DDP an item is one step (and the shards' sizes are
    not known yet): Lightning checks the interval itself."""
    interval = trainer_cfg.get("val_check_interval")
    if not is_int(interval) or trainer.world_size > 1:
        return
    datamodule.setup()  # loaded once: the steps of an epoch depend on the data's size
    trainer.val_check_interval = validation_interval_in_items(
        interval,
        datamodule.steps_per_execution,
        datamodule.train_dataloader().num_batches,
        across_epochs=trainer_cfg.get("check_val_every_n_epoch", 1) is None,
    )


def setup(
    cfg: dict[str, Any],
    run_dir: Path,
    choices: dict[str, str],
    overridden: set[str],
    extra_callbacks: Sequence[pl.Callback] = (),
    resume_from: Path | None = None,
) -> Run:
    """Everything that can fail on bad input comes first, before anything is written to the run dir.

    ``choices``: the group options picked (model=vae, ...); ``overridden``: the top-level keys typed on the
    command line."""
    cfg = copy.deepcopy(cfg)  # the run records what it found (data.source_used) in its own copy
    _check_device(cfg["trainer"])
    pl.seed_everything(cfg["seed"], workers=True, verbose=False)
    # The Trainer would count limit_train_batches in items, which are groups of batches here, so the data
    # applies it; and it refuses to clip gradients under manual optimisation, so the module clips them.
    trainer_kwargs = dict(cfg["trainer"])
    limit_train_batches = trainer_kwargs.pop("limit_train_batches", None)
    clipping = ("gradient_clip_val", "gradient_clip_algorithm")
    gradient_clipping = {key: trainer_kwargs.pop(key) for key in clipping if key in trainer_kwargs}
    datamodule: ImageDataModule = instantiate(
        cfg["data"],
        steps_per_execution=cfg["steps_per_execution"],
        limit_train_batches=limit_train_batches,
        _convert_="all",
    )
    datamodule.setup()
    _warn_if_no_step_is_logged(datamodule, cfg["trainer"])
    if cfg["data"]["image_shape"] is None:  # a CSV file's shape: the checks that needed it run now
        check_shape_dependent(cfg, datamodule.image_shape)
    cfg["data"]["source_used"] = datamodule.source_used
    if cfg["ckpt"] is not None:
        module = load_module(cfg["ckpt"], datamodule.image_shape)
        _reconcile_with_checkpoint(cfg, module, overridden)
    else:
        module = AutoencoderModule(**_module_hparams(cfg, choices, datamodule))
    module.configure_training(**gradient_clipping)
    if cfg["compile"]:
        module.compile_training_loss()

    logger = TensorBoardLogger(
        save_dir=str(run_dir),
        name="",
        version="tensorboard",
        default_hp_metric=False,
        # resumed: TensorBoard hides what the killed run logged after its checkpoint, so no step appears twice
        purge_step=_checkpoint_step(resume_from) if resume_from else None,
    )
    sink = ImageSink(logger, run_dir / "images")
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best-epoch{epoch:03d}",
        auto_insert_metric_name=False,
        monitor="val/loss",
        mode="min",
        save_last=True,
    )
    log_every = cfg["trainer"].get("log_every_n_steps") or 1
    callbacks = [
        checkpoint,
        InterruptCheckpoint(run_dir / "checkpoints"),
        ReconstructionImages(sink, cfg["sample"]["num_reconstructions"], cfg["seed"]),
        *extra_callbacks,
    ]
    if cfg["diagnostics"]["gradient_variance_samples"]:
        callbacks.append(EncoderGradientVariance(cfg["diagnostics"]["gradient_variance_samples"], log_every))
    if trainer_kwargs.get("enable_progress_bar") is None:  # a bar for a person at a terminal, not a log file
        trainer_kwargs["enable_progress_bar"] = sys.stderr.isatty()
    if trainer_kwargs["enable_progress_bar"]:
        # The bar counts steps and redraws at about the logging rate (the values it shows change no more
        # often), not every step; it can only move once per group of steps_per_execution.
        callbacks.append(StepProgressBar(refresh_rate=max(1, log_every // cfg["steps_per_execution"])))
    trainer = pl.Trainer(
        **trainer_kwargs,
        logger=logger,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(run_dir),
    )
    count_validation_interval_in_items(trainer, datamodule, cfg["trainer"])
    _skip_nvml_probe_on_cpu(trainer)
    # The checks are done: from here on the run writes to its directory.
    _record_source(run_dir, datamodule.source_used)
    logger.experiment.add_text("config", "    " + OmegaConf.to_yaml(cfg).replace("\n", "\n    "))
    return Run(cfg, run_dir, datamodule, module, trainer, logger, sink, checkpoint, resume_from=resume_from)


def train(run: Run) -> None:
    if run.resume_from is not None and run.trainer.is_global_zero:
        log.info("Resuming from %s: epoch, optimizer, batch order and random state", run.resume_from)
    # weights_only: a checkpoint to resume from is data; it cannot run code when loaded
    run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=run.resume_from, weights_only=True)
    run.metrics.update(_scalars(run.trainer.callback_metrics, prefix="val/"))
    if run.trainer.is_global_zero:
        log.info(
            "Checkpoints: %s (best: %s)", run.checkpoint.dirpath, run.checkpoint.best_model_path or "none"
        )


def evaluate(run: Run) -> None:
    """Test metrics of the best checkpoint (after training) or of ckpt=...: the loss terms, image metrics
    of the reconstructions (and of the corrupted inputs), the IWAE estimate of -log p(x), the PCA baseline
    and the active units; into metrics.json and TensorBoard (test/...)."""
    _use_best_checkpoint(run)
    options = run.cfg["eval"]
    run.module.configure_evaluation(options["iwae_samples"], options["iwae_chunk"])
    run.trainer.test(run.module, datamodule=run.datamodule, verbose=False)
    if not run.trainer.is_global_zero:  # the metrics are reduced across processes; rank 0 writes them
        return
    test_metrics = _scalars(run.trainer.callback_metrics, prefix="test/")
    extra = _baselines_and_diagnostics(run)
    run.logger.log_metrics(extra, step=run.trainer.global_step)
    test_metrics.update(extra)
    run.metrics.update(test_metrics)
    run.record.update(
        {
            **test_metrics,
            "test/binarize": run.datamodule.binarize,
            "test/iwae_samples": options["iwae_samples"] if "test/nll_iwae" in test_metrics else 0,
            "test/ais_temperatures": options["ais_temperatures"] if "test/nll_ais" in test_metrics else 0,
        }
    )
    _write_metrics(run)
    if "test/nll_iwae" in test_metrics:
        log.info(
            "Test -log p(x) ~ %.3f nats per image (%.4f bits/dim): IWAE, k=%d samples, binarize=%s",
            test_metrics["test/nll_iwae"],
            test_metrics["test/nll_iwae_bpd"],
            options["iwae_samples"],
            run.datamodule.binarize,
        )
    if "test/nll_ais" in test_metrics:
        log.info(
            "Test -log p(x) ~ %.3f nats per image: AIS, %d temperatures x %d chains, first %d test images "
            "(HMC acceptance %.2f)",
            test_metrics["test/nll_ais"],
            options["ais_temperatures"],
            options["ais_chains"],
            min(options["ais_images"], len(run.datamodule.splits.test)),
            test_metrics["test/ais_accept"],
        )
    log.info("Test metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(test_metrics.items())))


@torch.no_grad()
def _baselines_and_diagnostics(run: Run) -> dict[str, float]:
    """PCA at the model's latent size (fitted on the training split, applied to the same inputs the model
    sees) and the number of active latent units, on the test split."""
    module = _on_device_for_inference(run)
    model, device, splits = module.model, module.device, run.datamodule.splits
    clean = run.datamodule.transform(splits.test.images.to(device))
    corrupted = module.corruption(
        clean, generator=torch.Generator(device=device).manual_seed(run.cfg["seed"])
    )
    pca = fit_pca(run.datamodule.transform(splits.train.images.to(device)), model.latent_dim)
    restored = run.datamodule.clip(pca.reconstruct(corrupted))
    codes = _encode_all(model, corrupted)
    results = {
        "test/pca_mse": torch.mean((restored - clean) ** 2).item(),
        "test/active_units": float(active_units(codes)),
    }
    if run.datamodule.unit_range:
        psnr = -10 * torch.log10(((restored - clean) ** 2).flatten(1).mean(1))
        results["test/pca_psnr"] = psnr.mean().item()
    options = run.cfg["eval"]
    if options["ais_temperatures"] > 0:
        torch.manual_seed(run.cfg["seed"])
        images = options["ais_images"]
        estimate = model.annealed_log_likelihood(
            corrupted[:images],
            clean[:images],
            options["ais_chains"],
            options["ais_temperatures"],
            options["ais_leapfrog_steps"],
        )
        if estimate is not None:
            log_px, acceptance = estimate
            results["test/nll_ais"] = -log_px.mean().item()
            results["test/nll_ais_bpd"] = bits_per_dim(results["test/nll_ais"], clean[0].numel())
            results["test/ais_accept"] = float(acceptance)
    return results


def _on_device_for_inference(run: Run) -> AutoencoderModule:
    return run.module.to(run.trainer.strategy.root_device).eval()


@torch.no_grad()
def _encode_all(model, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([model.encode(batch) for batch in x.split(batch_size)])


@torch.no_grad()
def sample(run: Run) -> None:
    """Generated images, reconstructions and interpolations of test images, the latent manifold and a
    scatter (latent=2) or traversals of every latent dimension, and the projector of test-set codes."""
    if not run.trainer.is_global_zero:  # pictures need no other process: rank 0 draws them
        return
    options, splits, step, sink = run.cfg["sample"], run.datamodule.splits, run.trainer.global_step, run.sink
    module = _on_device_for_inference(run)
    model, device = module.model, module.device
    seed = run.cfg["seed"]

    prior = model.generative_prior(
        _encode_all(model, run.datamodule.transform(splits.train.images.to(device)))
    )
    z = model.standard_codes(options["num_images"], torch.Generator().manual_seed(seed))
    z = prior.loc + options["temperature"] * z.to(device) @ prior.scale_tril.T
    sink.grid("sample/generated", image_grid(model.mean(z), nrow=8), step)

    test = run.datamodule.transform(splits.test.images.to(device))
    clean = test[: options["num_reconstructions"]]
    corrupted = module.corrupt(clean, seed=seed)
    sink.grid(
        "sample/reconstructions", reconstruction_grid(clean, corrupted, model.reconstruct(corrupted)), step
    )

    posterior = model.mcmc_posterior_samples(corrupted, clean, options["mcmc_steps"])
    if posterior is not None and options["mcmc_steps"] > 0:
        z_q, z_mcmc = posterior
        grid = reconstruction_grid(clean, model.mean(z_q), model.mean(z_mcmc))
        sink.grid("sample/posterior_mcmc", grid, step)

    pairs, steps = options["num_interpolations"], options["interpolation_steps"]
    start, end = test[:pairs], test[pairs : 2 * pairs]
    path = model.interpolate(model.encode(start), model.encode(end), torch.linspace(0, 1, steps))
    sink.grid("sample/interpolations", interpolation_grid(start, model.mean(path.flatten(0, 1)), end), step)

    test_codes = _encode_all(model, test)
    if model.latent_dim == 2:
        size = options["manifold_size"]
        codes = manifold_codes(prior, size, model.standard_quantiles)
        sink.grid("sample/manifold", image_grid(model.mean(codes), nrow=size), step)
        sink.figure("sample/latent_scatter", latent_scatter(test_codes, splits.test.labels), step)
    else:
        codes = traversal_codes(
            test_codes[0], prior, options["traversal_dims"], steps, model.standard_quantiles
        )
        sink.grid("sample/traversals", image_grid(model.mean(codes), nrow=steps), step)

    projector_points = run.cfg["eval"]["projector_points"]
    if projector_points > 0:
        run.logger.experiment.add_embedding(
            test_codes[:projector_points].cpu(),
            metadata=splits.test.labels[:projector_points].tolist(),
            label_img=test[:projector_points].cpu(),
            global_step=step,
            tag="latent_means",
        )
    log.info("Images: %s", sink.image_dir)


def fit_unless_checkpoint(run: Run) -> None:
    """impute and anomaly: the model of ckpt=... as it is, else one trained first."""
    if run.cfg["ckpt"] is None:
        train(run)


def _use_best_checkpoint(run: Run) -> None:
    """After training: the best weights by validation loss, not the last (else the model as loaded)."""
    if run.checkpoint.best_model_path:
        run.module = load_module(run.checkpoint.best_model_path, run.datamodule.image_shape)


def _inference_model(run: Run) -> AutoencoderModule:
    _use_best_checkpoint(run)
    return _on_device_for_inference(run)


def _in_chunks(
    function: Callable[[torch.Tensor], dict[str, torch.Tensor]], x: torch.Tensor, size: int = 500
) -> dict[str, torch.Tensor]:
    """A dict of per-image tensors computed ``size`` images at a time (bounded memory), concatenated."""
    parts = [function(chunk) for chunk in x.split(size)]
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


@torch.no_grad()
def impute(run: Run) -> None:
    """Hide test pixels (completely at random at each of impute.rates, and a block), fill them with the
    model (a DAE in one pass, a VAE by pseudo-Gibbs sampling) and with two baselines (each pixel's training
    mean; iterative PCA at the latent size), and score each on the missing pixels only."""
    if not run.trainer.is_global_zero:
        return
    options, seed, step = run.cfg["impute"], run.cfg["seed"], run.trainer.global_step
    module = _inference_model(run)
    model, device, splits = module.model, module.device, run.datamodule.splits
    raw = splits.test.images[: options["images"]].to(device)
    truth, present = run.datamodule.transform(raw), observed_cells(raw)
    train_images = run.datamodule.transform(splits.train.images.to(device))
    pixel_means, pca = train_images.mean(dim=0), fit_pca(train_images, model.latent_dim)
    generator = torch.Generator().manual_seed(seed)
    patterns = {
        f"mcar_{rate:g}": missing_completely_at_random(truth.shape, rate, generator)
        for rate in options["rates"]
    }
    if run.datamodule.unit_range:  # a hidden square is an image's pattern; a table's columns have no layout
        block = options["block_size"] or min(truth.shape[-2:]) // 2
        patterns[f"block_{block}"] = missing_block(truth.shape, block, generator)
    results: dict[str, float] = {}
    torch.manual_seed(seed)
    for pattern, mask in patterns.items():
        # Only cells that are present can be hidden and scored; a table's missing cells stay as they are.
        mask = mask.to(device) | ~present
        observed = observed_only(truth, mask)
        imputed = {
            "model": model.impute(observed, mask, options["iterations"]),
            "column_mean": column_mean_imputation(observed, mask, pixel_means),
            "pca": pca_imputation(observed, mask, pixel_means, pca, run.datamodule.clip),
        }
        for method, images in imputed.items():
            scores = missing_pixel_metrics(images, truth, mask, run.datamodule.unit_range)
            for metric, value in scores.items():
                results[f"impute/{pattern}/{method}/{metric}"] = value
        shown = slice(0, options["num_images"])  # observed (missing pixels grey) | imputed | truth
        grid = reconstruction_grid(
            observed_only(truth, mask, 0.5)[shown], imputed["model"][shown], truth[shown]
        )
        run.sink.grid(f"impute/{pattern}", grid, step)
        log.info(
            "Imputation %-9s MSE on missing pixels: model %.4f, column mean %.4f, PCA %.4f",
            pattern,
            results[f"impute/{pattern}/model/mse"],
            results[f"impute/{pattern}/column_mean/mse"],
            results[f"impute/{pattern}/pca/mse"],
        )
    run.logger.log_metrics(results, step=step)
    run.metrics.update(results)
    run.record.update({**results, "impute/images": len(truth), "impute/iterations": options["iterations"]})
    _write_metrics(run)


@torch.no_grad()
def detect_anomalies(run: Run) -> None:
    """The one-class protocol: the model learnt data.normal_class; every test image of another class is an
    anomaly. AUROC and average precision of each of the model's scores and of PCA's reconstruction error,
    and histograms of the scores by class."""
    if not run.trainer.is_global_zero:
        return
    normal_class, step = run.cfg["data"]["normal_class"], run.trainer.global_step
    module = _inference_model(run)
    model, device, splits = module.model, module.device, run.datamodule.splits
    images = run.datamodule.transform(splits.test.images.to(device))
    labels = splits.test.labels.to(device)
    torch.manual_seed(run.cfg["seed"])
    scores = _in_chunks(lambda x: model.anomaly_scores(x, run.cfg["anomaly"]["iwae_samples"]), images)
    pca = fit_pca(run.datamodule.transform(splits.train.images.to(device)), model.latent_dim)
    scores["pca_reconstruction_error"] = reconstruction_error(
        run.datamodule.clip(pca.reconstruct(images)), images
    )
    results: dict[str, float] = {}
    for name, values in scores.items():
        for metric, value in detection_metrics(values, labels != normal_class).items():
            results[f"anomaly/{name}/{metric}"] = value
        for label in labels.unique().tolist():
            run.logger.experiment.add_histogram(
                f"anomaly/{name}/class_{label}", values[labels == label], step
            )
    run.logger.log_metrics(results, step=step)
    run.metrics.update(results)
    run.record.update({**results, "anomaly/normal_class": normal_class})
    _write_metrics(run)
    log.info(
        "Anomaly detection, normal class %s: %s",
        normal_class,
        ", ".join(f"{name} AUROC {results[f'anomaly/{name}/auroc']:.3f}" for name in scores),
    )


def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix) and not k.endswith("_step")}


@rank_zero_only
def _log_hparams(run: Run) -> None:
    hp = run.module.hparams
    params = {
        **{f"choice/{k}": v for k, v in hp.get("choices", {}).items()},
        "latent": hp["latent"],
        "lr": hp["optimizer"].get("lr"),
        "batch_size": run.cfg["data"]["batch_size"],
        "seed": run.cfg["seed"],
        "data.source_used": run.cfg["data"]["source_used"],
        "stage": run.cfg["stage"],
        "binarize": run.datamodule.binarize,
        "iwae_samples": run.cfg["eval"]["iwae_samples"],
    }
    run.logger.log_hyperparams(params, metrics={f"hparams/{k}": v for k, v in run.metrics.items()})
    # Lightning writes hparams.yaml only when it is missing, and fit already wrote an empty one.
    Path(run.logger.log_dir, "hparams.yaml").unlink(missing_ok=True)
    run.logger.save()


#: what Lightning's DDP launcher sets in the launching process; restored after each run of a multirun
DISTRIBUTED_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")


@rank_zero_only
def _record_state(run_dir: Path, config_fingerprint: str, status: str) -> None:
    run_state.record(run_dir, config_fingerprint, status)


def _end_distributed(saved_environment: dict[str, str | None]) -> None:
    """Close the process group and restore the environment, so that the next run of a multirun starts its
    own processes on a fresh port instead of joining the finished run's group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key, value in saved_environment.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


STAGES: dict[str, tuple[Callable[[Run], None], ...]] = {
    "all": (train, evaluate, sample),
    "train": (train,),
    "eval": (evaluate,),
    "sample": (sample,),
    "impute": (fit_unless_checkpoint, impute),
    "anomaly": (fit_unless_checkpoint, detect_anomalies),
}


def run(
    cfg: dict[str, Any],
    run_dir: Path,
    choices: dict[str, str] | None = None,
    overridden: set[str] | None = None,
    config_fingerprint: str = "",
    resume_from: Path | None = None,
) -> dict[str, float]:
    """Run the configured stage(s); returns the final metrics. ``resume_from``: the last checkpoint of a
    killed run of the same config in the same directory, to continue training from."""
    saved_environment = {key: os.environ.get(key) for key in DISTRIBUTED_ENVIRONMENT}
    try:
        if resume_from is None and cfg["ckpt"] is not None and train in STAGES[cfg["stage"]]:
            resume_from = Path(cfg["ckpt"])  # training from a checkpoint continues it: epoch, optimizer, RNG
        state = setup(cfg, run_dir, choices or {}, overridden or set(), resume_from=resume_from)
        _record_state(run_dir, config_fingerprint, "running")
        for stage in STAGES[cfg["stage"]]:
            stage(state)
        _log_hparams(state)
        state.logger.finalize("success")
        _record_state(run_dir, config_fingerprint, "finished")
    finally:
        _end_distributed(saved_environment)
    return state.metrics
