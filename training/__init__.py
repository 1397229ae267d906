"""Training: point-in-time datasets from Feast, LightGBM vs baselines, MLflow registry with a gate."""
