"""LeanTracerProvider gives what the SDK's TracerProvider gives: the same OTLP bytes for the same
spans (ids and times aside), the same sampling decisions, limits and error semantics."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import AttributeValue

from observability.lean_tracer import LeanSpan, LeanTracerProvider, _root_rule
from observability.slow_traces import RecordAlwaysSampler
from tests.support import EndedSpans

pytestmark = pytest.mark.unit

RESOURCE = Resource.create({"service.name": "lean-test"})
Built = tuple[trace.TracerProvider, InMemorySpanExporter]


def lean(sampler: Sampler = ALWAYS_ON, limits: SpanLimits | None = None) -> Built:
    exporter = InMemorySpanExporter()
    provider = LeanTracerProvider(RESOURCE, sampler, limits, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def sdk(sampler: Sampler = ALWAYS_ON, limits: SpanLimits | None = None) -> Built:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler, resource=RESOURCE, span_limits=limits, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def a_request(provider: trace.TracerProvider) -> None:
    """What a prediction does, plus the API calls instrumentations make: every kind of field."""
    tracer = provider.get_tracer("skewless.test", "1.2", schema_url="https://opentelemetry.io/schemas/1.44.0")
    other = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    server = tracer.start_span(
        "GET",
        kind=SpanKind.SERVER,
        attributes={"http.request.method": "GET", "server.port": 8000, "url.path": "/v1/predict/u1"},
        links=[Link(other, {"why": "batch"})],
    )
    token = context.attach(trace.set_span_in_context(server))
    try:
        with tracer.start_as_current_span("feature_retrieval", attributes={"entity_count": 2}) as features:
            features.set_attribute("tags", ["a", "b"])
            features.set_attributes({"ratio": 0.5, "ok": True})
            features.add_event("cache miss", {"keys": 2})
            with tracer.start_span("HMGET", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}):
                pass
        with pytest.raises(ValueError), tracer.start_as_current_span("model_inference"):
            raise ValueError("bad row")
        server.update_name("GET /v1/predict/{entity_id}")
        server.set_attribute("http.response.status_code", 200)
        server.set_status(StatusCode.OK)
        server.set_status(StatusCode.ERROR, "ignored: OK is final")
    finally:
        context.detach(token)
        server.end()


def normalised(spans: tuple[ReadableSpan, ...]) -> ExportTraceServiceRequest:
    """The OTLP request the exporters would send, with ids, times and stack traces made comparable."""
    request = encode_spans(spans)
    ids: dict[bytes, bytes] = {}
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                for field in ("trace_id", "span_id", "parent_span_id"):
                    value = getattr(span, field)
                    if value:
                        setattr(span, field, ids.setdefault(value, len(ids).to_bytes(8, "big")))
                span.start_time_unix_nano = span.end_time_unix_nano = 0
                for event in span.events:
                    event.time_unix_nano = 0
                    for kv in event.attributes:
                        if kv.key == "exception.stacktrace":
                            kv.value.string_value = kv.value.string_value.splitlines()[-1]
    return request


def test_the_same_spans_encode_to_the_same_otlp_request_as_the_sdk() -> None:
    results = []
    for build in (sdk, lean):
        provider, exporter = build()
        a_request(provider)
        spans = exporter.get_finished_spans()
        assert [s.name for s in spans] == [
            "HMGET",
            "feature_retrieval",
            "model_inference",
            "GET /v1/predict/{entity_id}",
        ]
        results.append(normalised(spans))
    assert results[1] == results[0]
    assert results[0].ByteSize() > 500  # the comparison covered real content


def test_errors_are_recorded_as_the_sdk_records_them() -> None:
    provider, exporter = lean()
    a_request(provider)
    failed = next(s for s in exporter.get_finished_spans() if s.name == "model_inference")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValueError: bad row"
    (event,) = failed.events
    assert event.name == "exception"
    assert event.attributes is not None and event.attributes["exception.type"] == "ValueError"
    server = exporter.get_finished_spans()[-1]
    assert server.status.status_code is StatusCode.OK


@pytest.mark.parametrize(
    "sampler",
    [
        ALWAYS_ON,
        ALWAYS_OFF,
        ParentBased(TraceIdRatioBased(0.5)),
        TraceIdRatioBased(0.5),
        RecordAlwaysSampler(ALWAYS_OFF),
    ],
    ids=["always_on", "always_off", "parentbased_ratio", "ratio", "record_always"],
)
def test_sampling_decisions_match_the_sdk_for_roots_children_and_remote_parents(sampler: Sampler) -> None:
    def decisions(build: Callable[..., Built]) -> list[tuple[bool, bool]]:
        provider, _ = build(sampler)
        tracer = provider.get_tracer("t")
        seen = []
        for trace_id in range(1, 2**64, 2**58 + 12345):  # ids either side of the ratio's bound
            for remote_flags in (TraceFlags.SAMPLED, TraceFlags.DEFAULT):
                remote = SpanContext(trace_id, 7, is_remote=True, trace_flags=TraceFlags(remote_flags))
                parent_ctx = trace.set_span_in_context(NonRecordingSpan(remote))
                root = tracer.start_span("root", context=parent_ctx)
                child = tracer.start_span("child", context=trace.set_span_in_context(root))
                for span in (root, child):
                    seen.append((span.is_recording(), span.get_span_context().trace_flags.sampled))
                    assert span.get_span_context().trace_id == trace_id
                child.end()
                root.end()
        return seen

    assert decisions(lean) == decisions(sdk)


class _Renaming(Sampler):
    """Samples everything, and gives each root span attributes of its own, as a sampler may."""

    def should_sample(self, *args: object, **kwargs: object) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE, {"chosen.by": "sampler"})

    def get_description(self) -> str:
        return "renaming"


@pytest.mark.parametrize(
    "sampler",
    [ALWAYS_ON, TraceIdRatioBased(1.0), RecordAlwaysSampler(ALWAYS_OFF), _Renaming()],
    ids=["always_on", "ratio", "record_always_over_drop", "sampler_sets_attributes"],
)
def test_a_roots_attributes_are_the_samplers_as_in_the_sdk(sampler: Sampler) -> None:
    def recorded(build: Callable[..., Built]) -> dict[str, object]:
        provider, _ = build(sampler)
        span = provider.get_tracer("t").start_span("root", attributes={"http.request.method": "GET", "n": 1})
        assert span.is_recording()
        return dict(span.attributes)  # type: ignore[attr-defined]  # both providers' spans have them

    assert recorded(lean) == recorded(sdk)
    # The record-always upgrade keeps the span's own attributes (a dropped result has none).
    if isinstance(sampler, RecordAlwaysSampler):
        assert recorded(lean) == {"http.request.method": "GET", "n": 1}


def test_a_fresh_root_gets_a_new_trace_and_children_share_it() -> None:
    provider, exporter = lean()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root") as root, tracer.start_as_current_span("child") as child:
        assert child.get_span_context().trace_id == root.get_span_context().trace_id
    child_span, root_span = exporter.get_finished_spans()
    assert root_span.parent is None
    assert child_span.parent is not None and child_span.parent.span_id == root.get_span_context().span_id


def test_limits_drop_the_oldest_attributes_and_events_and_truncate_strings() -> None:
    limits = SpanLimits(max_span_attributes=2, max_events=1, max_attribute_length=3)
    provider, exporter = lean(limits=limits)
    span = provider.get_tracer("t").start_span("s", attributes={"a": 1, "b": 2})
    span.set_attribute("c", "long value")
    span.add_event("first")
    span.add_event("second")
    span.end()
    (done,) = exporter.get_finished_spans()
    assert dict(done.attributes or {}) == {"b": 2, "c": "lon"}
    assert done.dropped_attributes == 1
    assert [e.name for e in done.events] == ["second"]
    assert done.dropped_events == 1


def test_an_ended_span_ignores_writes_and_is_exported_once(caplog: pytest.LogCaptureFixture) -> None:
    provider, exporter = lean()
    span = provider.get_tracer("t").start_span("s")
    span.end()
    with caplog.at_level(logging.WARNING):
        span.set_attribute("late", 1)
        span.set_status(Status(StatusCode.ERROR))
        span.end()
    (done,) = exporter.get_finished_spans()
    assert "late" not in (done.attributes or {})
    assert done.status.status_code is StatusCode.UNSET
    assert not span.is_recording()
    assert "ended span" in caplog.text


def test_odd_attribute_values_are_cleaned_as_the_sdk_cleans_them() -> None:
    values = {"tuple": (1, 2), "nested": [["x"]], "none": None, "bytes": b"\x00", "obj": object(), "": 1}
    kept = []
    for build in (sdk, lean):
        provider, exporter = build()
        span = provider.get_tracer("t").start_span("s")
        span.set_attributes(values)  # type: ignore[arg-type]  # deliberately not AnyValue
        span.end()
        kept.append(dict(exporter.get_finished_spans()[0].attributes or {}))
    assert kept[1] == kept[0]


def test_what_exporters_read_equals_the_sdks_values() -> None:
    """Ids, resource and scope are plain-slot subclasses: equal to the API's objects, and read-only."""
    import pickle

    provider = LeanTracerProvider(RESOURCE, ALWAYS_ON, shutdown_on_exit=False)
    tracer = provider.get_tracer("scope", "1.2", schema_url="https://example.com/s", attributes={"k": "v"})
    span = tracer.start_span("x")
    ctx = span.get_span_context()
    same = SpanContext(ctx.trace_id, ctx.span_id, ctx.is_remote, ctx.trace_flags, ctx.trace_state)
    assert ctx == same and ctx.is_valid and pickle.loads(pickle.dumps(ctx)) == same
    resource = span.resource  # type: ignore[attr-defined]
    assert dict(resource.attributes) == dict(RESOURCE.attributes) and resource.schema_url == RESOURCE.schema_url
    with pytest.raises(TypeError):
        resource.attributes["service.name"] = "changed"
    scope = span.instrumentation_scope  # type: ignore[attr-defined]
    assert (scope.name, scope.version, scope.schema_url, dict(scope.attributes)) == (
        "scope",
        "1.2",
        "https://example.com/s",
        {"k": "v"},
    )

    class Zero(IdGenerator):  # an id generator that gives an invalid span id: the span must say so
        def generate_span_id(self) -> int:
            return 0

        def generate_trace_id(self) -> int:
            return 1

    zero = LeanTracerProvider(RESOURCE, ALWAYS_ON, id_generator=Zero(), shutdown_on_exit=False)
    assert not zero.get_tracer("t").start_span("x").get_span_context().is_valid


