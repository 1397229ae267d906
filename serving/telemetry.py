"""Tracing for the API: server spans (``observability.server_span``, or FastAPI's built-in
instrumentation), Redis spans (our reader's, or the redis-py instrumentation's), our stage
spans, the X-Trace-Id header and the slow-request log.

Stage spans (``feature_retrieval``, ``model_inference``) also record their duration on the
request's stats, so a slow request's WARNING line can say where the time went without anyone
opening Jaeger first.

With export off (the embedded default) nothing is instrumented: a span nobody exports still
costs its full price (measured: server instrumentation with non-recording spans alone more
than doubled the CPU of a trivial endpoint). The middleware then only gives each request
a trace id, the caller's from ``traceparent`` or a fresh one, so X-Trace-Id and the logs
still correlate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from random import getrandbits
from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, SpanKind
from opentelemetry.util.types import AttributeValue
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability.lean_tracer import LeanSpan, LeanTracer, current_span
from observability.server_span import ServerSpans
from observability.settings import TelemetrySettings
from observability.tracing import sdk_disabled, setup_tracing, trace_id_hex
from serving.limits import HEALTH_PATHS
from serving.metrics import final_status

log = logging.getLogger(__name__)

SERVICE_NAME = "skewless-api"
# HEALTH_PATHS (probes and the scrape) get no spans, which would drown real traffic in Jaeger,
# and no slow-request log.
_PROPAGATION_HEADERS = (b"traceparent", b"tracestate")

_tracer = trace.get_tracer("skewless.serving")
_lean: LeanTracer | None = None  # the same tracer once instrument() has set tracing up
_EMPTY = Context()
_spans_on = False  # set by instrument(): stage spans only when they can be exported


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


class _Block:
    """One span around a block: started, made current if asked, ended; exceptions recorded on it.

    A class rather than a generator context manager: this runs two or three times a request,
    and the generator form (nested in the API's ``start_as_current_span`` and ``use_span``)
    cost about as much CPU as the span itself.

    Under one of our server spans the span is started from ``current_span`` and made current
    there (two C calls), not in an OpenTelemetry context; calls into instrumented libraries
    inside the block wrap themselves in ``foreign_spans``. Otherwise (FastAPI's server span,
    no request) it goes through the OpenTelemetry context as any instrumentation would.
    """

    __slots__ = ("attributes", "current", "kind", "lean", "name", "span", "t0", "timed", "token")

    def __init__(
        self, name: str, attributes: dict[str, AttributeValue] | None, kind: SpanKind, current: bool, timed: bool
    ) -> None:
        self.name = name
        self.attributes = attributes
        self.kind = kind
        self.current = current
        self.timed = timed
        self.token: Any = None
        self.lean = False
        self.span: Span = trace.INVALID_SPAN

    def __enter__(self) -> Span:
        self.t0 = time.perf_counter()
        if not _spans_on:
            self.span = trace.INVALID_SPAN  # accepts attributes and drops them, for free
            return self.span
        parent = current_span.get()
        if parent is not None and _lean is not None:
            self.span = span = _lean.start_child(self.name, parent, self.kind, self.attributes)
            if self.current and type(span) is LeanSpan:
                self.token, self.lean = current_span.set(span), True
            return span
        self.span = span = _tracer.start_span(self.name, kind=self.kind, attributes=self.attributes)
        if self.current:
            self.token = context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        span = self.span
        if self.token is not None:
            if self.lean:
                _reset_current(self.token)
            else:
                context.detach(self.token)
        if exc is not None and span.is_recording():
            if isinstance(exc, Exception):  # as the API's use_span: cancellation is not an error event
                span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
        span.end()
        if self.timed:
            stats = _stats.get()
            if stats is not None:
                stats.stages_ms[self.name] = round((time.perf_counter() - self.t0) * 1e3, 3)


def stage(name: str, attributes: dict[str, AttributeValue] | None = None, current: bool = True) -> _Block:
    """A child span of the current request, timed into its stats; exceptions are recorded on it.

    ``current=False`` for a stage that starts no spans of its own: the span is then not made the
    current one, which saves the context switch in and out.
    """
    return _Block(name, attributes, SpanKind.INTERNAL, current, timed=True)


def client_span(name: str, attributes: dict[str, AttributeValue]) -> _Block:
    """A CLIENT span for one call to another service (a Redis round trip of ``serving.redis_wire``).

    A child of the current stage, not made current itself: nothing runs inside it that traces.
    """
    return _Block(name, attributes, SpanKind.CLIENT, current=False, timed=False)


def _reset_current(token: Token[LeanSpan | None]) -> None:
    """``current_span.reset``, which raises when the block ends in another context than it began in;
    logged instead, as the OpenTelemetry API's ``detach`` does, so the span still ends."""
    try:
        current_span.reset(token)
    except ValueError:
        log.exception("a span's block ended in another context than it started in")


@contextmanager
def foreign_spans() -> Iterator[None]:
    """Make the current stage (``current_span``) the OpenTelemetry current span for the block.

    For calls into libraries whose own instrumentation reads the OpenTelemetry context (redis-py's,
    under Feast's SDK read), so their spans sit under the stage that made the call.
    """
    span = current_span.get()
    if span is None:
        yield
        return
    token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        context.detach(token)


def _local_trace_context(scope: Scope) -> Context:
    """The caller's trace (W3C traceparent) or a new one, with a span id of ours; nothing recorded.

    Ids come straight from ``random.getrandbits``, as the SDK's RandomIdGenerator makes them,
    and the propagator runs only when the caller sent a header: this runs on every untraced
    request, and the generic path cost more than the rest of this middleware.
    """
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _PROPAGATION_HEADERS}
    parent_ctx = propagate.extract(carrier) if carrier else _EMPTY
    parent = trace.get_current_span(parent_ctx).get_span_context() if carrier else trace.INVALID_SPAN_CONTEXT
    trace_id = parent.trace_id if parent.is_valid else getrandbits(128) or 1
    span = trace.NonRecordingSpan(SpanContext(trace_id, getrandbits(64) or 1, is_remote=False))
    return trace.set_span_in_context(span, parent_ctx)


