"""One model trained per session (real Feast, SQLite MLflow in tmp) for the behavioural tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from feature_repo.contract import Contract
from tests.conftest import FeatureEnv
from training.dataset import build_dataset
from training.pipeline import run_training
from training.registry import load_version
from training.settings import TrainSettings
from training.split import time_split


@dataclass
class TrainedModel:
    """The registered booster, its contract, the test window and a scorer that keeps Feast's ratios in step."""

    booster: lgb.Booster
    contract: Contract
    test_X: pd.DataFrame  # noqa: N815 - a feature matrix
    test_y: np.ndarray
    recompute: Callable[[pd.DataFrame], pd.DataFrame]

    def score(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        """Probabilities for ``X`` after Feast's on-demand features are recomputed from its inputs."""
        X = self.recompute(X)  # noqa: N806
        return np.asarray(self.booster.predict(X.loc[:, list(self.contract.feature_names)]), dtype=np.float64)


@pytest.fixture(scope="session")
def trained(feature_env: FeatureEnv, tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    tmp = tmp_path_factory.mktemp("model_mlflow")
    settings = TrainSettings(
        model_name="churn_behaviour", tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", max_rounds=200, seed=7
    )
    result = run_training(settings, feature_env.settings)
    booster, contract = load_version(settings.model_name, result.version)

    ds = build_dataset(feature_env.store, contract.feature_service, feature_env.data_dir / "labels.parquet", "churned")
    split = time_split(ds.times, settings.train_fraction, settings.valid_fraction)

    # Perturbing an input must move the on-demand ratios built from it, exactly as Feast
    # would: run the registered view's own transformation, never a copy of its formula.
    odfv = feature_env.store.get_on_demand_feature_view("engagement_ratios")
    assert odfv.feature_transformation is not None
    udf: Callable[[dict[str, Any]], dict[str, Any]] = odfv.feature_transformation.udf
    inputs = [f.name for src in odfv.source_feature_view_projections.values() for f in src.features]

    def recompute(X: pd.DataFrame) -> pd.DataFrame:  # noqa: N803
        cols = {c: [None if pd.isna(v) else v for v in X[c]] for c in inputs}
        out = pd.DataFrame(udf(cols), index=X.index).astype("float64")
        return X.assign(**{c: out[c] for c in out.columns})

    return TrainedModel(
        booster=booster,
        contract=contract,
        test_X=ds.X[split.test].reset_index(drop=True),
        test_y=ds.y[split.test],
        recompute=recompute,
    )
