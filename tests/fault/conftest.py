"""Fault fixtures: a small model registered in a private MLflow, and where the figures go.

The model is a LightGBM booster fitted in a second on synthetic rows with the contract's
columns: fault tests judge answers against what the healthy service said, so they need a
model the service accepts, not a good one. It keeps them independent of the training run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import lightgbm
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from feature_repo.contract import contract_for
from tests.conftest import FeatureEnv

FAULT_MODEL = "churn_fault"
PRIOR = 0.25


@dataclass(frozen=True)
class FaultModel:
    """The model fault tests serve: its registered name, tracking URI and training prior."""

    name: str
    tracking_uri: str
    prior: float


def register_model(store_env: FeatureEnv, tracking_uri: str, name: str = FAULT_MODEL) -> FaultModel:
    """Fit a booster on the contract's columns and register it as ``name@champion`` with contract tags."""
    contract = contract_for(store_env.store, "churn_v1")
    rng = np.random.default_rng(7)
    x = pd.DataFrame(rng.normal(size=(400, len(contract.feature_names))), columns=list(contract.feature_names))
    y = (x.iloc[:, 0] + 0.5 * x.iloc[:, -1] > 0).astype(int)
    booster = lightgbm.train({"objective": "binary", "verbose": -1, "num_leaves": 7}, lightgbm.Dataset(x, y), 20)
    # MLflow's fluent API is process-global; restore it so other tests keep their registry.
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        experiment = MlflowClient(tracking_uri, tracking_uri).create_experiment(f"fault-tests-{name}")
        with mlflow.start_run(experiment_id=experiment, run_name=name):
            info = mlflow.lightgbm.log_model(
                booster, name="model", registered_model_name=name, pip_requirements=["lightgbm"]
            )
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    client = MlflowClient(tracking_uri, tracking_uri)
    version = str(info.registered_model_version)
    for key, value in {**contract.to_tags(), "skewless.prior": repr(PRIOR)}.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, "champion", version)
    return FaultModel(name, tracking_uri, PRIOR)


@pytest.fixture(scope="session")
def fault_model(feature_env: FeatureEnv, tmp_path_factory: pytest.TempPathFactory) -> FaultModel:
    """A private MLflow holding one accepted model version."""
    tmp = tmp_path_factory.mktemp("fault-mlflow")
    return register_model(feature_env, f"sqlite:///{tmp / 'mlflow.db'}")


@pytest.fixture(scope="session")
def fault_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of fault_table.jsonl: one line of figures per scenario."""
    return tmp_path_factory.mktemp("fault-figures")


def baseline(url: str, candidates: list[str]) -> dict[str, float]:
    """Scores the healthy service gives ``candidates``, keeping only IDs scored 'ok'."""
    expected: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=10) as c:
        for eid in candidates:
            r = c.get(f"/v1/predict/{eid}")
            if r.status_code == 200 and r.json()["status"] == "ok":
                expected[eid] = r.json()["score"]
    assert len(expected) >= 10, "too few scorable users for a fault test"
    return expected
