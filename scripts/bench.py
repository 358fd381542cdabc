"""Training throughput of vaerun against the floor and the hardware.

    python scripts/bench.py --data mnist5k --epochs 4 --repeats 3

In one process, for the same MLP VAE (784-512-256-z, ReLU, Adam, Bernoulli decoder, the same seed):

  a  a plain PyTorch loop over in-memory tensors: the same math with no framework (the floor);
  b  vaerun's LightningModule, DataModule and Trainer, built by the same code as `vae-run` (groups of
     steps_per_execution batches per Lightning item);
  c  the same LightningModule fed by a standard DataLoader over a TensorDataset, one batch per item (what
     a typical implementation does);
  d  the peak of a large matmul in the same dtype on the same device;
  l  (with --methods abcl) a bare LightningModule around the same model: no logging, callbacks or
     checkpoints, i.e. the cost of Lightning's own loop;
  g  (with --device cuda --methods abcg) the graph-captured floor: (a)'s whole step captured once as a
     CUDA graph and replayed for every batch, what one GPU can do with this model when no Python or kernel
     launch stands between steps.

Images/s are the median over the epochs after the first of every repeat; the repeats are interleaved
(a, b, c, a, b, c, ...) because whole-run throughput on shared machines drifts by up to 25%. Repeat r
trains with seed r, so the final ELBO column gives the median and the range over seeds: the spread
against which a change of precision is judged. Several precisions (--precision 32-true,bf16-mixed) are
interleaved too, and compared with the fp32 floor.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*number of training batches.*")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default="mnist5k", help="a data option of vae-run (mnist5k, fashion_mnist, ...)"
    )
    parser.add_argument("--latent", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4, help="per run; the first is warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--precision",
        default="32-true",
        type=_precisions,
        help="32-true, bf16-mixed, or both separated by a comma (interleaved, compared with the fp32 floor)",
    )
    parser.add_argument(
        "--limit-batches", type=int, default=0, help="train on the first N batches only (tests)"
    )
    parser.add_argument("--methods", default="abc", help="which of a, b, c to run")
    parser.add_argument(
        "--steps-per-execution",
        type=int,
        default=None,
        help="vaerun's steps_per_execution (default: the config's)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more vae-run override (repeatable), e.g. --set data.source.path=DIR",
    )
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--iwae-samples", type=int, default=100, help="k of the IWAE throughput measurement")
    parser.add_argument("--eval-images", type=int, default=500, help="test images of that measurement")
    return parser.parse_args(argv)


PRECISIONS = ("32-true", "bf16-mixed")


def _precisions(text: str) -> list[str]:
    chosen = text.split(",")
    unknown = [p for p in chosen if p not in PRECISIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"precision must be among {', '.join(PRECISIONS)}, got {text!r}")
    return chosen


def compose_config(args: argparse.Namespace, precision: str, seed: int = 0) -> dict:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    overrides = [
        "model=vae",
        "encoder=mlp",
        f"data={args.data}",
        f"latent={args.latent}",
        f"data.batch_size={args.batch_size}",
        f"trainer.max_epochs={args.epochs}",
        f"trainer.precision={precision}",
        f"seed={seed}",
        f"device={'gpu' if args.device == 'cuda' else 'cpu'}",
        "trainer.limit_val_batches=0",  # training throughput only
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_model_summary=false",
    ]
    if args.limit_batches:
        overrides.append(f"trainer.limit_train_batches={args.limit_batches}")
    if args.steps_per_execution is not None:
        overrides.append(f"steps_per_execution={args.steps_per_execution}")
    overrides += args.set
    with initialize_config_module("vaerun.configs", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def model_flops_per_image(latent: int, image_size: int, hidden: tuple[int, ...] = (512, 256)) -> float:
    """Multiply-adds x 2 of the linear layers, forward pass; a training step is about 3x that."""
    encoder = [image_size, *hidden, 2 * latent]
    decoder = [latent, *reversed(hidden), image_size]
    return sum(2 * a * b for sizes in (encoder, decoder) for a, b in itertools.pairwise(sizes))


def matmul_peak(device: str, dtype: torch.dtype, size: int) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Result:
    def __init__(self) -> None:
        self.throughputs: list[float] = []
        self.final_elbo: list[float] = []


def run_plain_loop(cfg: dict, splits, args: argparse.Namespace, result: Result) -> None:
    """(a) the floor: the same model and math, a hand-written loop over in-memory tensors."""
    from hydra.utils import instantiate

    from vaerun.data import to_unit_float
    from vaerun.stages import module_hparams
    from vaerun.training.module import AutoencoderModule

    torch.manual_seed(cfg["seed"])
    model = AutoencoderModule(**module_hparams(cfg, {})).model.to(args.device)
    optimizer = instantiate(cfg["optimizer"])(model.parameters())  # vaerun's optimizer: the same math
    images = splits.train.images.to(args.device)
    generator = torch.Generator().manual_seed(cfg["seed"])
    bf16 = cfg["trainer"]["precision"] == "bf16-mixed"
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=bf16)
    for epoch in range(args.epochs):
        order = torch.randperm(len(images), generator=generator).to(args.device)
        batches = order.split(args.batch_size)
        if args.limit_batches:
            batches = batches[: args.limit_batches]
        elbo_sum, seen = torch.zeros((), device=args.device), 0
        _sync(args.device)
        start = time.perf_counter()
        for idx in batches:
            x = to_unit_float(images[idx])
            with autocast:
                loss = model.loss_terms(x, x)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            elbo_sum -= loss.detach() * len(idx)  # weighted by batch size, as Lightning's epoch means
            seen += len(idx)
        _sync(args.device)
        elapsed = time.perf_counter() - start
        if epoch > 0:
            result.throughputs.append(sum(len(i) for i in batches) / elapsed)
    result.final_elbo.append((elbo_sum / seen).item())


def run_graph_loop(cfg: dict, splits, args: argparse.Namespace, result: Result) -> None:
    """(g) the graph-captured floor, CUDA only: (a)'s step (forward, backward, Adam with capturable=True,
    the ELBO sum) captured once as a CUDA graph and replayed for every full batch, the batch copied into
    the graph's static input; the last short batch of an epoch is dropped."""
    from hydra.utils import instantiate

    from vaerun.data import to_unit_float
    from vaerun.stages import module_hparams
    from vaerun.training.module import AutoencoderModule

    torch.manual_seed(cfg["seed"])
    model = AutoencoderModule(**module_hparams(cfg, {})).model.to(args.device)
    optimizer = instantiate(cfg["optimizer"])(model.parameters(), capturable=True)
    images = splits.train.images.to(args.device)
    generator = torch.Generator().manual_seed(cfg["seed"])
    bf16 = cfg["trainer"]["precision"] == "bf16-mixed"
    static_batch = images[: args.batch_size].clone()
    elbo_sum = torch.zeros((), device=args.device)

    def step() -> None:
        x = to_unit_float(static_batch)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
            loss = model.loss_terms(x, x)["loss"]
        loss.backward()
        optimizer.step()
        elbo_sum.sub_(loss.detach() * len(x))

    side = torch.cuda.Stream()  # warm-up off the default stream, as torch.cuda.graphs asks
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=False)
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=False)
    with torch.cuda.graph(graph):
        optimizer.zero_grad(set_to_none=False)
        step()
    for epoch in range(args.epochs):
        order = torch.randperm(len(images), generator=generator).to(args.device)
        batches = [idx for idx in order.split(args.batch_size) if len(idx) == args.batch_size]
        if args.limit_batches:
            batches = batches[: args.limit_batches]
        elbo_sum.zero_()
        _sync(args.device)
        start = time.perf_counter()
        for idx in batches:
            torch.index_select(images, 0, idx, out=static_batch)
            graph.replay()
        _sync(args.device)
        elapsed = time.perf_counter() - start
        if epoch > 0:
            result.throughputs.append(len(batches) * args.batch_size / elapsed)
    result.final_elbo.append((elbo_sum / (len(batches) * args.batch_size)).item())