class _Given(IdGenerator):
    """Hands out the trace ids it is given, so a root's decision can be compared for chosen ids."""

    def __init__(self, trace_ids: list[int]) -> None:
        self.trace_ids = list(trace_ids)
        self.span_ids = iter(range(1, 2**20))

    def generate_trace_id(self) -> int:
        return self.trace_ids.pop(0)

    def generate_span_id(self) -> int:
        return next(self.span_ids)


_BOUND = TraceIdRatioBased.get_bound_for_rate(0.3)
# Either side of the 0.3 ratio's bound (and on it), the largest low half, and high bits the samplers ignore.
_RATIO_IDS = [*range(1, 2**64, 2**58 + 12345), _BOUND - 1, _BOUND, _BOUND + 1, 2**64 - 1, 2**127 + 5]


@pytest.mark.parametrize(
    "sampler",
    [
        ALWAYS_ON,
        ALWAYS_OFF,
        ParentBased(ALWAYS_ON),
        TraceIdRatioBased(0.3),
        ParentBasedTraceIdRatio(0.3),
        ParentBasedTraceIdRatio(1.0),
        ParentBased(ALWAYS_OFF),
        RecordAlwaysSampler(ParentBasedTraceIdRatio(0.3)),
        RecordAlwaysSampler(ALWAYS_OFF),
    ],
    ids=[
        "always_on",
        "always_off",
        "parentbased_always_on",
        "ratio",
        "parentbased_ratio",
        "parentbased_ratio_1",
        "parentbased_off",
        "record_always_ratio",
        "record_always_off",
    ],
)
def test_a_fresh_roots_decision_without_asking_the_sampler_is_the_samplers(sampler: Sampler) -> None:
    # These are the samplers OTEL_TRACES_SAMPLER builds: the lean tracer decides their roots itself.
    assert _root_rule(sampler) is not None

    def decisions(provider: trace.TracerProvider) -> list[tuple[bool, bool, dict[str, object]]]:
        tracer = provider.get_tracer("t")
        seen = []
        for _ in _RATIO_IDS:
            root = tracer.start_span("root", attributes={"n": 1})
            ctx = root.get_span_context()
            attributes = dict(getattr(root, "attributes", None) or {})
            seen.append((root.is_recording(), ctx.trace_flags.sampled, attributes))
            assert not ctx.trace_state  # the samplers give a fresh root no trace state
            root.end()
        return seen

    lean_provider = LeanTracerProvider(RESOURCE, sampler, id_generator=_Given(_RATIO_IDS), shutdown_on_exit=False)
    sdk_provider = TracerProvider(
        sampler=sampler, resource=RESOURCE, id_generator=_Given(_RATIO_IDS), shutdown_on_exit=False
    )
    assert decisions(lean_provider) == decisions(sdk_provider)


