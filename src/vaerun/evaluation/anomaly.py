"""Anomaly detection by the one-class protocol: a model trained on one class scores the test images, and a
higher score should mean "not of that class". The models' scores come from ``Autoencoder.anomaly_scores``;
PCA's is the same squared error (``vaerun.models.likelihoods.squared_error``).
Beside them, scores that use what
the model knows: the code's Mahalanobis distance under the normal class's codes, and the IWAE likelihood
corrected for the image's complexity (its PNG size); and a second baseline that needs no model, the
distance to the nearest training images of the normal class."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def detection_metrics(scores: Tensor, is_anomaly: Tensor) -> dict[str, float]:
    """Area under the ROC curve (0.5: chance, 1: every anomaly scores above every normal image) and average
    precision (the area under the precision-recall curve; chance is the anomalies' share). scikit-learn's:
    torchmetrics reads scores outside [0, 1] as logits and squashes them, which ties large scores such as
    -ELBO in nats."""
    from sklearn.metrics import average_precision_score, roc_auc_score  # imported where used: start-up

    target, values = is_anomaly.cpu().numpy(), scores.detach().double().cpu().numpy()
    return {
        "auroc": float(roc_auc_score(target, values)),
        "average_precision": float(average_precision_score(target, values)),
    }


def mahalanobis_scores(codes: Tensor, training_codes: Tensor, ridge: float = 1e-6) -> Tensor:
    """(z - mu)^T Sigma^-1 (z - mu) of each code under the Gaussian fitted to the training images' codes:
    how far a code lies from where the normal class puts its codes, in that class's own units. A small
    ridge (relative to the mean variance) keeps Sigma invertible when a latent dimension is unused."""
    data = training_codes.double()
    mean = data.mean(dim=0)
    covariance = torch.atleast_2d(torch.cov(data.T))
    covariance = covariance + ridge * covariance.diagonal().mean().clamp_min(1e-12) * torch.eye(
        len(mean), dtype=data.dtype, device=data.device
    )
    lower = torch.linalg.cholesky(covariance)
    whitened = torch.linalg.solve_triangular(lower, (codes.double() - mean).T, upper=False)
    return (whitened**2).sum(dim=0).to(codes.dtype)


def png_bits(images: Tensor) -> Tensor:
    """The size in bits of each uint8 image (N, C, H, W) compressed losslessly as PNG (PIL, compression
    level 9): an estimate of its complexity."""
    import io

    from PIL import Image

    sizes = []
    for image in images.cpu().numpy():
        array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG", compress_level=9)
        sizes.append(8 * buffer.tell())
    return torch.tensor(sizes, dtype=torch.float64, device=images.device)


def complexity_corrected(negative_log_likelihood: Tensor, complexity_bits: Tensor) -> Tensor:
    """Serra et al. (2020): S(x) = -log2 p(x) - L(x), the model's code length of x in bits less the code
    length of a general-purpose lossless compressor. Simple images have high likelihood under any model;
    S credits the model only for what it explains beyond that. ``negative_log_likelihood`` in nats."""
    return negative_log_likelihood.double() / math.log(2) - complexity_bits.double()


def likelihood_ratio(negative_log_likelihood: Tensor, background_negative_log_likelihood: Tensor) -> Tensor:
    """Ren et al. (2019), as an anomaly score: -log p(x) + log p_background(x), minus the log of the
    likelihood ratio between the normal class's model and a model of the whole training distribution.
    What makes an image likely under both (plain backgrounds, few edges) cancels; what the normal class's
    model alone explains remains."""
    return negative_log_likelihood - background_negative_log_likelihood


def nearest_neighbour_distances(
    queries: Tensor, references: Tensor, k: int, chunk_size: int = 1024
) -> Tensor:
    """The mean Euclidean distance of each query (N, D) to its ``k`` nearest references (M, D): the
    k-nearest-neighbour anomaly score. Queries go ``chunk_size`` at a time, so memory stays O(chunk_size x
    M) and the cost is one (N x D) by (D x M) product, |q|^2 + |r|^2 - 2 q.r, whatever N is."""
    references = references.flatten(1).float()
    reference_norms = references.square().sum(dim=1)
    distances = []
    for batch in queries.flatten(1).float().split(chunk_size):
        squared = torch.addmm(reference_norms, batch, references.T, alpha=-2)
        squared += batch.square().sum(dim=1, keepdim=True)
        nearest = squared.clamp_min_(0).topk(min(k, len(references)), dim=1, largest=False).values
        distances.append(nearest.sqrt().mean(dim=1))
    return torch.cat(distances)


def hellinger_features(images: Tensor) -> Tensor:
    """The square roots of pixel values in [0, 1]: Euclidean distance between them is the Hellinger
    distance between the images read as intensity profiles, which weighs a faint stroke where the other
    image has none as much as a change between bright levels (square roots stabilise the variance of
    intensities, as Anscombe's transform does for counts; RootSIFT uses them for the same reason)."""
    return images.float().clamp_min(0).sqrt()