class EpochTimer:
    """Times each training epoch from its start to the end of its last batch (no validation)."""

    def __init__(self, device: str) -> None:
        import pytorch_lightning as pl

        from vaerun.data.batches import batches_of

        device_ = device

        class _Timer(pl.Callback):
            def __init__(self) -> None:
                self.durations: list[float] = []
                self.images: list[int] = []

            def on_train_epoch_start(self, trainer, module) -> None:
                _sync(device_)
                self._start, self._images = time.perf_counter(), 0

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
                batches = batches_of(batch)  # steps_per_execution
                self._images += sum(len(images) for images, _ in batches)

            def on_train_epoch_end(self, trainer, module) -> None:
                _sync(device_)
                self.durations.append(time.perf_counter() - self._start)
                self.images.append(self._images)

        self.callback = _Timer()

    def throughputs(self) -> list[float]:
        pairs = list(zip(self.callback.images, self.callback.durations, strict=True))[1:]
        return [n / t for n, t in pairs]


def run_vaerun(cfg: dict, args: argparse.Namespace, result: Result, standard_dataloader: bool) -> None:
    """(b) vaerun as vae-run sets it up; (c) the same module fed by a standard DataLoader."""
    from vaerun import stages

    timer = EpochTimer(args.device)
    with tempfile.TemporaryDirectory() as run_dir:
        run = stages.setup(dict(cfg), Path(run_dir), {}, set(), extra_callbacks=[timer.callback])
        if standard_dataloader:
            from torch.utils.data import DataLoader, TensorDataset

            train = run.datamodule.splits.train
            keep = args.limit_batches * args.batch_size or None  # vaerun's data path applies the limit itself
            dataset = TensorDataset(train.images[:keep].float() / 255.0, train.labels[:keep])
            loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True)
            run.trainer.fit(run.module, train_dataloaders=loader)
        else:
            run.trainer.fit(run.module, datamodule=run.datamodule)
        result.final_elbo.append(-float(run.trainer.callback_metrics["train/loss_epoch"]))
    result.throughputs.extend(timer.throughputs())