def test_other_samplers_are_still_asked_for_roots() -> None:
    assert _root_rule(_Renaming()) is None
    assert _root_rule(ParentBased(_Renaming())) is None
    assert _root_rule(RecordAlwaysSampler(ParentBased(_Renaming()))) is None


def test_a_child_started_from_its_parent_is_the_child_started_from_a_context() -> None:
    def spans(direct: bool) -> ExportTraceServiceRequest:
        provider = LeanTracerProvider(RESOURCE, ALWAYS_ON, shutdown_on_exit=False)
        ended = EndedSpans()
        provider.add_span_processor(ended)
        assert provider.starters == []
        tracer = provider.get_tracer("t")
        root = tracer.start_span("root", kind=SpanKind.SERVER)
        assert isinstance(root, LeanSpan)
        attributes: dict[str, AttributeValue] = {"db.system": "redis", "n": 2}
        if direct:

            def not_called(*args: object, **kwargs: object) -> trace.Span:
                raise AssertionError("start_child went through start_span")

            tracer.start_span = not_called  # type: ignore[method-assign]
            child = tracer.start_child("HMGET", root, SpanKind.CLIENT, attributes)
        else:
            child = tracer.start_span("HMGET", trace.set_span_in_context(root), SpanKind.CLIENT, attributes)
        assert child.get_span_context().trace_id == root.get_span_context().trace_id
        assert child.get_span_context().is_valid
        child.end()
        root.end()
        late = tracer.start_child("late", root, SpanKind.INTERNAL, None)  # under an ended parent: not recorded
        assert not late.is_recording() and late.get_span_context().is_valid
        return normalised(tuple(ended.spans))

    assert spans(direct=True) == spans(direct=False)


