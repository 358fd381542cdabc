"""Anomaly detection by the one-class protocol: a model trained on one class scores the test images, and a
higher score should mean "not of that class". The models' scores come from ``Autoencoder.anomaly_scores``;
PCA's is the same squared error (``vaerun.objectives.squared_error``)."""

from __future__ import annotations

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