def run_bare_lightning(cfg: dict, datamodule, args: argparse.Namespace, result: Result) -> None:
    """(l) Lightning's own loop around the same model and data path, and nothing else."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from vaerun.stages import module_hparams
    from vaerun.training.module import AutoencoderModule

    class Bare(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = AutoencoderModule(**module_hparams(cfg, {})).model

        def training_step(self, batch, batch_idx):
            return self.model.loss_terms(batch[0], batch[0])["loss"]

        def configure_optimizers(self):
            return instantiate(cfg["optimizer"])(self.parameters())

    torch.manual_seed(cfg["seed"])
    timer = EpochTimer(args.device)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator=args.device if args.device == "cpu" else "gpu",
        devices=1,
        precision=cfg["trainer"]["precision"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        limit_train_batches=args.limit_batches or None,
        callbacks=[timer.callback],
    )
    trainer.fit(Bare(), datamodule=datamodule)
    result.throughputs.extend(timer.throughputs())


@torch.no_grad()
def eval_throughput(cfg: dict, splits, args: argparse.Namespace) -> tuple[float, float]:
    """(decoder forward rows/s, IWAE image-samples/s): the IWAE estimate is batched over samples and
    images, so it should run at close to the decoder's forward throughput."""
    from vaerun.data import to_unit_float
    from vaerun.stages import module_hparams
    from vaerun.training.module import AutoencoderModule

    torch.manual_seed(cfg["seed"])
    model = AutoencoderModule(**module_hparams(cfg, {})).model.to(args.device).eval()
    x = to_unit_float(splits.test.images[: args.eval_images].to(args.device))
    chunk = cfg["eval"]["iwae_chunk"]
    z = torch.randn(len(x) * chunk, args.latent, device=args.device)

    def best_time(fn) -> float:
        fn()
        times = []
        for _ in range(3):
            _sync(args.device)
            start = time.perf_counter()
            fn()
            _sync(args.device)
            times.append(time.perf_counter() - start)
        return min(times)

    decoder_rate = len(z) / best_time(lambda: model.mean(z))
    iwae_rate = (
        len(x) * args.iwae_samples / best_time(lambda: model.log_likelihood(x, x, args.iwae_samples, chunk))
    )
    return decoder_rate, iwae_rate


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


NAMES = {
    "a": "plain PyTorch loop",
    "b": "vaerun (as vae-run)",
    "c": "vaerun module + DataLoader",
    "l": "bare LightningModule",
    "g": "CUDA-graph floor",
}


