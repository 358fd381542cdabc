"""stage=impute: hidden test pixels filled in by the model and by two baselines, scored on those pixels."""

from __future__ import annotations

import logging

import torch
from pytorch_lightning.utilities import rank_zero_only

from vaerun.data import observed_cells
from vaerun.evaluation.imputation import (
    column_mean_imputation,
    missing_completely_at_random,
    missing_pixel_metrics,
    observed_only,
    pca_imputation,
)
from vaerun.models.corruption import random_squares
from vaerun.stages.context import Run
from vaerun.training.visualisation import reconstruction_grid

log = logging.getLogger(__name__)


@rank_zero_only
@torch.no_grad()
def impute(run: Run) -> None:
    """Hide test pixels (completely at random at each of impute.rates, and a block), fill them with the
    model (a DAE in one pass, a VAE by pseudo-Gibbs sampling) and with two baselines (each pixel's training
    mean; iterative PCA at the latent size), and score each on the missing pixels only."""
    options, seed = run.cfg["impute"], run.cfg["seed"]
    module = run.inference_model()
    model = module.model
    raw = run.datamodule.splits.test.images[: options["test_images"]].to(module.device)
    truth, present = run.datamodule.transform(raw), observed_cells(raw)
    train_images = run.images("train")
    pixel_means, pca = train_images.mean(dim=0), run.pca(model.latent_dim)
    generator = torch.Generator().manual_seed(seed)
    patterns = {
        f"mcar_{rate:g}": missing_completely_at_random(truth.shape, rate, generator)
        for rate in options["rates"]
    }
    if run.datamodule.unit_range:  # a hidden square is an image's pattern; a table's columns have no layout
        block = options["block_size"] or min(truth.shape[-2:]) // 2
        patterns[f"block_{block}"] = ~random_squares(truth.shape, block, generator)
    results: dict[str, float] = {}
    torch.manual_seed(seed)
    for pattern, mask in patterns.items():
        # Only cells that are present can be hidden and scored; a table's missing cells stay as they are.
        mask = mask.to(module.device) | ~present
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
        shown = slice(0, options["shown"])  # observed (missing pixels grey) | imputed | truth
        grid = reconstruction_grid(
            observed_only(truth, mask, 0.5)[shown], imputed["model"][shown], truth[shown]
        )
        run.sink.grid(f"impute/{pattern}", grid, run.step)
        log.info(
            "Imputation %-9s MSE on missing %s: model %.4f, column mean %.4f, PCA %.4f",
            pattern,
            "pixels" if run.datamodule.unit_range else "cells",  # a CSV file's standardised values
            results[f"impute/{pattern}/model/mse"],
            results[f"impute/{pattern}/column_mean/mse"],
            results[f"impute/{pattern}/pca/mse"],
        )
    run.publish(results, **{"impute/images": len(truth), "impute/iterations": options["iterations"]})
