"""Tracing for the API: server spans (FastAPI instrumentation), Redis spans (redis-py
instrumentation), our stage spans, the X-Trace-Id header and the slow-request log.

Stage spans (``feature_retrieval``, ``model_inference``, ``response_encoding``) also record
their duration on the request's stats, so a slow request's WARNING line can say where the
time went without anyone opening Jaeger first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability.settings import TelemetrySettings
from observability.tracing import setup_tracing, trace_id_hex

log = logging.getLogger(__name__)

SERVICE_NAME = "skewless-api"
# Probes and scrapes: no spans (they would drown real traffic in Jaeger) and no slow-request log.
UNTRACED_PATHS = ("/health", "/ready", "/metrics")

_tracer = trace.get_tracer("skewless.serving")


@dataclass
class RequestStats:
    """What one request did, filled in by the stages as they run."""

    entities: int = 0
    stages_ms: dict[str, float] = field(default_factory=dict)


_stats: ContextVar[RequestStats | None] = ContextVar("skewless_request_stats", default=None)


def count_entities(n: int) -> None:
    """Record how many entities the current request asked for."""
    stats = _stats.get()
    if stats is not None:
        stats.entities = n


@contextmanager
def stage(name: str, attributes: dict[str, AttributeValue] | None = None) -> Iterator[Span]:
    """A child span of the current request, timed into its stats; exceptions are recorded on it."""
    t0 = time.perf_counter()
    try:
        with _tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span
    finally:
        stats = _stats.get()
        if stats is not None:
            stats.stages_ms[name] = round((time.perf_counter() - t0) * 1e3, 3)


class RequestTelemetry:
    """Pure ASGI middleware inside the server span: X-Trace-Id header, stats, slow-request WARNING."""

    def __init__(self, app: ASGIApp, slow_ms: float) -> None:
        self.app = app
        self.slow_ms = slow_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        trace_id = trace_id_hex()
        stats = RequestStats()
        token = _stats.set(stats)
        status = 500
        t0 = time.perf_counter()

        async def send_with_trace_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if trace_id:
                    message["headers"] = [*message.get("headers", ()), (b"x-trace-id", trace_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace_id)
        finally:
            _stats.reset(token)
            ms = (time.perf_counter() - t0) * 1e3
            if ms >= self.slow_ms:
                route = getattr(scope.get("route"), "path", None) or scope["path"]
                log.warning(
                    "slow request: %s %s took %.1f ms (threshold %.0f ms); trace %s",
                    scope["method"],
                    route,
                    ms,
                    self.slow_ms,
                    trace_id,
                    extra={
                        "route": route,
                        "status": status,
                        "duration_ms": round(ms, 3),
                        "entity_count": stats.entities,
                        "stages_ms": stats.stages_ms,
                    },
                )


def instrument(app: FastAPI, settings: TelemetrySettings) -> None:
    """Trace ``app`` and redis-py as the standard OTEL_* variables say; nothing when OTEL_SDK_DISABLED."""
    provider = setup_tracing(SERVICE_NAME, settings)
    if provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    redis = RedisInstrumentor()
    if not redis.is_instrumented_by_opentelemetry:
        # Patches redis-py's client classes, so Feast's client and ours both emit command spans.
        redis.instrument(tracer_provider=provider)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=",".join(f"{p}$" for p in UNTRACED_PATHS),  # matched against the full URL
        # The per-message send/receive spans cost more than they tell for small JSON answers.
        exclude_spans=["receive", "send"],
    )
    app.add_middleware(RequestTelemetry, slow_ms=settings.slow_request_ms)
