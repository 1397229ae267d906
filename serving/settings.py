"""Serving settings, read from the environment (prefix SKEWLESS_) and validated at start-up."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feature_repo.settings import DEFAULT_MLFLOW_TRACKING_URI


class ServingSettings(BaseSettings):
    """What the API serves and how strictly; Feast/Redis settings live in FeastSettings."""

    model_config = SettingsConfigDict(env_prefix="SKEWLESS_", extra="ignore", protected_namespaces=())

    mlflow_tracking_uri: str | None = Field(
        DEFAULT_MLFLOW_TRACKING_URI,
        # The standard MLflow variable works too, so one env file serves training and serving.
        validation_alias=AliasChoices("SKEWLESS_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI; default: the embedded SQLite registry `make train` writes.",
    )
    model_name: str = Field("churn", min_length=1, description="Registered model name.")
    model_alias: str = Field("champion", min_length=1, description="Alias that points at the version to serve.")
    reload_interval_s: float = Field(30.0, gt=0, le=3600, description="Seconds between checks of the alias.")
    request_deadline_ms: int = Field(
        250, gt=0, le=30_000, description="Budget for the online feature read; Redis socket timeout too."
    )
    batch_deadline_ms: int = Field(
        2000, gt=0, le=60_000, description="Budget for a batch's feature read (many entities parse for longer)."
    )
    max_batch_size: int = Field(1000, ge=1, le=100_000, description="Most entity IDs in one POST /v1/predict.")
    entity_id_pattern: str = Field(
        # [0-9], not \d: \d also matches other scripts' digits, which no stored ID has.
        r"^u[0-9]{7}$",
        description="Regex every entity ID must match, whole.",
    )
    entity_id_max_length: int = Field(64, ge=1, le=1024, description="Longest entity ID accepted.")
    stale_features: Literal["missing", "score"] = Field(
        "missing",
        description=(
            "What to do with a feature view older than its TTL. 'missing' matches offline point-in-time "
            "retrieval (the skew-free default); 'score' uses the old values and only reports them."
        ),
    )
    unknown_missing_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="An entity with at least this fraction of features missing is not scored (status 'unknown').",
    )
    degraded_mode: bool = Field(
        False, description="On a Redis failure answer the training prior flagged degraded, instead of 503."
    )
    feature_reader: Literal["auto", "sdk"] = Field(
        "auto",
        description=(
            "auto: read Feast's Redis layout directly once a start-up check proves it identical to the Feast SDK "
            "(else the SDK); sdk: always Feast's get_online_features_async."
        ),
    )
    api_key: SecretStr | None = Field(
        None, description="Key clients send in the X-API-Key header; unset (and no file): no key is asked."
    )
    api_key_file: Path | None = Field(None, description="File holding the API key (a mounted secret).")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, le=256 * 1_048_576, description="Largest request body accepted; larger answers 413."
    )
    body_timeout_ms: int = Field(
        5000,
        gt=0,
        le=300_000,
        description="Most time a request body may take to arrive; slower answers 408, so a trickled body "
        "cannot hold one of the max_in_flight slots for long.",
    )
    max_in_flight: int = Field(
        64, ge=1, le=100_000, description="Requests handled at once; more are shed at once with 503 + Retry-After."
    )

    compile_model: bool = Field(
        True,
        description=(
            "Compile each loaded model to native code (lleaves) in the background and score with it once "
            "verified against LightGBM; LightGBM scores until then, or always when false."
        ),
    )
    compile_cache_dir: Path | None = Field(
        None,
        description="Private (0700) cache of compiled models; default: $TMPDIR/skewless-compiled-<uid>.",
    )

    def resolved_api_key(self) -> str | None:
        """The API key from the env var or the secret file; None when auth is off."""
        if self.api_key is not None:
            key = self.api_key.get_secret_value()
        elif self.api_key_file is not None:
            key = self.api_key_file.read_text().strip()
        else:
            return None
        if not key:
            raise ValueError("the API key is empty; unset SKEWLESS_API_KEY(_FILE) to turn auth off")
        return key

    @field_validator("entity_id_pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from e
        return v


@lru_cache
def get_serving_settings() -> ServingSettings:
    """Cached settings; tests pass their own to create_app instead of changing env."""
    return ServingSettings()
