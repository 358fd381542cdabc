"""How a config learns, step by step: the model of any vae-run config trained in a plain loop (the bench's
method a: its own loss, Adam, the seeded shuffle), printing after each epoch the validation split's
reconstruction error (the posterior mean's, as test/mse) and the median and largest gradient norm of the
epoch's steps (before the config's gradient clipping, which it applies as vae-run does). For questions a
whole run's last number cannot answer: does a likelihood lose the first epoch, does it train unsteadily after
it (docs/images.md).

    python scripts/training_curves.py data=image_folder data.source.path=/tmp/photo_patches encoder=conv \\
        latent=16 likelihood=discretized_logistic seed=0
"""

from __future__ import annotations

import argparse
import statistics

import torch

import vaerun


def gradient_clipping(trainer: dict):
    """The config's gradient clipping as vae-run applies it: a function of the parameters that clips their
    gradients and returns their norm before."""
    from vaerun.training.clipping import PercentileClipping

    limit, algorithm = trainer.get("gradient_clip_val"), trainer.get("gradient_clip_algorithm") or "norm"
    if algorithm == "percentile":
        return PercentileClipping(limit).clip_

    def clip(parameters) -> torch.Tensor:
        parameters = list(parameters)
        norm_limit = limit if limit and algorithm == "norm" else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(parameters, norm_limit)
        if limit and algorithm == "value":
            torch.nn.utils.clip_grad_value_(parameters, limit)
        return norm

    return clip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="vae-run overrides, e.g. likelihood=gaussian seed=1")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_intermixed_args(argv)

    from hydra.utils import instantiate

    from vaerun.data import to_unit_float
    from vaerun.stages import module_hparams
    from vaerun.training.module import AutoencoderModule

    cfg = vaerun.compose(args.overrides)
    datamodule = instantiate(cfg["data"], _convert_="all")
    datamodule.setup()
    cfg["data"]["image_shape"] = list(datamodule.image_shape)
    seed, batch_size = cfg["seed"], cfg["data"]["batch_size"]
    torch.manual_seed(seed)
    model = AutoencoderModule(**module_hparams(cfg, {})).model
    optimizer = instantiate(cfg["optimizer"])(model.parameters())
    train, val = datamodule.splits.train.images, to_unit_float(datamodule.splits.val.images)
    generator = torch.Generator().manual_seed(seed)
    clip = gradient_clipping(cfg["trainer"])
    for epoch in range(1, args.epochs + 1):
        model.train()
        model.set_training_progress(epoch - 1)
        norms = []
        for idx in torch.randperm(len(train), generator=generator).split(batch_size):
            x = to_unit_float(train[idx])
            loss = model.loss_terms(x, x)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norms.append(clip(model.parameters()).item())
            optimizer.step()
        model.eval()
        with torch.no_grad():
            mse = (model.reconstruct(val) - val).square().mean().item()
        print(
            f"epoch {epoch}: val MSE {mse:.4f}, gradient norm median {statistics.median(norms):,.0f}, "
            f"largest {max(norms):,.0f} ({len(norms)} steps)",
            flush=True,
        )


if __name__ == "__main__":
    main()
