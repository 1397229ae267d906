"""The candidate model (LightGBM) and the baselines it has to beat, on the same features."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


class Scorer(Protocol):
    """Anything that maps a feature frame to churn probabilities."""

    def score(self, X: pd.DataFrame) -> np.ndarray: ...  # noqa: N803


@dataclass
class SklearnScorer:
    """A fitted scikit-learn classifier; the positive-class probability is the score."""

    model: DummyClassifier | Pipeline

    def score(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        return np.asarray(self.model.predict_proba(X)[:, 1], dtype=np.float64)


@dataclass
class BoosterScorer:
    """A LightGBM Booster; features are passed by name in the booster's own order."""

    booster: lgb.Booster

    def score(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        cols = self.booster.feature_name()
        return np.asarray(self.booster.predict(X.loc[:, cols], num_threads=1), dtype=np.float64)


def fit_prior(X: pd.DataFrame, y: np.ndarray) -> SklearnScorer:  # noqa: N803
    """Predicts the training base rate for everyone: what a model must beat to be useful."""
    return SklearnScorer(DummyClassifier(strategy="prior").fit(X, y))


def fit_logreg(X: pd.DataFrame, y: np.ndarray, seed: int) -> SklearnScorer:  # noqa: N803
    """Median imputation (with missing-value indicators, since missing means "no recent row") + scaling + L2 LR."""
    pipe = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=2000, random_state=seed),
    )
    return SklearnScorer(pipe.fit(X, y))


@dataclass(frozen=True)
class LgbmConfig:
    """LightGBM knobs; the determinism ones are fixed, not configurable."""

    seed: int
    max_rounds: int
    early_stopping_rounds: int
    learning_rate: float
    num_leaves: int
    min_data_in_leaf: int
    num_threads: int
    extra: dict[str, Any] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        """Booster params; same params + same data give a byte-identical model."""
        return {
            "objective": "binary",
            # Early stopping watches the validation log loss only; the test metrics are computed
            # after training. A second metric here would be evaluated every round for nothing.
            "metric": ["binary_logloss"],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.9,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            # Reproducibility: one seed for every RNG, deterministic histogram building,
            # a fixed layout choice (no timing-based auto-selection) and a fixed thread count.
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
            **self.extra,
        }


def fit_lgbm(
    X_train: pd.DataFrame,  # noqa: N803
    y_train: np.ndarray,
    X_valid: pd.DataFrame,  # noqa: N803
    y_valid: np.ndarray,
    config: LgbmConfig,
) -> BoosterScorer:
    """Boost up to ``max_rounds`` rounds, stopping early on validation log loss."""
    train = lgb.Dataset(X_train, label=y_train, feature_name=list(X_train.columns), free_raw_data=False)
    valid = lgb.Dataset(X_valid, label=y_valid, reference=train, free_raw_data=False)
    booster = lgb.train(
        config.params(),
        train,
        num_boost_round=config.max_rounds,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, first_metric_only=True, verbose=False)],
    )
    # Keep only the rounds up to the best iteration, so the saved model is the one evaluated.
    best = booster.best_iteration or booster.current_iteration()
    return BoosterScorer(lgb.Booster(model_str=booster.model_to_string(num_iteration=best)))
