"""Tracing pieces that need no services: slow-trace keeping, exporter choice, log correlation."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import format_trace_id

from observability.logs import TraceContextFilter, _formatter
from observability.slow_traces import KeepSlowTraces, RecordAlwaysSampler
from observability.tracing import _exporter, _resource, continued_from_env
from tests.support import EndedSpans

pytestmark = pytest.mark.unit


def provider_keeping_slow(threshold_s: float, head: object) -> tuple[TracerProvider, InMemorySpanExporter]:
    exported = InMemorySpanExporter()
    provider = TracerProvider(sampler=RecordAlwaysSampler(head))  # type: ignore[arg-type]
    provider.add_span_processor(KeepSlowTraces(SimpleSpanProcessor(exported), threshold_s))
    return provider, exported


def request(provider: TracerProvider, root_ns: int) -> str:
    """A root span with two children, the root lasting ``root_ns``; returns the trace id."""
    tracer = provider.get_tracer("test")
    root = tracer.start_span("GET /v1/predict/{entity_id}", start_time=1_000)
    with trace.use_span(root):
        for name in ("feature_retrieval", "model_inference"):
            tracer.start_span(name, start_time=2_000).end(end_time=3_000)
    root.end(end_time=1_000 + root_ns)
    return format_trace_id(root.get_span_context().trace_id)


def test_dropped_traces_are_exported_only_when_slow() -> None:
    provider, exported = provider_keeping_slow(0.1, ALWAYS_OFF)
    request(provider, root_ns=50_000_000)  # 50 ms: fast, forgotten
    assert exported.get_finished_spans() == ()
    slow = request(provider, root_ns=150_000_000)  # 150 ms: kept whole
    spans = exported.get_finished_spans()
    assert {s.name for s in spans} == {"GET /v1/predict/{entity_id}", "feature_retrieval", "model_inference"}
    assert {format_trace_id(s.context.trace_id) for s in spans} == {slow}
    assert all(s.context.trace_flags.sampled for s in spans)
    root = next(s for s in spans if s.parent is None)
    assert all(s.parent.span_id == root.context.span_id for s in spans if s.parent is not None)


def test_parallel_requests_in_one_callers_trace_keep_their_own_spans() -> None:
    # An upstream that does not sample (traceparent ...-00) calls us twice in parallel: both
    # requests share its trace id. The fast one ending first must not take the slow one's spans.
    provider, exported = provider_keeping_slow(0.1, ParentBased(ALWAYS_OFF))
    caller = trace.NonRecordingSpan(trace.SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=trace.TraceFlags(0)))
    tracer = provider.get_tracer("test")
    with trace.use_span(caller):
        slow = tracer.start_span("GET slow", start_time=1_000)
        fast = tracer.start_span("GET fast", start_time=1_000)
    with trace.use_span(slow):
        tracer.start_span("HMGET slow", start_time=2_000).end(end_time=120_000_000)
    with trace.use_span(fast):
        tracer.start_span("HMGET fast", start_time=2_000).end(end_time=3_000)
    fast.end(end_time=5_000)  # fast: forgotten, with its own child only
    assert exported.get_finished_spans() == ()
    slow.end(end_time=150_000_000)  # slow: exported whole, nothing of the fast one
    assert sorted(s.name for s in exported.get_finished_spans()) == ["GET slow", "HMGET slow"]


def test_sampled_traces_pass_through_whatever_their_duration() -> None:
    provider, exported = provider_keeping_slow(0.1, ParentBased(ALWAYS_ON))
    request(provider, root_ns=1_000)
    assert len(exported.get_finished_spans()) == 3


def test_held_traces_are_bounded_when_roots_never_end() -> None:
    from observability import slow_traces

    processor = KeepSlowTraces(SimpleSpanProcessor(InMemorySpanExporter()), 0.1)
    provider = TracerProvider(sampler=RecordAlwaysSampler(ALWAYS_OFF))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for _ in range(slow_traces.MAX_PENDING_TRACES + 50):
        with trace.use_span(tracer.start_span("root-that-never-ends")):
            tracer.start_span("child").end()
    assert len(processor._pending) <= slow_traces.MAX_PENDING_TRACES + 1


def test_exporter_follows_the_standard_protocol_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    assert isinstance(_exporter(), Http)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert isinstance(_exporter(), Grpc)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")  # the per-signal one wins
    assert isinstance(_exporter(), Http)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="http/protobuf or grpc"):
        _exporter()


def test_service_name_defaults_per_component_and_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
    resource = _resource("skewless-api")
    assert resource.attributes["service.name"] == "skewless-api"
    assert resource.attributes["deployment.environment"] == "prod"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "churn-api-eu")
    assert _resource("skewless-api").attributes["service.name"] == "churn-api-eu"


def test_traceparent_in_the_environment_is_continued() -> None:
    provider = TracerProvider()
    env = {"TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with continued_from_env(env), provider.get_tracer("t").start_as_current_span("materialize") as span:
        ctx = span.get_span_context()
    assert format_trace_id(ctx.trace_id) == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent is not None and format(span.parent.span_id, "016x") == "b7ad6b7169203331"  # type: ignore[attr-defined]


def json_logger(name: str) -> tuple[logging.Logger, logging.Handler, io.StringIO]:
    """A logger writing JSON lines with trace ids to a string, as the API's handler does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_formatter("json"))
    handler.addFilter(TraceContextFilter())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
    return logger, handler, stream


