"""`python -m tests.fault.register TRACKING_URI NAME`: fit a small booster on the contract's columns
and register it as NAME@champion with the contract tags and a prior.

Run as its own process because MLflow's fluent API (set_tracking_uri, start_run) is global to a
process; doing this inside pytest would move other tests' registry. The model only has to be one
serving accepts: fault tests judge answers against what the healthy service said.
"""

from __future__ import annotations

import sys

import lightgbm
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from feature_repo.contract import contract_for
from feature_repo.settings import FeastSettings
from feature_repo.store import open_store

PRIOR = 0.25


def register(tracking_uri: str, name: str) -> str:
    """Register the model; returns its version."""
    contract = contract_for(open_store(FeastSettings()), "churn_v1")
    rng = np.random.default_rng(7)
    x = pd.DataFrame(rng.normal(size=(400, len(contract.feature_names))), columns=list(contract.feature_names))
    y = (x.iloc[:, 0] + 0.5 * x.iloc[:, -1] > 0).astype(int)
    booster = lightgbm.train({"objective": "binary", "verbose": -1, "num_leaves": 7}, lightgbm.Dataset(x, y), 20)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment("fault-tests")
    with mlflow.start_run(run_name=name):
        info = mlflow.lightgbm.log_model(
            booster, name="model", registered_model_name=name, pip_requirements=["lightgbm"]
        )
    client = MlflowClient(tracking_uri, tracking_uri)
    version = str(info.registered_model_version)
    for key, value in {**contract.to_tags(), "skewless.prior": repr(PRIOR)}.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, "champion", version)
    return version


if __name__ == "__main__":
    print(register(sys.argv[1], sys.argv[2]))
