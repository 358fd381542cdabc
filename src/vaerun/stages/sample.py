"""stage=sample: pictures of the model (rank 0 draws them: they need no other process)."""

from __future__ import annotations

import logging

import torch
from pytorch_lightning.utilities import rank_zero_only

from vaerun.stages.context import Run, encode_all
from vaerun.visualisation import (
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
    scatter (latent=2) or traversals of every latent dimension, and the projector of test-set codes."""
    options, splits, step, sink, seed = (
        run.cfg["sample"],
        run.datamodule.splits,
        run.step,
        run.sink,
        run.cfg["seed"],
    )
    module = run.inference_model()
    model, device = module.model, module.device

    prior = model.generative_prior(encode_all(model, run.images("train")))
    z = model.standard_codes(options["num_images"], torch.Generator().manual_seed(seed))
    z = prior.loc + options["temperature"] * z.to(device) @ prior.scale_tril.T
    sink.grid("sample/generated", image_grid(model.mean(z), nrow=8), step)

    test = run.images("test")
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

    test_codes = encode_all(model, test)
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
    if projector_points > 0 and run.tensorboard is not None:
        run.tensorboard.experiment.add_embedding(
            test_codes[:projector_points].cpu(),
            metadata=splits.test.labels[:projector_points].tolist(),
            label_img=test[:projector_points].cpu(),
            global_step=step,
            tag="latent_means",
        )
    log.info("Images: %s", sink.image_dir)
