"""stage=eval: test metrics of the best checkpoint (after training) or of ckpt=...."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio

from vaerun.evaluation.baselines import PCA, active_units
from vaerun.evaluation.imputation import pca_imputation
from vaerun.evaluation.metrics import restoration_metrics, standard_error
from vaerun.models.likelihoods import BINARY, dequantization_nats
from vaerun.models.objectives import bits_per_dim
from vaerun.stages.context import Run, encode_all, scalars
from vaerun.training.module import AutoencoderModule

log = logging.getLogger(__name__)


def evaluate(run: Run) -> None:
    """The loss terms, image metrics of the reconstructions (and of the corrupted inputs), the IWAE
    estimate of -log p(x), the PCA baseline and the active units; into metrics.json and the loggers
    (test/...)."""
    module = run.inference_model()
    options = run.cfg["eval"]
    module.configure_evaluation(
        options["iwae_samples"], options["iwae_chunk"], options["iwae_images"], run.trainer.world_size
    )
    with run.timed("eval_test_loop"):  # the loss terms, image metrics and IWAE over the test split
        run.trainer.test(module, datamodule=run.datamodule, verbose=False)
    run.timings["eval_iwae"] = module.iwae_timer.seconds
    if not run.trainer.is_global_zero:  # the metrics are reduced across processes; rank 0 writes them
        return
    logged = scalars(run.trainer.callback_metrics, prefix="test/")  # by Lightning, during the test
    extra = _baselines_and_diagnostics(run)
    extra.update(_bits_per_dim({**logged, **extra}, run, module))
    test_metrics = {**logged, **extra}
    run.metrics.update(logged)
    run.record.update(logged)
    how_measured = {
        # which weights: the best checkpoint after training (also when early stopping ended it), or ckpt=
        "test/checkpoint": Path(run.loaded_checkpoint).name if run.loaded_checkpoint else "in memory",
        "test/binarize": run.datamodule.binarize,
        "test/iwae_samples": options["iwae_samples"] if "test/nll_iwae" in test_metrics else 0,
        "test/ais_temperatures": options["ais_temperatures"] if "test/nll_ais" in test_metrics else 0,
        "test/ais_images": ais_image_count(run) if "test/nll_ais" in test_metrics else 0,
    }
    run.publish(extra, **how_measured)
    if "test/nll_iwae" in test_metrics:
        bits = test_metrics.get("test/nll_iwae_bpd")
        log.info(
            "Test -log p(x) ~ %.3f +- %.3f nats per image%s: IWAE, k=%d samples, %d test images, binarize=%s",
            test_metrics["test/nll_iwae"],
            test_metrics.get("test/nll_iwae_se", float("nan")),
            "" if bits is None else f" ({bits:.4f} bits/dim)",
            options["iwae_samples"],
            test_metrics["test/iwae_images"],
            run.datamodule.binarize,
        )
    if "test/nll_ais" in test_metrics:
        log.info(
            "Test -log p(x) ~ %.3f +- %.3f nats per image: AIS, %d temperatures x %d chains, first %d test "
            "images%s (HMC acceptance %.2f)",
            test_metrics["test/nll_ais"],
            test_metrics["test/nll_ais_se"],
            options["ais_temperatures"],
            options["ais_chains"],
            how_measured["test/ais_images"],
            _capped_by_pixels(run, how_measured["test/ais_images"]),
            test_metrics["test/ais_accept"],
        )
    log.info("Test metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(test_metrics.items())))


def _bits_per_dim(metrics: dict[str, float], run: Run, module: AutoencoderModule) -> dict[str, float]:
    """-log p(x) estimates in bits per dimension where they are bits of the data (image papers' bits/dim),
    else none, with one line saying why."""
    estimates = [key for key in ("test/nll_iwae", "test/nll_ais") if key in metrics]
    if not estimates:
        return {}
    values = module.model.likelihood.values
    extra = dequantization_nats(values, run.datamodule.binarize != "none", run.datamodule.unit_range)
    if extra is None:
        log.info(
            "No bits/dim: a %s likelihood of %s is no probability of the data's values%s",
            values,
            "grey levels" if run.datamodule.unit_range else "standardised table values",
            " (binarize the data: data.binarize=dynamic or static)" if values == BINARY else "",
        )
        return {}
    dims = math.prod(run.datamodule.image_shape)
    return {f"{key}_bpd": float(bits_per_dim(metrics[key], dims, extra)) for key in estimates}


@torch.no_grad()
def _hidden_pixel_baselines(
    run: Run, module: AutoencoderModule, clean: torch.Tensor, corrupted: torch.Tensor, pca: PCA
) -> dict[str, float]:
    """For a corruption that hides pixels: the linear fill (PCA imputation of exactly the hidden pixels,
    the observed ones kept; PCA fitted on clean training images at the model's latent size), and the
    model's output with the observed pixels put back (the model itself restores every pixel)."""
    if not hasattr(module.corruption, "hidden"):
        return {}
    generator = torch.Generator(device=clean.device).manual_seed(run.cfg["seed"])
    observed = ~module.corruption.hidden(clean, generator)  # the draws of module.corrupt(clean, seed)
    train = run.images("train")
    filled = pca_imputation(corrupted, observed, train.mean(dim=0), pca, clip=run.datamodule.clip)
    model_output = torch.cat([module.model.reconstruct(part) for part in corrupted.split(1000)])
    kept = torch.where(observed, corrupted, model_output)
    return {
        **restoration_metrics(filled, clean, "test/pca_fill/"),
        **restoration_metrics(kept, clean, "test/observed_kept/"),
    }


def _code_rate(run: Run, codes: torch.Tensor) -> dict[str, float]:
    """A VQ-VAE's codes of the test images (as ``encode`` gives them): their bits per image under the code
    prior fitted to the training images' codes (what an entropy coder with that prior would spend), with
    its standard error, and the bits of the code grid stored at log2 K per position."""
    model = run.inference_model().model
    prior = run.generative_prior()
    bits = torch.cat([model.rate_bits(prior, part) for part in codes.split(1000)])
    return {
        "test/rate_bits": bits.mean().item(),
        "test/rate_bits_se": standard_error(bits),
        "test/rate_bits_fixed": float(model.fixed_rate_bits),
    }


@torch.no_grad()
def _baselines_and_diagnostics(run: Run) -> dict[str, float]:
    """PCA at the model's latent size (fitted on the training split, applied to the same inputs the model
    sees), the number of active latent units on the test split, and the AIS estimate."""
    module = run.inference_model()
    model = module.model
    clean = run.images("test")
    corrupted = module.corrupt(clean, seed=run.cfg["seed"])
    with run.timed("eval_pca"):
        pca = run.pca(model.latent_dim)
        restored = run.datamodule.clip(pca.reconstruct(corrupted))
    codes = encode_all(model, corrupted)
    results = {"test/pca_mse": torch.mean((restored - clean) ** 2).item()}
    if len(codes) > 1:  # a variance over the test images: none for a test split of one
        results["test/active_units"] = float(active_units(codes))
    if model.discrete_codes:
        with run.timed("eval_rate"):
            results.update(_code_rate(run, codes))
    if run.datamodule.unit_range:
        per_image = peak_signal_noise_ratio(restored, clean, data_range=1.0, dim=(1, 2, 3))
        results["test/pca_psnr"] = per_image.item()  # the mean over images of each one's PSNR
        results.update(_hidden_pixel_baselines(run, module, clean, corrupted, pca))
    options = run.cfg["eval"]
    if options["ais_temperatures"] > 0:
        torch.manual_seed(run.cfg["seed"])
        images = ais_image_count(run)
        with run.timed("eval_ais"):
            estimate = model.annealed_log_likelihood(
                corrupted[:images],
                clean[:images],
                options["ais_chains"],
                options["ais_temperatures"],
                options["ais_leapfrog_steps"],
                options["ais_kernel"],
            )
        if estimate is not None:
            log_px, acceptance = estimate
            results["test/nll_ais"] = -log_px.mean().item()
            results["test/nll_ais_se"] = standard_error(log_px)  # over the images it saw
            results["test/ais_accept"] = float(acceptance)
    return results


def ais_image_count(run: Run) -> int:
    """The test images AIS sees: the first eval.ais_images, no more than eval.ais_pixels in all (at least
    one image), since its cost grows with the pixels it models."""
    options, test = run.cfg["eval"], run.datamodule.splits.test
    count = min(options["ais_images"], len(test))
    if options.get("ais_pixels") is not None:
        count = min(count, max(1, options["ais_pixels"] // math.prod(run.datamodule.image_shape)))
    return count


def _capped_by_pixels(run: Run, count: int) -> str:
    """What the log adds where eval.ais_pixels, not eval.ais_images or the split, set the ``count``."""
    options = run.cfg["eval"]
    if count < min(options["ais_images"], len(run.datamodule.splits.test)):
        return f" (eval.ais_pixels={options['ais_pixels']} in all)"
    return ""
