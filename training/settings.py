"""Training settings (env prefix SKEWLESS_; MLflow's own variables are honoured too)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feature_repo.settings import DEFAULT_MLFLOW_TRACKING_URI, PROJECT_ROOT

DEFAULT_TRACKING_URI = DEFAULT_MLFLOW_TRACKING_URI

GateMetric = Literal["roc_auc", "pr_auc", "log_loss", "brier"]


class TrainSettings(BaseSettings):
    """Everything a training run needs besides the feature store; validated at load."""

    model_config = SettingsConfigDict(env_prefix="SKEWLESS_", extra="ignore", populate_by_name=True)

    model_name: str = Field(default="churn", min_length=1, description="Registered model name in MLflow.")
    feature_service: str = Field(
        default="churn_v1", min_length=1, description="Feast feature service = the model's contract."
    )
    labels_file: Path | None = Field(
        default=None,
        description="Parquet with user_id, event_timestamp and the label; default <data_dir>/labels.parquet.",
    )
    label_column: str = Field(default="churned", description="Binary label column in the labels file.")
    seed: int = Field(default=7, description="Seed for LightGBM and the baselines; same seed + data, same metrics.")
    max_rounds: int = Field(default=400, ge=1, le=100_000, description="Upper bound on LightGBM boosting rounds.")
    early_stopping_rounds: int = Field(default=30, ge=1, description="Stop when validation log loss stalls this long.")
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    num_leaves: int = Field(default=15, ge=2)
    min_data_in_leaf: int = Field(default=20, ge=1)
    num_threads: int = Field(
        default=2, ge=1, description="Fixed thread count: part of what makes LightGBM reproducible."
    )
    # Time split: the oldest label times train, the next validate (early stopping), the newest test.
    train_fraction: float = Field(default=0.6, gt=0, lt=1)
    valid_fraction: float = Field(default=0.2, gt=0, lt=1)
    gap_days: float = Field(
        default=0.0, ge=0, description="Days dropped between windows; set to the label horizon to stop label overlap."
    )
    gate_metric: GateMetric = Field(default="roc_auc", description="Test metric the promotion gate compares.")
    gate_min_delta: float = Field(
        default=0.0, ge=0, description="How much better than champion and baselines to promote."
    )
    tracking_uri: str = Field(
        default=DEFAULT_TRACKING_URI,
        validation_alias=AliasChoices("SKEWLESS_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI; default an embedded SQLite file under mlruns/.",
    )
    registry_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SKEWLESS_MLFLOW_REGISTRY_URI", "MLFLOW_REGISTRY_URI"),
        description="MLflow model registry URI; default the tracking URI.",
    )
    artifact_location: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SKEWLESS_MLFLOW_ARTIFACT_LOCATION"),
        description="Artifact root for a new experiment; default <repo>/mlartifacts, or mlartifacts next to "
        "a non-default SQLite file. Ignored for an MLflow server, which decides itself.",
    )
    experiment_name: str = Field(
        default="skewless-churn", validation_alias=AliasChoices("SKEWLESS_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_NAME")
    )

    @model_validator(mode="after")
    def _fractions_leave_a_test_window(self) -> TrainSettings:
        if self.train_fraction + self.valid_fraction >= 1:
            raise ValueError("train_fraction + valid_fraction must be < 1 so a test window remains")
        return self

    def sqlite_path(self) -> Path | None:
        """The database file of a SQLite tracking URI, else None."""
        if not self.tracking_uri.startswith("sqlite:///"):
            return None
        db = Path(self.tracking_uri.removeprefix("sqlite:///"))
        return db if db.is_absolute() else Path.cwd() / db

    def resolved_artifact_location(self) -> str | None:
        """Where a new experiment keeps artifacts, or None to let a tracking server decide."""
        if self.artifact_location:
            return self.artifact_location
        db = self.sqlite_path()
        if db is None:
            return None
        if self.tracking_uri == DEFAULT_TRACKING_URI:
            return (PROJECT_ROOT / "mlartifacts").as_uri()
        return (db.parent / "mlartifacts").as_uri()
