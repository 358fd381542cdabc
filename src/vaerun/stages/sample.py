"""stage=sample: pictures of the model (rank 0 draws them: they need no other process)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor
from torch.distributions import MultivariateNormal

from vaerun.stages.context import Run, encode_all
from vaerun.training.visualisation import (
    image_grid,
    interpolation_grid,
    latent_scatter,
    manifold_codes,
    reconstruction_grid,
    traversal_codes,
)

log = logging.getLogger(__name__)


@rank_zero_only
@torch.no_grad()
def sample(run: Run) -> None:
    """Generated images, reconstructions and interpolations of test images, the latent manifold and a
    scatter (latent=2) or traversals of every latent dimension (not of a VQ-VAE's discrete codes), and the
    projector of test-set codes."""
    model = run.inference_model().model
    prior = run.generative_prior()
    test = run.images("test")
    test_codes = encode_all(model, test)
    with run.timed("sample_pictures"):
        _generated(run, prior)
        _reconstructions(run, test)
        _interpolations(run, test)
        if not model.discrete_codes:  # a grid of codebook indices has no quantiles to walk
            _latent_space(run, prior, test_codes)
    with run.timed("sample_projector"):
        _projector(run, test, test_codes)
    log.info("Images: %s", run.sink.image_dir)


def _generated(run: Run, prior: Any) -> None:
    """New codes from the generative prior at the temperature (for a Gaussian: codes of the standardised
    prior, shifted and scaled by it; for a VQ-VAE: grids drawn from its code prior)."""
    options, model = run.cfg["sample"], run.module.model
    generator = torch.Generator().manual_seed(run.cfg["seed"])
    z = model.sample_codes(prior, options["num_images"], generator, options["temperature"])
    run.sink.grid("sample/generated", image_grid(model.mean(z), nrow=8), run.step)


def _reconstructions(run: Run, test: Tensor) -> None:
    """Test images | corrupted | reconstructed; for a VAE also | q's sample | after HMC steps."""
    options, module = run.cfg["sample"], run.module
    clean = test[: options["num_reconstructions"]]
    corrupted = module.corrupt(clean, seed=run.cfg["seed"])
    grid = reconstruction_grid(clean, corrupted, module.model.reconstruct(corrupted))
    run.sink.grid("sample/reconstructions", grid, run.step)
    posterior = module.model.mcmc_posterior_samples(corrupted, clean, options["mcmc_steps"])
    if posterior is not None and options["mcmc_steps"] > 0:
        z_q, z_mcmc = posterior
        grid = reconstruction_grid(clean, module.model.mean(z_q), module.model.mean(z_mcmc))
        run.sink.grid("sample/posterior_mcmc", grid, run.step)


def _interpolations(run: Run, test: Tensor) -> None:
    options, model = run.cfg["sample"], run.module.model
    pairs, steps = min(options["num_interpolations"], len(test) // 2), options["interpolation_steps"]
    if pairs == 0:  # a test split of one image has no pair
        return
    start, end = test[:pairs], test[pairs : 2 * pairs]
    path = model.interpolate(model.encode(start), model.encode(end), torch.linspace(0, 1, steps))
    grid = interpolation_grid(start, model.mean(path.flatten(0, 1)), end)
    run.sink.grid("sample/interpolations", grid, run.step)


def _latent_space(run: Run, prior: MultivariateNormal, test_codes: Tensor) -> None:
    """latent=2: the manifold over the prior's quantiles and the scatter of test codes; else traversals."""
    options, model = run.cfg["sample"], run.module.model
    if model.latent_dim == 2:
        size = options["manifold_size"]
        codes = manifold_codes(prior, size, model.standard_quantiles)
        run.sink.grid("sample/manifold", image_grid(model.mean(codes), nrow=size), run.step)
        splits = run.datamodule.splits
        scatter = latent_scatter(test_codes, splits.test.labels, class_names=splits.classes)
        run.sink.figure("sample/latent_scatter", scatter, run.step)
    else:
        steps = options["interpolation_steps"]
        codes = traversal_codes(
            test_codes[0], prior, options["traversal_dims"], steps, model.standard_quantiles
        )
        run.sink.grid("sample/traversals", image_grid(model.mean(codes), nrow=steps), run.step)


def _projector(run: Run, test: Tensor, test_codes: Tensor) -> None:
    """TensorBoard's projector of the test codes, with labels and thumbnails."""
    points, splits = run.cfg["eval"]["projector_points"], run.datamodule.splits
    if points > 0 and run.tensorboard is not None:
        labels = splits.test.labels[:points].tolist()
        run.tensorboard.experiment.add_embedding(
            test_codes[:points].cpu(),
            metadata=[splits.classes[label] for label in labels] if splits.classes else labels,
            label_img=test[:points].cpu(),
            global_step=run.step,
            tag="latent_means",
        )
