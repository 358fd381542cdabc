"""Training throughput of vaerun against the floor and the hardware.

    python scripts/bench.py --data mnist5k --epochs 4 --repeats 3
    python scripts/bench.py --data image_folder --set data.source.path=DIR --encoder conv --image-size 64 \
        --channels 3 --precision 32-true,bf16-mixed

In one process, for the same VAE (the MLP 784-512-256-z by default, or --encoder conv / resnet at
--image-size and --channels; ReLU, Adam, the config's likelihood, the same seed):

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

GFLOP/s count a training step's forward and backward multiply-adds x 2, measured on the model with
torch.utils.flop_counter; the first line names the CPU and its bf16 units (AVX-512 BF16, AMX), which
decide what bf16-mixed can gain there. Images/s are the median over the epochs after the first of every
repeat; the repeats are interleaved (a, b, c, a, b, c, ...) because whole-run throughput on shared
machines drifts by up to 25%. Repeat r trains with seed r, so the final ELBO column gives the median and
the range over seeds: the spread against which a change of precision is judged. Several precisions
(--precision 32-true,bf16-mixed) are interleaved too, and compared with the fp32 floor.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import statistics
import sys
import time
import warnings

import torch
from bench_loops import (
    EVAL_PAIRS,
    EvalRates,
    Result,
    ais_throughput,
    eval_throughput,
    profile_estimates,
    run_bare_lightning,
    run_graph_loop,
    run_plain_loop,
    run_vaerun,
    sync,
)

import vaerun

warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*number of training batches.*")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default="mnist5k", help="a data option of vae-run (mnist5k, fashion_mnist, ...)"
    )
    parser.add_argument("--encoder", default="mlp", choices=["mlp", "conv", "resnet"])
    parser.add_argument(
        "--image-size", type=int, default=None, help="data.image_size (an image folder's images resized)"
    )
    parser.add_argument("--channels", type=int, default=None, choices=[1, 3], help="data.channels")
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
    parser.add_argument(
        "--iwae-samples",
        type=count,
        default=100,
        help="k of the IWAE throughput measurement (0 skips it)",
    )
    parser.add_argument("--eval-images", type=int, default=500, help="test images of that measurement")
    parser.add_argument(
        "--ais-temperatures",
        type=count,
        default=3,
        help="temperatures of the AIS throughput measurement (0 skips it)",
    )
    parser.add_argument(
        "--profile-eval",
        action="store_true",
        help="also print torch.profiler's tables of one IWAE and one AIS estimate (where their time goes)",
    )
    return parser.parse_args(argv)


PRECISIONS = ("32-true", "bf16-mixed")


def count(text: str) -> int:
    """A whole number of at least 0 (0 skips the measurement it sizes)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def _precisions(text: str) -> list[str]:
    chosen = text.split(",")
    unknown = [p for p in chosen if p not in PRECISIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"precision must be among {', '.join(PRECISIONS)}, got {text!r}")
    return chosen


