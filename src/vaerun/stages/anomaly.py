"""stage=anomaly: the one-class protocol, scored by the model and by two baselines (PCA, neighbours)."""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

import torch
from pytorch_lightning.utilities import rank_zero_only

from vaerun.core.checkpoints import run_of
from vaerun.core.checks import ConfigError
from vaerun.core.run_files import data_config
from vaerun.data.splits import normal_label
from vaerun.evaluation.anomaly import (
    complexity_corrected,
    detection_metrics,
    hellinger_features,
    likelihood_ratio,
    mahalanobis_scores,
    nearest_neighbour_distances,
    png_bits,
)
from vaerun.models.autoencoders import Autoencoder, VariationalAutoencoder
from vaerun.models.likelihoods import squared_error
from vaerun.stages.assembly import setup
from vaerun.stages.checkpoints import load_module
from vaerun.stages.context import Run, encode_all, in_chunks
from vaerun.stages.train import train

log = logging.getLogger(__name__)


@rank_zero_only
@torch.no_grad()
def detect_anomalies(run: Run) -> None:
    """The model learnt data.normal_class; every test image of another class is an anomaly. AUROC and
    average precision of each of the model's scores and of the baselines' (PCA's reconstruction error, the
    distance to the nearest training images), and histograms of the scores by class."""
    normal_class = run.datamodule.normal_class  # the label, where the command named the class
    module = run.inference_model()
    model = module.model
    labels = run.datamodule.splits.test.labels.to(module.device)
    scores = _anomaly_scores(run, model, run.images("test"))
    results: dict[str, float] = {}
    for name, values in scores.items():
        for metric, value in detection_metrics(values, labels != normal_class).items():
            results[f"anomaly/{name}/{metric}"] = value
        if run.tensorboard is not None:
            for label in labels.unique().tolist():
                run.tensorboard.experiment.add_histogram(
                    f"anomaly/{name}/class_{label}", values[labels == label], run.step
                )
    trained_on = model_trained_on(run)
    run.publish(results, **{"anomaly/normal_class": normal_class, "anomaly/model_trained_on": trained_on})
    classes = run.datamodule.splits.classes
    log.info(
        "Anomaly detection, normal class %s: %s",
        f"{normal_class} ({classes[normal_class]})" if normal_class < len(classes) else normal_class,
        ", ".join(f"{name} AUROC {results[f'anomaly/{name}/auroc']:.3f}" for name in scores),
    )
    if trained_on not in ("the normal class", "unknown"):
        log.warning(
            "The model of ckpt=%s was trained on %s, the anomalies' included: its scores are not the "
            "one-class protocol's (the baselines' are). Without ckpt=, stage=anomaly trains on the normal "
            "class alone",
            run.cfg["ckpt"],
            trained_on,
        )