def test_json_log_lines_carry_the_active_trace_and_span() -> None:
    logger, handler, stream = json_logger("skewless.test.logs")
    try:
        tracer = TracerProvider().get_tracer("t")
        with tracer.start_as_current_span("work") as span:
            logger.warning("inside", extra={"entity_count": 3})
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    ctx = span.get_span_context()
    assert inside["trace_id"] == format(ctx.trace_id, "032x") and inside["span_id"] == format(ctx.span_id, "016x")
    assert inside["level"] == "WARNING" and inside["message"] == "inside" and inside["entity_count"] == 3
    assert outside["trace_id"] is None and "time" in outside


def test_python_warnings_are_logged_as_json_and_dependency_deprecations_dropped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    from observability.logs import setup_logging
    from observability.settings import TelemetrySettings

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # setup_logging replaces ours; restored after
    monkeypatch.setattr(root, "level", root.level)
    with warnings.catch_warnings():  # restores the filters setup_logging adds
        warnings.simplefilter("always")
        with warnings.catch_warnings():  # as pytest has around each test: on exit it puts the raw hook back
            setup_logging(TelemetrySettings(log_format="json"))  # an earlier app's start-up
        setup_logging(TelemetrySettings(log_format="json"))  # this one's, in the same process
        try:
            warnings.warn("a library changed its mind", DeprecationWarning, stacklevel=1)
            warnings.warn("The ``noload`` loader strategy is deprecated (MLflow's)", DeprecationWarning, stacklevel=1)
        finally:
            logging.captureWarnings(False)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [r["logger"] for r in lines] == ["py.warnings"], lines
    assert "a library changed its mind" in lines[0]["message"] and lines[0]["level"] == "WARNING"


def test_stages_under_our_server_span_parent_their_children_and_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stages are made current in ``current_span``, not in an OpenTelemetry context: children, logs and
    instrumented libraries (inside ``foreign_spans``) still find them, and a failing stage resets it."""
    import serving.telemetry as telemetry
    from observability.lean_tracer import LeanTracerProvider, current_span

    ended = EndedSpans()
    provider = LeanTracerProvider(_resource("t"), ALWAYS_ON, shutdown_on_exit=False)
    provider.add_span_processor(ended)
    assert provider.starters == []  # so children take start_child's own path
    tracer = provider.get_tracer("skewless.serving")
    monkeypatch.setattr(telemetry, "_lean", tracer)
    monkeypatch.setattr(telemetry, "_tracer", tracer)
    monkeypatch.setattr(telemetry, "_spans_on", True)
    logger, handler, stream = json_logger("skewless.test.stages")
    server = tracer.start_span("GET", kind=trace.SpanKind.SERVER)
    attached = context.attach(trace.set_span_in_context(server))  # as RequestTelemetry does, with:
    token = current_span.set(server)
    try:
        with telemetry.stage("feature_retrieval") as stage:
            assert current_span.get() is stage
            with telemetry.client_span("HMGET", {"db.system": "redis"}):
                logger.warning("reading")
            assert trace.get_current_span() is server  # the OpenTelemetry context is left alone...
            with telemetry.foreign_spans():
                assert trace.get_current_span() is stage  # ...until a library's instrumentation needs it
            assert trace.get_current_span() is server
        assert current_span.get() is server
        with pytest.raises(RuntimeError), telemetry.stage("model_inference", current=False):
            raise RuntimeError("scorer failed")
        with pytest.raises(RuntimeError), telemetry.stage("failing"):
            raise RuntimeError("read failed")
        assert current_span.get() is server  # reset even when the stage raised
    finally:
        current_span.reset(token)
        context.detach(attached)
        logger.removeHandler(handler)
    server.end()
    spans = {s.name: s for s in ended.spans}
    ids = {name: s.context.span_id for name, s in spans.items()}
    assert spans["HMGET"].parent.span_id == ids["feature_retrieval"]  # type: ignore[union-attr]
    for name in ("feature_retrieval", "model_inference", "failing"):
        assert spans[name].parent.span_id == ids["GET"]  # type: ignore[union-attr]
    assert spans["failing"].status.status_code is trace.StatusCode.ERROR
    assert [e.name for e in spans["failing"].events] == ["exception"]
    assert {s.context.trace_id for s in spans.values()} == {server.get_span_context().trace_id}
    (line,) = (json.loads(x) for x in stream.getvalue().splitlines())
    assert line["span_id"] == format(ids["feature_retrieval"], "016x")
