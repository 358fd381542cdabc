"""Detection metrics: the order of the scores is all that counts, whatever their scale."""

import torch
from sklearn.metrics import roc_auc_score

from vaerun.anomaly import detection_metrics


def test_perfect_reversed_and_partial_separation():
    is_anomaly = torch.tensor([False, False, True, True])
    assert detection_metrics(torch.tensor([0.1, 0.2, 0.3, 0.4]), is_anomaly)["auroc"] == 1.0
    assert detection_metrics(torch.tensor([0.4, 0.3, 0.2, 0.1]), is_anomaly)["auroc"] == 0.0
    scores = torch.tensor([0.1, 0.3, 0.2, 0.4])
    assert detection_metrics(scores, is_anomaly)["auroc"] == roc_auc_score([0, 0, 1, 1], [0.1, 0.3, 0.2, 0.4])


def test_scores_in_nats_are_not_squashed_into_ties():
    """-ELBO scores of 30-50 nats: a library that reads them as logits would tie them all (AUROC 0.5)."""
    is_anomaly = torch.tensor([False, False, True, True])
    metrics = detection_metrics(torch.tensor([30.0, 31.0, 45.0, 50.0]), is_anomaly)
    assert metrics == {"auroc": 1.0, "average_precision": 1.0}