def _anomaly_scores(run: Run, model: Autoencoder, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each test image's scores, higher for what looks less like the normal class: the model's own, the
    likelihood ratio against a background model where one is asked for, the codes' Mahalanobis distance,
    the IWAE corrected by the PNG's bits, and the baselines' (PCA, the nearest training images)."""
    torch.manual_seed(run.cfg["seed"])
    with run.timed("anomaly_model_scores"):  # reconstruction error, -ELBO and the IWAE estimate
        scores = in_chunks(lambda x: model.anomaly_scores(x, run.cfg["anomaly"]["iwae_samples"]), images)
    background = run.cfg["anomaly"]["background_ckpt"]
    mutation_rate = run.cfg["anomaly"].get("background_mutation_rate")
    if (background is not None or mutation_rate is not None) and "nll_iwae" in scores:
        with run.timed("anomaly_background"):
            background_model = (
                _load_background(run, background)
                if background is not None
                else _train_background(run, mutation_rate)
            )
            scores["likelihood_ratio"] = likelihood_ratio(
                scores["nll_iwae"], _background_nll(run, background_model, images)
            )
    with run.timed("anomaly_mahalanobis"):
        train = run.images("train")
        scores["latent_mahalanobis"] = mahalanobis_scores(encode_all(model, images), encode_all(model, train))
    if "nll_iwae" in scores and run.datamodule.unit_range:
        with run.timed("anomaly_png_bits"):
            complexity = png_bits(run.datamodule.splits.test.images)
        scores["nll_iwae_minus_png_bits"] = complexity_corrected(
            scores["nll_iwae"], complexity.to(images.device)
        )
    with run.timed("anomaly_pca"):
        pca = run.pca(model.latent_dim)
        reconstructed = run.datamodule.clip(pca.reconstruct(images))
        scores["pca_reconstruction_error"] = squared_error(reconstructed, images)
    if run.cfg["anomaly"].get("neighbours", 0) > 0:
        with run.timed("anomaly_nearest_neighbours"):
            scores["nearest_neighbours"] = _nearest_neighbour_scores(run, images)
    return scores


def model_trained_on(run: Run) -> str:
    """Which classes the scoring model learnt: "the normal class" (trained in this run, or by ckpt= from a
    run of the same data.normal_class), "every class", "class K" (a run of another normal class), or
    "unknown" (a checkpoint whose run saved no config)."""
    if run.cfg.get("ckpt") is None:
        return "the normal class"
    data = data_config(run_of(Path(run.cfg["ckpt"])))
    if data is None:
        return "unknown"
    trained = data.get("normal_class")
    if trained is None:
        return "every class"
    try:
        same = normal_label(trained, run.datamodule.splits) == run.datamodule.normal_class
    except ConfigError:  # a class name of other data
        same = False
    return "the normal class" if same else f"class {trained}"


def _nearest_neighbour_scores(run: Run, images: torch.Tensor) -> torch.Tensor:
    """The baseline without a model: each test image's mean distance to its ``anomaly.neighbours`` nearest
    training images of the normal class (at most ``anomaly.neighbour_references`` of them, drawn with the
    run's seed), in Hellinger terms where the values are images in [0, 1], Euclidean otherwise."""
    settings = run.cfg["anomaly"]
    train = run.datamodule.splits.train.images
    limit = settings.get("neighbour_references")
    if limit is not None and len(train) > limit:  # drawn before they are made float: a pool, not a copy
        generator = torch.Generator().manual_seed(run.cfg["seed"])
        train = train[torch.randperm(len(train), generator=generator)[:limit].sort().values]
    references = run.datamodule.transform(train.to(images.device))
    features = hellinger_features if run.datamodule.unit_range else (lambda values: values)
    return nearest_neighbour_distances(features(images), features(references), settings["neighbours"])


def _load_background(run: Run, checkpoint: str) -> Autoencoder:
    try:
        background = load_module(checkpoint, run.datamodule.image_shape).model
    except ConfigError as err:
        raise ConfigError(f"anomaly.background_ckpt: {str(err).removeprefix('ckpt: ')}") from None
    if not isinstance(background, VariationalAutoencoder):
        raise ConfigError(f"anomaly.background_ckpt: {checkpoint} is not a VAE: it defines no likelihood")
    return background


def _train_background(run: Run, mutation_rate: float) -> Autoencoder:
    """Ren et al. (2019)'s background model, trained here: this run's config on the same training images of
    the normal class with ``mutation_rate`` of their pixels replaced by random levels at every draw, so
    that it learns what the images share with noise and no other class is seen. Its own run (checkpoints,
    TensorBoard events) is RUN/background, in one process."""
    cfg = copy.deepcopy(run.cfg)
    cfg["data"]["mutation_rate"] = mutation_rate
    cfg["data"].pop("source_used", None)  # what this run's setup recorded: setup records it again
    cfg["stage"], cfg["ckpt"] = "train", None
    cfg["trainer"] = {**cfg["trainer"], "devices": 1, "num_nodes": 1, "strategy": "auto"}
    log.info(
        "Training the background model on mutated images (rate %s): %s",
        mutation_rate,
        run.run_dir / "background",
    )
    shutil.rmtree(run.run_dir / "background", ignore_errors=True)  # a killed run's, made again from scratch
    with torch.enable_grad():
        background = setup(
            cfg, run.run_dir / "background", dict(run.module.hparams.get("choices", {})), set()
        )
        train(background)
    return background.inference_model().model


def _background_nll(run: Run, background: Autoencoder, images: torch.Tensor) -> torch.Tensor:
    """The IWAE estimate of -log p_background(x) of each test image, with the same k and seed."""
    background = background.to(images.device).eval()
    samples = run.cfg["anomaly"]["iwae_samples"]
    torch.manual_seed(run.cfg["seed"])

    def negative_log_likelihood(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"nll": -background.log_likelihood(x, x, samples)}

    return in_chunks(negative_log_likelihood, images)["nll"]