class RequestTelemetry:
    """Pure ASGI middleware: the server span (when exporting), X-Trace-Id, stats, slow-request WARNING.

    With ``server_spans`` it starts each request's SERVER span and makes it current
    (``observability.server_span``: FastAPI's names and attributes, for a fraction of the CPU);
    without, the request only gets a local trace id for the header and the logs.
    """

    def __init__(self, app: ASGIApp, slow_ms: float, server_spans: ServerSpans | None, local_ids: bool) -> None:
        self.app = app
        self.slow_ms = slow_ms
        self.server_spans = server_spans
        self.local_ids = local_ids  # no server span to take the trace id from: make one

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        server = self.server_spans
        span: Span | None = None
        prefix = ""
        attached: Token[Context] | None = None
        current: Token[LeanSpan | None] | None = None
        if server is not None:
            span, ctx, prefix = server.start(scope)
            attached = context.attach(ctx)
            if type(span) is LeanSpan:
                current = current_span.set(span)
            trace_id = trace_id_hex(span)
        else:
            attached = context.attach(_local_trace_context(scope)) if self.local_ids else None
            trace_id = trace_id_hex()
        stats = RequestStats()
        token = _stats.set(stats)
        status: int | None = None
        error: BaseException | None = None
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
        except BaseException as e:
            error = e
            raise
        finally:
            _stats.reset(token)
            if error is not None and status is None and isinstance(error, Exception):
                status = 500  # what the server error handler outside answers
            if span is not None and server is not None:
                server.finish(span, scope, prefix, status, error)
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
                        "status": final_status(status, error),
                        "duration_ms": round(ms, 3),
                        "entity_count": stats.entities,
                        "stages_ms": stats.stages_ms,
                    },
                )
            if current is not None:
                _reset_current(current)
            if attached is not None:
                context.detach(attached)


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in HEALTH_PATHS


def fastapi_telemetry(settings: TelemetrySettings) -> TelemetryConfig:
    """FastAPI's own OpenTelemetry instrumentation, on only with ``SKEWLESS_SERVER_SPAN=fastapi``.

    By default the server span comes from ``RequestTelemetry`` (``observability.server_span``),
    with the same names and attributes for ~40% of the CPU (``python -m benchmarks.spans``).

    FastAPI's built-in telemetry, not opentelemetry-instrumentation-fastapi: measured on the same
    endpoint with export on, the built-in server span cost 410 µs of CPU per request against 530 µs
    for the contrib middleware (which also re-runs routing to name its span). Metrics stay with
    Prometheus and logs with our JSON handler, and per-operation spans are off: they cost another
    ~160 µs a request for spans nobody asked for.
    """
    on = settings.trace_export and settings.server_span == "fastapi" and not sdk_disabled()
    return {
        "tracing": on,
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "auto_configure": False,
        "exclude": _untraced,
    }


def instrument(app: FastAPI, settings: TelemetrySettings) -> None:
    """Set up tracing as the standard OTEL_* variables say: server, stage and Redis spans when exporting.

    With ``SKEWLESS_SERVER_SPAN=fastapi`` the server span comes from FastAPI instead
    (``fastapi_telemetry``, passed to ``FastAPI()``).
    """
    global _lean, _spans_on, _tracer
    provider = setup_tracing(SERVICE_NAME, settings)
    if provider is None:
        return
    _tracer = _lean = provider.get_tracer("skewless.serving")  # the real one, not the API's proxy
    if settings.trace_export:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        redis = RedisInstrumentor()
        if not redis.is_instrumented_by_opentelemetry:
            # Patches redis-py's client classes, so Feast's client and ours both emit command spans.
            redis.instrument(tracer_provider=provider)
        _spans_on = True
    lean = settings.trace_export and settings.server_span == "lean"
    app.add_middleware(
        RequestTelemetry,
        slow_ms=settings.slow_request_ms,
        server_spans=ServerSpans(provider) if lean else None,
        local_ids=not settings.trace_export,
    )
