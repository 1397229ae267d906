"""Tracing set-up, once per process, from the standard OTEL_* variables.

The SDK reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG),
OTEL_SDK_DISABLED and OTEL_BSP_* itself; this module only picks the exporter for
OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL and attaches it when SKEWLESS_TRACE_EXPORT is on.
With export off, spans still exist in-process, so responses and logs carry trace ids.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler, _get_from_env_or_default

from observability.bursts import MAX_WAIT_S, SpanBursts, native_on_end
from observability.lean_tracer import LeanTracerProvider
from observability.settings import TelemetrySettings
from observability.slow_traces import KeepSlowTraces, RecordAlwaysSampler

log = logging.getLogger(__name__)

_provider: LeanTracerProvider | None = None


def sdk_disabled() -> bool:
    """OTEL_SDK_DISABLED=true: no spans at all (the SDK returns no-op tracers)."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _protocol() -> str:
    return (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def _exporting_processor(native: bool) -> SpanProcessor:
    """Batches and exports sampled spans over OTLP, as OTEL_EXPORTER_OTLP_* and OTEL_BSP_* say.

    For http/protobuf, fastotel's processor by default: the SDK's BatchSpanProcessor encodes
    spans to protobuf in Python on a thread that holds the GIL, and on one core that export cost
    about as much CPU as creating the spans (~40 µs a span). fastotel copies each ended span into
    Rust and batches, encodes and sends on a native thread, with the same variables, defaults,
    retries and wire format as the SDK's exporter. Spans reach it in bursts (``observability.bursts``:
    one at a time, each woke its native thread).
    """
    if native and _protocol() == "http/protobuf":
        from fastotel import OTLPSpanProcessor

        processor = OTLPSpanProcessor()
        return SpanBursts(processor, max_wait_s=min(MAX_WAIT_S, _schedule_delay_s()), on_end=native_on_end(processor))
    return BatchSpanProcessor(_exporter())


def _schedule_delay_s() -> float:
    """OTEL_BSP_SCHEDULE_DELAY in seconds (5 s when unset or unreadable, as the SDK defaults)."""
    try:
        ms = float(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "5000"))
    except ValueError:
        ms = 5000.0
    return ms / 1000 if ms > 0 else 5.0


def _exporter() -> SpanExporter:
    """The OTLP exporter for the configured protocol; endpoint, headers and timeout come from env."""
    protocol = _protocol()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use http/protobuf or grpc")


def _resource(default_service: str) -> Resource:
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        # Neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES named us: use the component's name.
        resource = resource.merge(Resource({SERVICE_NAME: default_service}))
    return resource


def setup_tracing(default_service: str, settings: TelemetrySettings) -> LeanTracerProvider | None:
    """The process's TracerProvider, built on the first call; None when OTEL_SDK_DISABLED=true.

    Later calls return the same provider: OpenTelemetry allows one global provider per process.
    It is ``LeanTracerProvider`` (a fifth of the SDK's cost a span, see its module), with the
    SDK's samplers, resource and processors.
    """
    global _provider
    if sdk_disabled():
        return None
    if _provider is not None:
        return _provider
    exporting = _exporting_processor(settings.native_export) if settings.trace_export else None
    # The SDK builds the sampler from OTEL_TRACES_SAMPLER(_ARG). Without an exporter nothing would
    # read a recorded span, so record none; spans still get trace ids for logs and headers.
    sampler: Sampler = _get_from_env_or_default() if exporting else ALWAYS_OFF
    processor: SpanProcessor | None = exporting
    if exporting is not None and settings.keep_slow_traces:
        sampler = RecordAlwaysSampler(sampler)
        processor = KeepSlowTraces(exporting, settings.slow_request_ms / 1000)
    provider = LeanTracerProvider(_resource(default_service), sampler)
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _provider = provider
    where = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "the OTLP default endpoint")
    log.info("tracing: %s", f"exporting to {where}" if exporting else "in-process only (SKEWLESS_TRACE_EXPORT=false)")
    return provider


def flush_tracing(timeout_ms: int = 5000) -> None:
    """Export what is queued, waiting at most ``timeout_ms``; short-lived CLIs call it before exit.

    The provider itself shuts down at interpreter exit (the SDK registers that).
    """
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def trace_id_hex(span: trace.Span | None = None) -> str | None:
    """``span``'s trace id (the current span's by default) as 32 hex digits, or None outside a trace."""
    ctx = (span if span is not None else trace.get_current_span()).get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


@contextmanager
def continued_from_env(environ: Mapping[str, str] | None = None) -> Iterator[None]:
    """Continue a caller's trace handed over in TRACEPARENT/TRACESTATE (e.g. by a pipeline runner)."""
    env = os.environ if environ is None else environ
    carrier = {k.lower(): env[k] for k in ("TRACEPARENT", "TRACESTATE") if k in env}
    token = context.attach(propagate.extract(carrier)) if carrier else None
    try:
        yield
    finally:
        if token is not None:
            context.detach(token)


@contextmanager
def traced_run(component: str, name: str, settings: TelemetrySettings | None = None) -> Iterator[trace.Span]:
    """One trace per CLI run: its root span (continuing TRACEPARENT if set), flushed when the run ends.

    Failures are recorded on the root span and re-raised.
    """
    setup_tracing(component, settings or TelemetrySettings())
    try:
        with continued_from_env(), trace.get_tracer(component).start_as_current_span(name) as span:
            yield span
    finally:
        flush_tracing()