def test_statuses_and_the_empty_trace_state_read_as_the_apis() -> None:
    """What exporters read as plain slots or C methods gives the API's values."""
    provider, exporter = lean()
    tracer = provider.get_tracer("t")
    for set_to in (None, StatusCode.OK, Status(StatusCode.ERROR, "boom"), (StatusCode.ERROR, "bad")):
        span = tracer.start_span("s")
        if isinstance(set_to, tuple):
            span.set_status(*set_to)
        elif set_to is not None:
            span.set_status(set_to)
        span.end()
    ended = exporter.get_finished_spans()
    got = [(s.status.status_code, s.status.description, s.status.is_ok, s.status.is_unset) for s in ended]
    assert got == [
        (StatusCode.UNSET, None, True, True),
        (StatusCode.OK, None, True, False),
        (StatusCode.ERROR, "boom", False, False),
        (StatusCode.ERROR, "bad", False, False),
    ]
    assert all(isinstance(s.status, Status) for s in exporter.get_finished_spans())
    state = exporter.get_finished_spans()[0].context.trace_state
    assert isinstance(state, TraceState) and list(state.items()) == [] and len(state) == 0
    assert state.add("k", "v").items() == TraceState([("k", "v")]).items()  # a new state, not the shared one
    assert list(state.items()) == []
