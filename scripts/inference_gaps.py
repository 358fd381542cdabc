"""Where a trained VAE's ELBO loses to log p(x): the amortisation gap and the approximation gap.

    python scripts/inference_gaps.py outputs/sweeps/posteriors/fashion_mnist/*   # one row per run

After Cremer, Li & Duvenaud (2018), "Inference suboptimality in variational autoencoders". On the first
``--images`` test images, with the decoder held fixed:
- the amortised -ELBO: q(z|x) as the encoder outputs it;
- the optimised -ELBO: the same posterior family with its per-image parameters (q0's mean and
  log-variance, and a flow's context) fitted to each image alone by Adam, starting from the encoder's;
- IWAE estimates of -log p(x) from both, and the run's AIS estimate when it scored the same images.
amortisation gap = amortised - optimised -ELBO (what a better encoder could win); the optimised -ELBO
minus -log p(x) is the approximation gap (what a richer family could win). Every method of
``vae-run +experiment=posteriors`` runs, MetFlow included (its fit is slow: 2^(2 steps + 1) decoder passes
per sample).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor, nn

import vaerun


class PerImageParameters(nn.Module):
    """Stands in for the encoder: each image's posterior parameters as free tensors, whatever the input
    (a batch of ``repeats`` copies of the images gets them repeated)."""

    def __init__(self, features: Tensor) -> None:
        super().__init__()
        self.features = nn.Parameter(features.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.features.repeat(len(x) // len(self.features), 1)


def negative_elbo(network: nn.Module, x: Tensor, samples: int) -> Tensor:
    """-ELBO per image, averaged over ``samples`` draws of q."""
    repeated = x.repeat(samples, *[1] * (x.dim() - 1))
    return network.negative_elbo(repeated, repeated).reshape(samples, len(x)).mean(0)


def fit_per_image(network: nn.Module, x: Tensor, steps: int, samples: int, lr: float) -> None:
    """Replace the encoder by per-image parameters fitted to maximise each image's ELBO."""
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    with torch.no_grad():
        network.encoder = PerImageParameters(network.encoder(x))
    optimizer = torch.optim.Adam(network.encoder.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        negative_elbo(network, x, samples).sum().backward()
        optimizer.step()


def gaps(
    model: vaerun.TrainedModel, run_dir: Path, images: int, steps: int, samples: int, iwae: int, lr: float
) -> dict[str, float]:
    network = model.network.eval()
    x = model.images(model.split("test")[0][:images])
    torch.manual_seed(0)
    row = {"run": run_dir.name}
    with torch.no_grad():
        row["amortised -ELBO"] = negative_elbo(network, x, 100).mean().item()
        row[f"amortised IWAE k={iwae}"] = -network.log_likelihood(x, x, iwae).mean().item()
    fit_per_image(network, x, steps, samples, lr)
    with torch.no_grad():
        row["optimised -ELBO"] = negative_elbo(network, x, 100).mean().item()
        row[f"optimised IWAE k={iwae}"] = -network.log_likelihood(x, x, iwae).mean().item()
    row["amortisation gap"] = row["amortised -ELBO"] - row["optimised -ELBO"]
    metrics, config = run_dir / "metrics.json", run_dir / ".hydra" / "config.yaml"
    if metrics.is_file() and config.is_file():
        from omegaconf import OmegaConf

        recorded = json.loads(metrics.read_text())
        # how many test images AIS saw (runs before test/ais_images was recorded: eval.ais_images)
        scored = recorded.get("test/ais_images", OmegaConf.load(config).eval.get("ais_images"))
        ais = recorded.get("test/nll_ais")
        if ais is not None and scored == images:  # the same first images of the test split
            row["AIS"] = ais
            row["approximation gap (to AIS)"] = row["optimised -ELBO"] - ais
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", help="vae-run run directories of VAEs")
    parser.add_argument("--images", type=int, default=256, help="the first test images (default 256)")
    parser.add_argument("--steps", type=int, default=500, help="Adam steps of the per-image fit")
    parser.add_argument("--samples", type=int, default=8, help="draws of q per image and step")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate for the fit")
    parser.add_argument("--iwae", type=int, default=1000, help="importance samples of the IWAE estimates")
    args = parser.parse_args()
    models = []
    for run_dir in args.run_dirs:  # every run checked before the first fit starts
        try:
            model = vaerun.load(run_dir)
        except (FileNotFoundError, ValueError) as err:
            parser.error(str(err))
        if not model.is_variational:
            parser.error(f"{run_dir}: an AE or DAE has no ELBO; a VAE run (model=vae, ...) does")
        models.append(model)
    rows = [
        gaps(model, run_dir, args.images, args.steps, args.samples, args.iwae, args.lr)
        for model, run_dir in zip(models, args.run_dirs, strict=True)
    ]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    print(f"nats per image, the first {args.images} test images; -log p(x) estimates and gaps")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [row.get(c, "") for c in columns]
        print("| " + " | ".join(f"{c:.2f}" if isinstance(c, float) else str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
