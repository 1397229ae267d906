"""Request and response bodies. Names: <Thing>Public for responses, <Thing>Request for bodies."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PredictionStatus = Literal["ok", "not_found", "unknown", "degraded"]

_PREDICTION_EXAMPLE: dict[str, Any] = {
    "entity_id": "u0000042",
    "status": "ok",
    "score": 0.12,
    "model": {"name": "churn", "version": "3", "alias": "champion"},
    "feature_service": "churn_v1",
    "missing_features": [],
    "stale_features": [],
    "degraded": False,
}


class ModelRefPublic(BaseModel):
    """Which registered model version produced a score."""

    name: str = Field(examples=["churn"])
    version: str = Field(examples=["3"])
    alias: str = Field(examples=["champion"])


class PredictionPublic(BaseModel):
    """One entity's churn score and what it was computed from."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PREDICTION_EXAMPLE]})

    entity_id: str
    status: PredictionStatus = Field(
        description=(
            "ok: scored from online features. not_found: no features stored for this ID (batch only; "
            "a single request answers 404). unknown: too many features missing to score (score is null). "
            "degraded: Redis failed and degraded mode answered the training prior."
        )
    )
    score: float | None = Field(description="Churn probability in [0, 1]; null when not scored.")
    model: ModelRefPublic
    feature_service: str
    missing_features: list[str] = Field(description="Features the model saw as missing (NaN).")
    stale_features: list[str] = Field(description="Features from views older than their TTL.")
    degraded: bool
    features: dict[str, float | int | None] | None = Field(
        None, description="With ?include_features=true: the row as the model saw it, by model column name."
    )


class PredictBatchRequest(BaseModel):
    """Entity IDs to score; the answer keeps their order."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"entity_ids": ["u0000042", "u0000043"]}]})

    entity_ids: list[str] = Field(min_length=1, description="IDs to score; at most SKEWLESS_MAX_BATCH_SIZE.")


class PredictBatchPublic(BaseModel):
    """One prediction per requested ID, in request order."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"predictions": [_PREDICTION_EXAMPLE | {"entity_id": "u0000042"}]}]}
    )

    predictions: list[PredictionPublic]


class ModelPublic(BaseModel):
    """The model being served and the contract it carries."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": {"name": "churn", "version": "3", "alias": "champion"},
                    "feature_service": "churn_v1",
                    "features": ["user_profile:is_paid", "activity_7d:logins_7d"],
                    "entity_key": "user_id",
                    "metrics": {"test_auc": 0.87},
                    "scorer": "compiled",
                }
            ]
        }
    )

    model: ModelRefPublic
    feature_service: str
    features: list[str] = Field(description="Feast feature refs in model column order.")
    entity_key: str
    metrics: dict[str, float]
    scorer: Literal["compiled", "lightgbm"] = Field(
        description="What scores: the model compiled to native code (lleaves), or LightGBM until that is ready."
    )


class HealthPublic(BaseModel):
    """Liveness: the process answers."""

    status: Literal["ok"] = "ok"


class ReadyPublic(BaseModel):
    """Readiness, with the reason when not ready."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"ready": False, "reason": "model churn@champion v4 refused: ..."}]}
    )

    ready: bool
    reason: str | None = Field(None, description="Why not ready.")
    refused: str | None = Field(None, description="Why the newest candidate version was refused (old one serves).")
    model: ModelRefPublic | None = None


class ErrorDetail(BaseModel):
    """A machine-readable code and a sentence for people."""

    code: str = Field(examples=["entity_not_found"])
    message: str = Field(examples=["no features are stored for entity 'u0000042'"])


class ErrorPublic(BaseModel):
    """Every error answer has this shape."""

    error: ErrorDetail
