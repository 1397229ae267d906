"""Project-level telemetry settings. Everything else comes from the standard OTEL_* variables,
which the OpenTelemetry SDK reads itself (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_TRACES_SAMPLER(_ARG), OTEL_SDK_DISABLED, OTEL_RESOURCE_ATTRIBUTES)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TelemetrySettings(BaseSettings):
    """Whether spans leave the process, how logs look, and what counts as a slow request."""

    model_config = SettingsConfigDict(env_prefix="SKEWLESS_", extra="ignore")

    trace_export: bool = Field(
        False,
        description=(
            "Export spans over OTLP to OTEL_EXPORTER_OTLP_ENDPOINT. Off in the embedded default, so a "
            "machine without a collector never logs export errors; compose and k8s turn it on."
        ),
    )
    slow_request_ms: float = Field(
        100.0, gt=0, le=600_000, description="Requests slower than this are logged at WARNING with their trace id."
    )
    keep_slow_traces: bool = Field(
        True,
        description=(
            "With export on, also export every trace slower than slow_request_ms that head sampling "
            "dropped (spans are recorded, held until the request ends, then kept or forgotten)."
        ),
    )
    native_export: bool = Field(
        True,
        description=(
            "With OTLP over HTTP, batch, encode and send spans in fastotel's native thread instead of the "
            "SDK's BatchSpanProcessor, whose encoding holds the GIL (measured: see README, Tracing)."
        ),
    )
    server_span: Literal["lean", "fastapi"] = Field(
        "lean",
        description=(
            "Who makes the HTTP server span when exporting: lean (observability.server_span, FastAPI's names "
            "and attributes for ~40% of its CPU) or fastapi (FastAPI's built-in instrumentation)."
        ),
    )
    log_format: Literal["json", "text"] = Field("json", description="json: one object a line, with trace ids.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Root log level.")


@lru_cache
def get_telemetry_settings() -> TelemetrySettings:
    """Cached settings; tests pass their own instead of changing env."""
    return TelemetrySettings()
