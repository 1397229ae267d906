"""Which failures let a candidate in without facing the champion: only a champion serving would refuse."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

from feature_repo.contract import Contract
from training import pipeline, registry
from training.dataset import Dataset

pytestmark = pytest.mark.unit


def contract(service: str) -> Contract:
    return Contract(service, ("v:a", "v:b"), "user_id", "skewless", f"fp-{service}")


@pytest.fixture
def ds() -> Dataset:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i:07d}" for i in range(200)],
            "event_timestamp": pd.date_range("2026-01-01", periods=200, freq="h", tz="UTC"),
            "churned": rng.integers(0, 2, 200),
            "a": rng.normal(size=200),
            "b": rng.normal(size=200),
        }
    )
    return Dataset(frame=frame, contract=contract("churn_v2"), label="churned", source="test")


@pytest.fixture
def champion_on_another_service(monkeypatch: pytest.MonkeyPatch, ds: Dataset) -> None:
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(ds.X, ds.y), num_boost_round=2)
    monkeypatch.setattr(registry, "load_version", lambda name, version: (booster, contract("churn_v1")))


@pytest.mark.usefixtures("champion_on_another_service")
def test_a_champion_whose_service_is_gone_or_changed_does_not_compete(ds: Dataset) -> None:
    def gone(c: Contract, entity: pd.DataFrame) -> pd.DataFrame:
        raise pipeline.ChampionUnservableError("feature service churn_v1 is gone")

    scores, note = pipeline._champion_scores(ds, np.ones(200, dtype=bool), gone, "churn", "1")
    assert scores is None
    assert "cannot be served" in note and "gone" in note


@pytest.mark.usefixtures("champion_on_another_service")
def test_any_other_failure_to_score_the_champion_propagates(ds: Dataset) -> None:
    # A transient offline-store failure says nothing about the champion: it must not count as
    # "no champion" (which would promote the candidate on the baselines alone).
    def flaky(c: Contract, entity: pd.DataFrame) -> pd.DataFrame:
        raise OSError("parquet file busy")

    with pytest.raises(OSError, match="busy"):
        pipeline._champion_scores(ds, np.ones(200, dtype=bool), flaky, "churn", "1")


def test_a_champion_without_a_native_model_cannot_be_served(monkeypatch: pytest.MonkeyPatch, ds: Dataset) -> None:
    def no_flavor(name: str, version: str) -> None:  # what mlflow.lightgbm.load_model raises
        raise MlflowException('Model does not have the "lightgbm" flavor', RESOURCE_DOES_NOT_EXIST)

    monkeypatch.setattr(registry, "load_version", no_flavor)
    scores, note = pipeline._champion_scores(ds, np.ones(200, dtype=bool), lambda c, e: e, "churn", "1")
    assert scores is None
    assert 'does not have the "lightgbm" flavor' in note


def test_mlflow_failing_says_nothing_about_the_champion(monkeypatch: pytest.MonkeyPatch, ds: Dataset) -> None:
    def down(name: str, version: str) -> None:
        raise MlflowException("API request failed with 503", TEMPORARILY_UNAVAILABLE)

    monkeypatch.setattr(registry, "load_version", down)
    with pytest.raises(MlflowException, match="503"):
        pipeline._champion_scores(ds, np.ones(200, dtype=bool), lambda c, e: e, "churn", "1")