def compose_config(args: argparse.Namespace, precision: str, seed: int = 0) -> dict:
    overrides = [
        "model=vae",
        f"encoder={args.encoder}",
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
    if args.image_size is not None:
        overrides.append(f"data.image_size={args.image_size}")
    if args.channels is not None:
        overrides.append(f"data.channels={args.channels}")
    if args.steps_per_execution is not None:
        overrides.append(f"steps_per_execution={args.steps_per_execution}")
    return vaerun.compose([*overrides, *args.set])


def training_flops_per_image(cfg: dict, datamodule) -> float:
    """Multiply-adds x 2 of one training step (forward and backward of the loss) per image, counted by
    torch.utils.flop_counter on the model itself: the MLP's and the conv nets' alike."""
    from torch.utils.flop_counter import FlopCounterMode

    from vaerun.stages import module_hparams
    from vaerun.training.module import AutoencoderModule

    model = AutoencoderModule(**module_hparams(cfg, {})).model
    x = datamodule.transform(datamodule.splits.train.images[: cfg["data"]["batch_size"]])
    with FlopCounterMode(display=False) as counter:
        model.loss_terms(x, x)["loss"].backward()
    return counter.get_total_flops() / len(x)


def cpu_line() -> str:
    """The CPU's name and the bf16 units among its flags (Linux), for any precision comparison."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    units = (("avx512_bf16", "AVX-512 BF16"), ("amx_bf16", "AMX-BF16"))
    bf16 = [unit for flag, unit in units if flag in flags]
    return f"cpu: {name}; bf16 units: {', '.join(bf16) or 'none (bf16 is emulated: expect it slower)'}"


def matmul_peak(device: str, dtype: torch.dtype, size: int) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)


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


def print_precision_table(
    args: argparse.Namespace, precision: str, results: dict, median: dict, flops_per_image: float
) -> None:
    """One precision's training rates: each method's images/s and share of the matmul peak, its ELBO over
    seeds, and the ratios between methods."""
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


def print_estimate_rates(
    args: argparse.Namespace, base: dict, eval_rates: EvalRates | None, ais_rates: EvalRates | None
) -> None:
    """The IWAE's rate against the decoder's forward, and AIS's against its forward and backward; the page
    faults (memory new to the process) each estimate took."""
    if eval_rates is not None:
        low, high = eval_rates.ratio_quartiles
        print(
            f"\neval: decoder forward {eval_rates.floor_rate:,.0f} codes/s; IWAE (k={args.iwae_samples}) "
            f"{eval_rates.estimate_rate:,.0f} image-samples/s; IWAE / decoder {eval_rates.ratio:.2f} (median "
            f"of {EVAL_PAIRS} back-to-back pairs, quartiles {low:.2f}-{high:.2f}); "
            f"{eval_rates.estimate_page_faults:.2f} page faults per image-sample"
        )
    if ais_rates is not None:
        low, high = ais_rates.ratio_quartiles
        cfg_eval = base["eval"]
        print(
            f"eval: decoder forward+backward {ais_rates.floor_rate:,.0f} codes/s; "
            f"AIS ({args.ais_temperatures} temperatures, {cfg_eval['ais_chains']} chains, "
            f"{cfg_eval['ais_kernel']} with {cfg_eval['ais_leapfrog_steps']} leapfrog steps) "
            f"{ais_rates.estimate_rate:,.0f} gradients/s; "
            f"AIS / decoder {ais_rates.ratio:.2f} (median of {EVAL_PAIRS} back-to-back pairs, quartiles "
            f"{low:.2f}-{high:.2f}); {ais_rates.estimate_page_faults:.2f} page faults per gradient"
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if "g" in args.methods and args.device != "cuda":
        raise SystemExit("bench.py: error: method g (the CUDA-graph floor) needs --device cuda")
    if args.device == "cpu":
        # as vae-run does on a CPU (vaerun.stages.assembly._tune_cpu_run), for every method alike
        import pytorch_lightning  # noqa: F401  (sets the variable on import)

        from vaerun.core.host_memory import keep_freed_memory

        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        keep_freed_memory()
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
    for cfg in configs.values():  # an image folder's shape is known once read: every method builds that
        cfg["data"]["image_shape"] = list(datamodule.image_shape)

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
    eval_rates = eval_throughput(base, splits, args) if args.iwae_samples > 0 else None
    ais_rates = ais_throughput(base, splits, args) if args.ais_temperatures > 0 else None
    profile_tables = profile_estimates(base, splits, args) if args.profile_eval else {}
    flops_per_image = training_flops_per_image(base, datamodule)
    median = {key: statistics.median(r.throughputs) for key, r in results.items() if r.throughputs}

    if args.device == "cpu":
        print(cpu_line())
    shape = "x".join(map(str, datamodule.image_shape))
    print(
        f"\n{args.data} ({shape}, encoder {args.encoder}): {len(splits.train)} train images, "
        f"batch {args.batch_size}, latent {args.latent}, "
        f"{args.device}, {torch.get_num_threads()} threads, {args.epochs} epochs x {args.repeats} repeats "
        "(seeds 0..repeats-1; images/s: median of epochs after the first; ELBO: median [range] over seeds)"
    )
    for precision in args.precision:
        print_precision_table(args, precision, results, median, flops_per_image)
    print_estimate_rates(args, base, eval_rates, ais_rates)
    for name, table in profile_tables.items():
        print(f"\none {name}, operators by their own time:\n{table}")
    print(
        f"peak memory: {peak_memory_mb(args.device):.0f} MB   (command: python scripts/bench.py "
        f"{' '.join(sys.argv[1:] if argv is None else argv)})"
    )
    os.environ.pop("LOCAL_RANK", None)


if __name__ == "__main__":
    main()
