"""The analyses of a trained model: baselines, image metrics, anomaly scores, imputation, and the
summaries of a sweep."""
