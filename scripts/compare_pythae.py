"""vaerun's VAE, IWAE, VampPrior VAE and VQ-VAE against pythae's same models on statically binarised
Fashion-MNIST: the same networks (vaerun's MLP and conv recipes, wrapped for pythae), data, split, epochs,
batch size, learning rate and seed. One table: the IWAE estimate of -log p(x) (k importance samples, on
the first --test-images test images) for the continuous models; reconstruction MSE and codebook perplexity
(over those test images' codes) for the VQ-VAEs; training images per second (the training loop with its
validation passes, wall time).

    pip install -e '.[bench]'      # pythae: a bench-only extra, never a dependency of vaerun
    python scripts/compare_pythae.py --epochs 10 --seed 0

Each model's objective is the same in both: Bernoulli decoders for the continuous models; for the
VQ-VAEs, pythae's summed squared error, which is vaerun's `likelihood=gaussian likelihood.std=0.7071`
(-log p = |x - x_hat|^2 + a constant), with EMA codebooks of the same size and decay. The estimates of
-log p(x) are each library's own (vaerun's eval stage, pythae's get_nll), both importance sampling with
q(z|x) as the proposal.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

#: the image shape and code size of every model here
SHAPE, LATENT = (1, 28, 28), 16
#: vae-run's overrides of every run: the data, the code size, the metrics the table needs only
COMMON = [
    "data=fashion_mnist",
    "data.binarize=static",
    f"latent={LATENT}",
    "stage=all",
    "eval.ais_temperatures=0",
    "eval.projector_points=0",
    "trainer.enable_progress_bar=false",
]
#: vaerun's side of each model
VAERUN = {
    "vae": ["model=vae"],
    "iwae": ["model=iwae", "model.k={k}"],
    "vamp": ["model=vae", "prior=vamp", "prior.pseudo_inputs={pseudo_inputs}"],
    "vqvae": ["model=vqvae", "likelihood=gaussian", "likelihood.std=0.7071", "model.codebook_size=512"],
}


def train_vaerun(name: str, args: argparse.Namespace, run_dir: Path) -> dict[str, float]:
    overrides = [o.format(k=args.k, pseudo_inputs=args.pseudo_inputs) for o in VAERUN[name]]
    command = [
        *COMMON,
        *overrides,
        f"trainer.max_epochs={args.epochs}",
        f"seed={args.seed}",
        f"eval.iwae_samples={args.nll_samples if name != 'vqvae' else 0}",
        f"eval.iwae_images={args.test_images}",
        f"hydra.run.dir={run_dir}",
    ]
    print("$ vae-run " + " ".join(command), flush=True)
    subprocess.run([sys.executable, "-m", "vaerun.cli.main", *command], check=True, stdout=subprocess.DEVNULL)
    return json.loads((run_dir / "metrics.json").read_text())


def pythae_networks(encoder: nn.Module, decoder: nn.Module, gaussian: bool) -> tuple[nn.Module, nn.Module]:
    """vaerun's networks, answering as pythae's do: the encoder's ModelOutput with ``embedding`` (and
    ``log_covariance`` for a Gaussian q), the decoder's with ``reconstruction``, the mean of the
    likelihood (the sigmoid of vaerun's decoder output)."""
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.network = encoder

        def forward(self, x: torch.Tensor) -> ModelOutput:
            out = self.network(x)
            if not gaussian:
                return ModelOutput(embedding=out)
            mu, logvar = out.chunk(2, dim=1)
            return ModelOutput(embedding=mu, log_covariance=logvar)

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.network = decoder

        def forward(self, z: torch.Tensor) -> ModelOutput:
            return ModelOutput(reconstruction=torch.sigmoid(self.network(z)))

    return Encoder(), Decoder()


def pythae_model(name: str, args: argparse.Namespace) -> nn.Module:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from pythae.models import IWAE, VAE, VAMP, VQVAE, IWAEConfig, VAEConfig, VAMPConfig, VQVAEConfig

    import vaerun.configs
    from vaerun.models.networks import MLP

    torch.manual_seed(args.seed)
    if name == "vqvae":
        # the conv recipe vae-run's VQ-VAE gets (configs/encoder/conv.yaml: batch norm included)
        conv = instantiate(OmegaConf.load(Path(vaerun.configs.__file__).parent / "encoder" / "conv.yaml"))
        encoder, decoder = pythae_networks(
            conv.grid_encoder(SHAPE, LATENT), conv.grid_decoder(LATENT, SHAPE), False
        )
        config = VQVAEConfig(
            input_dim=SHAPE, latent_dim=LATENT, num_embeddings=512, commitment_loss_factor=0.25,
            use_ema=True, decay=0.99,
        )  # fmt: skip
        return VQVAE(config, encoder=encoder, decoder=decoder)
    mlp = MLP(hidden=[512, 256])
    encoder, decoder = pythae_networks(mlp.encoder(SHAPE, 2 * LATENT), mlp.decoder(LATENT, SHAPE), True)
    common = {"input_dim": SHAPE, "latent_dim": LATENT, "reconstruction_loss": "bce"}
    if name == "iwae":
        return IWAE(IWAEConfig(**common, number_samples=args.k), encoder=encoder, decoder=decoder)
    if name == "vamp":
        config = VAMPConfig(**common, number_components=args.pseudo_inputs, linear_scheduling_steps=0)
        return VAMP(config, encoder=encoder, decoder=decoder)
    return VAE(VAEConfig(**common), encoder=encoder, decoder=decoder)


def as_floats(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) of a vaerun split (0 / 1 after static binarisation, or 0..255)."""
    return images.float() / (1.0 if images.max() <= 1 else 255.0)


def train_pythae(name: str, args: argparse.Namespace, run_dir: Path, splits) -> tuple[nn.Module, float]:
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    model = pythae_model(name, args)
    config = BaseTrainerConfig(
        output_dir=str(run_dir), num_epochs=args.epochs, learning_rate=1e-3,
        per_device_train_batch_size=128, per_device_eval_batch_size=128, seed=args.seed,
        optimizer_cls="Adam", no_cuda=True, steps_saving=None,
    )  # fmt: skip
    pipeline = TrainingPipeline(model=model, training_config=config)
    start = time.perf_counter()
    pipeline(train_data=splits["train"], eval_data=splits["val"])
    return model.eval(), time.perf_counter() - start


def codebook_perplexity(indices: torch.Tensor, num_codes: int) -> float:
    """The perplexity of all the codes given, with vaerun's own function for both libraries."""
    from vaerun.models.quantization import code_counts, perplexity

    return perplexity(code_counts(indices, num_codes)).item()


@torch.no_grad()
def vq_scores_vaerun(run_dir: Path, test: torch.Tensor) -> tuple[float, float]:
    import vaerun

    network = vaerun.load(run_dir).network
    mse = ((network.reconstruct(test) - test) ** 2).mean().item()
    return mse, codebook_perplexity(network.codes(test), network.codebook.num_codes)


@torch.no_grad()
def vq_scores_pythae(model: nn.Module, test: torch.Tensor) -> tuple[float, float]:
    out = model({"data": test})
    mse = ((out.recon_x - test) ** 2).mean().item()
    return mse, codebook_perplexity(out.quantized_indices, model.model_config.num_embeddings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vae,iwae,vamp,vqvae")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=5, help="IWAE's training samples per image")
    parser.add_argument("--pseudo-inputs", type=int, default=500, help="the VampPrior's components")
    parser.add_argument("--nll-samples", type=int, default=1000, help="k of the IWAE estimate of -log p(x)")
    parser.add_argument("--test-images", type=int, default=1000, help="the first test images scored")
    parser.add_argument("--out", type=Path, default=None, help="the runs' folder (default: a temporary one)")
    args = parser.parse_args(argv)
    import vaerun

    out = args.out or Path(tempfile.mkdtemp(prefix="compare_pythae_"))
    rows = []
    for name in args.models.split(","):
        metrics = train_vaerun(name, args, out / f"vaerun-{name}")
        trained = vaerun.load(out / f"vaerun-{name}")
        splits = {split: as_floats(trained.split(split)[0]) for split in ("train", "val", "test")}
        test = splits["test"][: args.test_images]
        pythae, pythae_seconds = train_pythae(name, args, out / f"pythae-{name}", splits)
        images = args.epochs * len(splits["train"])
        row = {
            "model": name,
            "vaerun images/s": images / metrics["time/train_s"],
            "pythae images/s": images / pythae_seconds,
        }
        if name == "vqvae":
            row["vaerun MSE"], row["vaerun perplexity"] = vq_scores_vaerun(out / f"vaerun-{name}", test)
            row["pythae MSE"], row["pythae perplexity"] = vq_scores_pythae(pythae, test)
            row["vaerun rate (bits)"] = metrics["test/rate_bits"]
        else:
            row["vaerun NLL"] = metrics["test/nll_iwae"]
            row["vaerun NLL se"] = metrics["test/nll_iwae_se"]
            torch.manual_seed(args.seed)
            # get_nll is the mean estimate of log p(x), in nats
            row["pythae NLL"] = -pythae.get_nll(test, n_samples=args.nll_samples, batch_size=500)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print_table(rows, args)
    (out / "compare_pythae.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"runs and compare_pythae.json: {out}")


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(
        f"\nFashion-MNIST, static binarisation, {args.epochs} epochs, seed {args.seed}; -log p(x): IWAE "
        f"k={args.nll_samples} on the first {args.test_images} test images"
    )
    print("| model | vaerun | pythae | vaerun images/s | pythae images/s |")
    print("|---|---|---|---|---|")
    for row in rows:
        if row["model"] == "vqvae":
            ours = f"MSE {row['vaerun MSE']:.4f}, perplexity {row['vaerun perplexity']:.0f}"
            theirs = f"MSE {row['pythae MSE']:.4f}, perplexity {row['pythae perplexity']:.0f}"
        else:
            ours = f"{row['vaerun NLL']:.2f} +- {row['vaerun NLL se']:.2f}"
            theirs = f"{row['pythae NLL']:.2f}"
        speeds = f"{row['vaerun images/s']:,.0f} | {row['pythae images/s']:,.0f}"
        print(f"| {row['model']} | {ours} | {theirs} | {speeds} |")


if __name__ == "__main__":
    main()