def _elbo_summary(elbos: list[float]) -> str:
    if not elbos:
        return ""
    if len(elbos) == 1:
        return f"{elbos[0]:.2f}"
    return f"{statistics.median(elbos):.2f} [{min(elbos):.2f}, {max(elbos):.2f}]"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if "g" in args.methods and args.device != "cuda":
        raise SystemExit("bench.py: error: method g (the CUDA-graph floor) needs --device cuda")
    if args.device == "cpu":
        # as vae-run does on a CPU (vaerun.stages.assembly._skip_nvml_probe_on_cpu), for every method alike
        import pytorch_lightning  # noqa: F401  (sets the variable on import)

        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)
    # seed is composed in, not patched afterwards: the data's shuffle seed interpolates it
    configs = {
        (precision, seed): compose_config(args, precision, seed)
        for precision in args.precision
        for seed in range(args.repeats)
    }
    base = configs[args.precision[0], 0]
    from hydra.utils import instantiate

    datamodule = instantiate(base["data"], _convert_="all")
    datamodule.setup()
    splits = datamodule.splits

    def runner(method: str, cfg: dict):
        return {
            "a": lambda r: run_plain_loop(cfg, splits, args, r),
            "b": lambda r: run_vaerun(cfg, args, r, standard_dataloader=False),
            "c": lambda r: run_vaerun(cfg, args, r, standard_dataloader=True),
            "l": lambda r: run_bare_lightning(cfg, datamodule, args, r),
            "g": lambda r: run_graph_loop(cfg, splits, args, r),
        }[method]

    results = {(p, m): Result() for p in args.precision for m in args.methods}
    for repeat in range(args.repeats):  # repeat r trains with seed r: the ELBO's range is the seeds' spread
        for precision in args.precision:
            cfg = configs[precision, repeat]
            for method in args.methods:
                runner(method, cfg)(results[precision, method])
    decoder_rate, iwae_rate = eval_throughput(base, splits, args)
    flops_per_image = 3 * model_flops_per_image(args.latent, math.prod(datamodule.image_shape))
    median = {key: statistics.median(r.throughputs) for key, r in results.items() if r.throughputs}

    print(
        f"\n{args.data}: {len(splits.train)} train images, batch {args.batch_size}, latent {args.latent}, "
        f"{args.device}, {torch.get_num_threads()} threads, {args.epochs} epochs x {args.repeats} repeats "
        "(seeds 0..repeats-1; images/s: median of epochs after the first; ELBO: median [range] over seeds)"
    )
    for precision in args.precision:
        dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
        peak = matmul_peak(args.device, dtype, args.matmul_size)
        print(f"\n{precision}")
        print(f"{'method':32s} {'images/s':>10s} {'GFLOP/s':>9s} {'of peak':>8s}  final ELBO")
        for method in args.methods:
            result = results[precision, method]
            rate = median.get((precision, method), float("nan"))
            achieved = rate * flops_per_image
            print(
                f"{method} {NAMES[method]:30s} {rate:10.0f} {achieved / 1e9:9.1f} {achieved / peak:8.1%}  "
                f"{_elbo_summary(result.final_elbo)}"
            )
        print(f"d {'matmul ' + str(args.matmul_size) + '^2 peak':30s} {'':10s} {peak / 1e9:9.1f} {1:8.0%}")
        ratios = {"b/a": ("b", "a"), "b/c": ("b", "c"), "l/a": ("l", "a"), "b/g": ("b", "g")}
        shown = [
            f"{name} = {median[precision, x] / median[precision, y]:.3f}"
            for name, (x, y) in ratios.items()
            if (precision, x) in median and (precision, y) in median
        ]
        if "32-true" in args.precision and precision != "32-true" and ("32-true", "a") in median:
            shown += [
                f"{m} / fp32 a = {median[precision, m] / median['32-true', 'a']:.3f}"
                for m in args.methods
                if (precision, m) in median
            ]
        print("   ".join(shown))
        rates = [f"{m}={median[precision, m]:.0f}" for m in args.methods if (precision, m) in median]
        ratio = [f"{name}={v}" for name, v in (x.split(" = ") for x in shown if x[:3] in ("b/a", "b/g"))]
        print(f"images/s {precision}: {' '.join(rates + ratio)}")  # one line for scripts/gpu_check.sh
        a, b = (results.get((precision, m), Result()).final_elbo for m in "ab")
        if a and len(a) == len(b):
            largest = max(abs(x - y) for x, y in zip(a, b, strict=True))
            print(f"largest |ELBO a - ELBO b| over seeds: {largest:.4f} nats")
    print(
        f"\neval: decoder forward {decoder_rate:,.0f} codes/s; IWAE (k={args.iwae_samples}) "
        f"{iwae_rate:,.0f} image-samples/s = {iwae_rate / decoder_rate:.2f} of the decoder's rate"
    )
    print(
        f"peak memory: {peak_memory_mb(args.device):.0f} MB   (command: python scripts/bench.py "
        f"{' '.join(sys.argv[1:] if argv is None else argv)})"
    )
    os.environ.pop("LOCAL_RANK", None)


if __name__ == "__main__":
    main()
