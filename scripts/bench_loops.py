"""The training loops that scripts/bench.py compares, each on the same model, data and seed (its docstring
says what each method is), and the evaluation throughput it reports."""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class EvalRates(NamedTuple):
    """What an evaluation measurement gives: the rates of the floor (the decoder alone) and of the estimate,
    medians over EVAL_PAIRS back-to-back pairs, and the median and quartiles of the pairs' ratios."""

    floor_rate: float
    estimate_rate: float
    ratio: float
    ratio_quartiles: tuple[float, float]
    #: the process's minor page faults per unit of the estimate: memory new to the process, zero-filled by
    #: the kernel page by page (vaerun.core.host_memory keeps freed memory for reuse)
    estimate_page_faults: float


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
        sync(args.device)
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
        sync(args.device)
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
        sync(args.device)
        start = time.perf_counter()
        for idx in batches:
            torch.index_select(images, 0, idx, out=static_batch)
            graph.replay()
        sync(args.device)
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
                sync(device_)
                self._start, self._images = time.perf_counter(), 0

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
                batches = batches_of(batch)  # steps_per_execution
                self._images += sum(len(images) for images, _ in batches)

            def on_train_epoch_end(self, trainer, module) -> None:
                sync(device_)
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


def _estimate_inputs(cfg: dict, splits, args: argparse.Namespace):
    """The model (initialised with the config's seed, in eval mode, its batch norms folded as vae-run's
    stages evaluate it) and the test images of the IWAE measurements."""
    from vaerun.data import to_unit_float
    from vaerun.models.networks import fold_batch_norm
    from vaerun.stages import module_hparams
    from vaerun.training.module import AutoencoderModule

    torch.manual_seed(cfg["seed"])
    module = AutoencoderModule(**module_hparams(cfg, {}))
    if cfg["compile"]:  # as vae-run's stages do (vaerun.stages.assembly)
        module.fuse_likelihood_kernels()
    model = fold_batch_norm(module.model.to(args.device).eval())
    return model, to_unit_float(splits.test.images[: args.eval_images].to(args.device))


def profile_estimates(cfg: dict, splits, args: argparse.Namespace, rows: int = 15) -> dict[str, str]:
    """torch.profiler's tables of one IWAE estimate and one AIS estimate (each after one unprofiled; either
    skipped where its measurement is, at ``--iwae-samples 0`` or ``--ais-temperatures 0``), the operators by
    their own time: where an estimate's time goes beyond the decoder's convolutions. Keyed by what was
    profiled."""
    from torch.profiler import ProfilerActivity, profile

    model, x = _estimate_inputs(cfg, splits, args)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    options = cfg["eval"]

    @torch.no_grad()
    def iwae() -> None:
        model.log_likelihood(x, x, args.iwae_samples, options["iwae_chunk"])

    def ais() -> None:
        chains, leapfrog, kernel = options["ais_chains"], options["ais_leapfrog_steps"], options["ais_kernel"]
        model.annealed_log_likelihood(x, x, chains, args.ais_temperatures, leapfrog, kernel)

    estimates = {}
    if args.iwae_samples > 0:
        estimates[f"IWAE estimate (k={args.iwae_samples}, {args.eval_images} images)"] = iwae
    if args.ais_temperatures > 0:
        estimates[f"AIS estimate ({args.ais_temperatures} temperatures, {args.eval_images} images)"] = ais
    tables = {}
    for name, estimate in estimates.items():
        estimate()
        with profile(activities=activities) as profiled:
            estimate()
            sync(args.device)
        tables[name] = profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return tables


#: floor-and-estimate pairs an evaluation measurement times (each pair back to back, the order alternating)
EVAL_PAIRS = 15


def paired_rates(floor, floor_units: int, estimate, estimate_units: int, device: str) -> EvalRates:
    """Rates (units per second) of ``floor`` and ``estimate`` and their ratio, taken within each of
    EVAL_PAIRS back-to-back pairs and summarised by medians and quartiles: timed as the best of five of
    each, the same code's IWAE ratio moved from 0.56 to 0.80 between runs on the 2-core machine, which
    drifts; a pair sees one state of it."""

    def measured(fn) -> tuple[float, int]:
        """Its seconds and the minor page faults it took."""
        sync(device)
        start, faulted = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn()
        sync(device)
        return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faulted

    for fn in (floor, estimate):  # warm-up
        fn()
    floor_rates, estimate_rates, ratios, estimate_faults = [], [], [], 0
    for pair in range(EVAL_PAIRS):
        order = (floor, estimate) if pair % 2 == 0 else (estimate, floor)
        taken = {fn: measured(fn) for fn in order}
        floor_rates.append(floor_units / taken[floor][0])
        estimate_rates.append(estimate_units / taken[estimate][0])
        estimate_faults += taken[estimate][1]
        ratios.append(estimate_rates[-1] / floor_rates[-1])
    quartiles = statistics.quantiles(ratios, n=4)
    return EvalRates(
        statistics.median(floor_rates),
        statistics.median(estimate_rates),
        statistics.median(ratios),
        (quartiles[0], quartiles[2]),
        estimate_faults / (EVAL_PAIRS * estimate_units),
    )


@torch.no_grad()
def eval_throughput(cfg: dict, splits, args: argparse.Namespace) -> EvalRates:
    """The decoder's forward rate (rows/s) and the IWAE's (image-samples/s): the IWAE estimate is batched
    over samples and images, so it should run at close to the decoder's forward throughput. Both in the
    passes the IWAE makes (on a CPU, vaerun.models.objectives.cpu_pass_shape: at most CPU_PASS_NUMBERS
    outputs each)."""
    from vaerun.models.objectives import cpu_pass_shape

    model, x = _estimate_inputs(cfg, splits, args)
    chunk = cfg["eval"]["iwae_chunk"]
    z = torch.randn(len(x) * chunk, args.latent, device=args.device)

    rows = len(z)
    if args.device == "cpu":
        images, samples = cpu_pass_shape(len(x), args.iwae_samples, chunk, model.outputs_per_sample())
        rows = images * samples

    def decode_all() -> None:
        for piece in z.split(rows):
            model.decoder(piece)

    def estimate() -> None:
        model.log_likelihood(x, x, args.iwae_samples, chunk)

    return paired_rates(decode_all, len(z), estimate, len(x) * args.iwae_samples, args.device)


def ais_throughput(cfg: dict, splits, args: argparse.Namespace) -> EvalRates:
    """The decoder's forward and backward rate (codes/s, the gradient with respect to the codes: what each
    leapfrog step needs) and AIS's rate in the same unit (gradient evaluations of one chain per second), for
    ``args.ais_temperatures`` temperatures of the config's kernel, chains and leapfrog steps on the
    measurement's images. HMC evaluates the gradient once per leapfrog step and once at the start."""
    model, x = _estimate_inputs(cfg, splits, args)
    options = cfg["eval"]
    chains, leapfrog = options["ais_chains"], options["ais_leapfrog_steps"]
    z = torch.randn(len(x) * chains, args.latent, device=args.device)

    def decoder_gradient() -> None:
        codes = z.detach().requires_grad_(True)
        torch.autograd.grad(model.decoder(codes).sum(), codes)

    def estimate() -> None:
        model.annealed_log_likelihood(x, x, chains, args.ais_temperatures, leapfrog, options["ais_kernel"])

    evaluations = len(z) * (1 + args.ais_temperatures * leapfrog)
    return paired_rates(decoder_gradient, len(z), estimate, evaluations, args.device)
