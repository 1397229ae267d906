"""A TracerProvider whose spans cost a fifth of the SDK's, feeding the SDK's span processors.

Why not the SDK's TracerProvider: on this project's 2-core reference machine one SDK span
cost ~22 µs of CPU to start and end (BoundedAttributes with a lock per span, every attribute
value re-validated, a ReadableSpan copy at end) and ~30 µs with the exporting processor. A
prediction makes four spans (server, feature retrieval, Redis, inference), so tracing alone
cost more than a quarter of an untraced request. The spans here are plain slotted objects
that already have the ReadableSpan shape the processors and OTLP exporters read, so ending
one hands the span itself on: ~7 µs a span with the export (``python -m benchmarks.spans`` prints both side by side).

What is the same as the SDK: the OpenTelemetry API (so FastAPI's and redis-py's
instrumentations use it unchanged), the sampler (built by the SDK from OTEL_TRACES_SAMPLER),
the resource, the span limits (OTEL_SPAN_*_LIMIT, OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT), status
and exception-event semantics, and the processors and exporters themselves.

What is simpler: a child of a local parent inherits the parent's sampling decision instead of
asking the sampler again. For every sampler the SDK builds from OTEL_TRACES_SAMPLER that is
the same answer (parent-based ones follow a local parent; always_on/off and traceidratio
decide by trace id alone, which parent and child share). Spans with a remote parent are asked;
so are fresh roots, except under those standard samplers, whose answer for a root is a bound on
the trace id (``_root_rule``). A child of an ended span is not recorded (the SDK would record it
if its trace is sampled); nothing here starts a span under an ended one.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from operator import itemgetter
from random import getrandbits
from time import time_ns
from types import MappingProxyType, TracebackType
from typing import NamedTuple

from opentelemetry import trace
from opentelemetry.attributes import _clean_attribute_value
from opentelemetry.context import Context, get_current
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, SpanLimits, SpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_ESCAPED,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util.types import Attributes, AttributeValue

from observability.slow_traces import RecordAlwaysSampler

log = logging.getLogger(__name__)

# The innermost of our spans made current for a block without an OpenTelemetry context: a
# request's server span and its stages (``serving.telemetry``). Building, attaching and
# detaching a Context for each stage, then looking it up again for every child, cost as much as
# the span itself; a ContextVar set and reset is two C calls. Children started with
# ``LeanTracer.start_child`` take their parent from here, logs read their span id from here
# first (``observability.logs``), and calls into instrumented libraries attach it as the
# OpenTelemetry current span around themselves (``serving.telemetry.foreign_spans``).
current_span: ContextVar[LeanSpan | None] = ContextVar("skewless_current_span", default=None)

# Values that need no cleaning: what nearly every instrumentation sets.
_PLAIN = frozenset((str, bool, int, float))
_STR = frozenset((str,))
_OK = StatusCode.OK
_DROP = Decision.DROP
_RECORD_AND_SAMPLE = Decision.RECORD_AND_SAMPLE
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_new_tuple = tuple.__new__
_MAX_TRACE_ID = 2**128 - 1
_MAX_SPAN_ID = 2**64 - 1
_LOW_64 = 2**64 - 1  # TraceIdRatioBased.TRACE_ID_LIMIT: the ratio samplers decide on these bits

# What an exporter reads of every span it copies, as plain slots or C accessors.
#
# fastotel's processor reads the span's ids, its parent's, the resource's and the scope's
# attributes for each span. Through the SDK's and the API's Python properties (and the
# resource's BoundedAttributes, iterated key by key) that was ~40 Python calls a span, a third
# of what exporting a span cost. These subclasses hold the same values, so everything that reads
# the base classes' API gets the same answers; only the reads are cheaper.


class _Ids(SpanContext):
    """A SpanContext whose fields are read by C item getters instead of Python properties."""

    __slots__ = ()
    trace_id = property(itemgetter(0))
    span_id = property(itemgetter(1))
    is_remote = property(itemgetter(2))
    trace_flags = property(itemgetter(3))
    trace_state = property(itemgetter(4))
    is_valid = property(itemgetter(5))


def _ids(trace_id: int, span_id: int, flags: TraceFlags, state: TraceState) -> SpanContext:
    """A local span's context, with SpanContext's validity rule, built without its Python ``__new__``."""
    valid = 0 < trace_id <= _MAX_TRACE_ID and 0 < span_id <= _MAX_SPAN_ID
    return _new_tuple(_Ids, (trace_id, span_id, False, flags, state, valid))


class _PlainStatus(Status):
    """The same status, its code and description as slots.

    fastotel reads both of every span it copies; through Status's Python properties that was
    two Python calls a span, a slot read is none. Built by Status's own ``__init__``, so the
    description rule (kept only with ERROR, else a warning) is the SDK's.
    """

    __slots__ = ("description", "status_code")

    def __init__(self, status_code: StatusCode = StatusCode.UNSET, description: str | None = None) -> None:
        super().__init__(status_code, description)
        self.status_code = self._status_code  # type: ignore[misc]  # a slot where Status has a property
        self.description = self._description  # type: ignore[misc]


class _EmptyState(TraceState):
    """An empty trace state whose ``items`` is the C method of its dict.

    Exporters call ``trace_state.items()`` for every span they copy, and TraceState's is a Python
    method around the same call. Nearly every span carries the empty state (one instance serves
    them all: a TraceState is immutable, its ``add``/``update`` return new ones).
    """

    def __init__(self) -> None:
        super().__init__()
        self.items = self._dict.items  # type: ignore[method-assign]  # shadows the class's, same result


_UNSET = _PlainStatus(StatusCode.UNSET)
_NO_STATE = _EmptyState()


class _PlainResource(Resource):
    """The same resource, its attributes a read-only dict view and its schema URL a slot."""

    __slots__ = ("attributes", "schema_url")

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self.attributes = MappingProxyType(dict(resource.attributes))  # type: ignore[misc]
        self.schema_url = resource.schema_url  # type: ignore[misc]


class _PlainScope(InstrumentationScope):
    """The same instrumentation scope, its fields as slots."""

    __slots__ = ("attributes", "name", "schema_url", "version")

    def __init__(self, name: str, version: str | None, schema_url: str | None, attributes: Attributes) -> None:
        super().__init__(name, version, schema_url, attributes)
        self.name = name  # type: ignore[misc]
        self.version = version  # type: ignore[misc]
        self.schema_url = schema_url  # type: ignore[misc]
        self.attributes = MappingProxyType(dict(super().attributes or {}))  # type: ignore[misc]


class LeanSpan(trace.Span):
    """A recording span; once ended it is also the ReadableSpan handed to the processors."""

    __slots__ = (
        "_record_exception",
        "_set_status_on_exception",
        "_tracer",
        "attributes",
        "context",
        "dropped_attributes",
        "dropped_events",
        "dropped_links",
        "end_time",
        "events",
        "instrumentation_scope",
        "kind",
        "links",
        "name",
        "parent",
        "resource",
        "start_time",
        "status",
    )

    def __init__(
        self,
        tracer: LeanTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link] | None,
        start_time: int | None,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> None:
        self._tracer = tracer
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.resource = tracer.resource
        self.instrumentation_scope = tracer.scope
        self.status: Status = _UNSET
        self.end_time: int | None = None
        self.dropped_attributes = self.dropped_events = self.dropped_links = 0
        self.attributes: dict[str, AttributeValue] = {}  # read-only once ended, as ReadableSpan's
        self.events: list[Event] = []
        self.links: list[Link] = []
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        if attributes:
            self._set(attributes)
        for link in links or ():
            self._add_link(link)
        self.start_time = start_time if start_time is not None else time_ns()

    # ReadableSpan's read side is plain slots (name, context, attributes, events, ...): the native
    # exporter reads a dozen of them per span, and a slot is cheaper to read than a property.
    def get_span_context(self) -> SpanContext:
        """The span's own context (ids, flags, trace state)."""
        return self.context

    # The API's write side.
    def is_recording(self) -> bool:
        """True until the span ends."""
        return self.end_time is None

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set several attributes; ignored once the span has ended."""
        if self.end_time is None or self._writable("set_attributes"):  # the check inlined: per span
            self._set(attributes)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute; ignored once the span has ended."""
        if self.end_time is None or self._writable("set_attribute"):  # the check inlined: per span
            self._set({key: value})

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        """Add an event; past the event limit the oldest is dropped."""
        if not self._writable("add_event"):
            return
        limits = self._tracer.limits
        cleaned = _cleaned(attributes, limits.max_event_attributes, limits.max_attribute_length)
        self.events.append(Event(name, cleaned, time_ns() if timestamp is None else timestamp))
        if limits.max_events is not None and len(self.events) > limits.max_events:
            del self.events[0]
            self.dropped_events += 1

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        """Add a link to another span; invalid contexts without attributes or state are ignored."""
        if self._writable("add_link"):
            self._add_link(Link(context, attributes))

    def update_name(self, name: str) -> None:
        """Rename the span."""
        if self.end_time is None or self._writable("update_name"):  # the check inlined: per span
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK: UNSET is ignored, and OK is final."""
        if (self.end_time is not None and not self._writable("set_status")) or self.status.status_code is _OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                if description is not None:
                    log.warning("Description %s ignored: pass a Status or a StatusCode and description", description)
                plain = type(status) is _PlainStatus
                self.status = status if plain else _PlainStatus(status.status_code, status.description)
        elif status is not StatusCode.UNSET:
            self.status = _PlainStatus(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An ``exception`` event with the semantic-convention attributes the SDK records."""
        import traceback

        module = type(exception).__module__
        qualname = type(exception).__qualname__
        event: dict[str, AttributeValue] = {
            EXCEPTION_TYPE: f"{module}.{qualname}" if module and module != "builtins" else qualname,
            EXCEPTION_MESSAGE: str(exception),
            EXCEPTION_STACKTRACE: "".join(traceback.format_exception(exception)),
            EXCEPTION_ESCAPED: str(escaped),
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        """Stamp the end time and hand the span to the processors; a second call only warns."""
        if self.end_time is not None:
            log.warning("Calling end() on an ended span.")
            return
        self.end_time = end_time if end_time is not None else time_ns()
        for processor in self._tracer.processors:
            processor.on_end(self)  # type: ignore[arg-type]  # has ReadableSpan's shape, see the docstring

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        """``with tracer.start_span(...)``: record an escaping exception as the SDK does, then end."""
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        super().__exit__(exc_type, exc_val, exc_tb)

    def _writable(self, what: str) -> bool:
        if self.end_time is None:
            return True
        log.warning("Tried calling %s on an ended span.", what)
        return False

    def _set(self, attributes: Mapping[str, AttributeValue]) -> None:
        own = self.attributes
        if (
            len(own) + len(attributes) <= self._tracer.plain_room  # no value to truncate, room for all
            and _PLAIN.issuperset(map(type, attributes.values()))
            and _STR.issuperset(map(type, attributes))
            and "" not in attributes
        ):
            # What every instrumentation sets: plain values under string keys, within the limits.
            # Checked in C (map, issuperset) and copied at once: the loop below cost ~0.4 µs a key.
            own.update(attributes)
            return
        limits = self._tracer.limits
        max_len = limits.max_attribute_length
        max_count = limits.max_span_attributes
        for key, value in attributes.items():
            if not key or not isinstance(key, str):
                log.warning("invalid attribute key %r: must be a non-empty string; dropped", key)
                continue
            if type(value) not in _PLAIN or (max_len is not None and type(value) is str):
                value = _clean_attribute_value(value, max_len)  # sequences, truncation, odd types
            if key not in own and max_count is not None and len(own) >= max_count:
                if max_count == 0:
                    self.dropped_attributes += 1
                    continue
                del own[next(iter(own))]  # as BoundedAttributes: the oldest makes room
                self.dropped_attributes += 1
            own[key] = value

    def _add_link(self, link: Link) -> None:
        if not link.context.is_valid and not link.attributes and not link.context.trace_state:
            return
        limits = self._tracer.limits
        if limits.max_links is not None and len(self.links) >= limits.max_links:
            self.dropped_links += 1
            return
        attributes = _cleaned(link.attributes, limits.max_link_attributes, limits.max_attribute_length)
        self.links.append(Link(link.context, attributes))


def _span_in(context: Context | None) -> trace.Span:
    """``trace.get_current_span(context)``, with one dict lookup and no ABC check for our own spans."""
    span = (context if context is not None else get_current()).get(_SPAN_KEY)
    if type(span) is LeanSpan:
        return span
    return span if isinstance(span, trace.Span) else trace.INVALID_SPAN


def _overrides(processor: SpanProcessor, method: str) -> bool:
    """Whether ``processor`` does more in ``method`` than the base class's no-op."""
    return getattr(type(processor), method) is not getattr(SpanProcessor, method)


def _cleaned(attributes: Attributes, max_count: int | None, max_len: int | None) -> dict[str, AttributeValue]:
    """Event and link attributes: cleaned as the SDK cleans them, the first ``max_count`` kept."""
    out: dict[str, AttributeValue] = {}
    for key, value in (attributes or {}).items():
        if max_count is not None and len(out) >= max_count:
            break
        if isinstance(key, str) and key:
            out[key] = _clean_attribute_value(value, max_len)
    return out


class _RootRule(NamedTuple):
    bound: int  # sampled when the trace id's low 64 bits are below it
    record: bool  # record the span anyway when not sampled (RECORD_ONLY instead of DROP)


def _root_rule(sampler: Sampler) -> _RootRule | None:
    """What ``sampler`` decides for a span with no parent, as a bound on the trace id; None if it is not that simple.

    The samplers OTEL_TRACES_SAMPLER builds (always_on/off, traceidratio and their parentbased_
    forms) answer a root by ``trace_id & 2**64-1 < bound`` alone, keep the span's attributes when
    sampling, and give no trace state. Asking them cost five Python calls and a SamplingResult a
    request. Only these exact classes are recognised (a subclass may decide otherwise); every
    other sampler is asked as before. ``tests/unit/test_lean_tracer.py`` checks the decisions
    against the samplers' own for trace ids below, on and above the bound.
    """
    record = False
    if type(sampler) is RecordAlwaysSampler:
        sampler, record = sampler.delegate, True
    if type(sampler) in (ParentBased, ParentBasedTraceIdRatio) and isinstance(sampler, ParentBased):
        sampler = sampler._root  # what ParentBased asks when there is no parent
    if type(sampler) is TraceIdRatioBased:
        return _RootRule(sampler.bound, record)
    if sampler is ALWAYS_ON:
        return _RootRule(1 << 64, record)
    if sampler is ALWAYS_OFF:
        return _RootRule(0, record)
    return None


class LeanTracer(trace.Tracer):
    """Starts LeanSpans for one instrumentation scope."""

    def __init__(self, provider: LeanTracerProvider, scope: InstrumentationScope) -> None:
        self.scope = scope
        self.resource = provider.resource
        self.limits = limits = provider.limits
        # How many attributes a span takes before any limit applies: -1 when values may need truncating.
        room = limits.max_span_attributes
        self.plain_room: int = -1 if limits.max_attribute_length is not None else (1 << 62) if room is None else room
        self.processors = provider.processors  # the provider's lists, so later additions apply
        self._starters = provider.starters
        self._sampler = provider.sampler
        self._ids = provider.id_generator
        # The SDK's default generator is getrandbits until non-zero: called directly for it.
        self._random_ids = type(provider.id_generator) is RandomIdGenerator
        self._root_rule = _root_rule(provider.sampler)

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        """A recording span, or a non-recording one carrying the ids when the trace is not recorded."""
        parent_span = _span_in(context)
        if type(parent_span) is LeanSpan and parent_span.context[5]:
            # A child of one of ours (local, valid): its decision, read straight from its slots.
            parent = parent_span.context
            trace_id, flags, state = parent[0], parent[3], parent[4]
            record = parent_span.end_time is None
        elif (parent := parent_span.get_span_context()).is_valid and not parent.is_remote:
            # Another local parent: its decision too (see the module docstring).
            trace_id, state = parent.trace_id, parent.trace_state
            flags, record = parent.trace_flags, parent_span.is_recording()
        elif not parent.is_valid and (rule := self._root_rule) is not None:
            # A new trace under a sampler whose answer for roots is a bound on the trace id (see _root_rule).
            trace_id = self._trace_id()
            sampled = trace_id & _LOW_64 < rule.bound
            flags, record = (_SAMPLED, True) if sampled else (_NOT_SAMPLED, rule.record)
            state = _NO_STATE  # the samplers give a fresh root none
        else:
            trace_id = parent.trace_id if parent.is_valid else self._trace_id()
            result = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
            record = result.decision is not _DROP
            flags = _SAMPLED if result.decision is _RECORD_AND_SAMPLE else _NOT_SAMPLED
            state = result.trace_state or _NO_STATE  # immutable, so one empty state serves every root
            # As the SDK's tracer: the sampler's attributes are the span's. The SDK's samplers hand the
            # span's own back as a read-only view; when equal, the span's dict is kept (a view is slower
            # to copy from), so the comparison is the only cost.
            if result.attributes != (attributes or {}):
                attributes = dict(result.attributes)
        span_context = _ids(trace_id, self._span_id(), flags, state)
        if not record:
            return trace.NonRecordingSpan(span_context)
        span = LeanSpan(
            self,
            name,
            span_context,
            parent if parent.is_valid else None,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        for processor in self._starters:
            processor.on_start(span, context)  # type: ignore[arg-type]  # LeanSpan has the Span API
        return span

    def start_child(
        self, name: str, parent: LeanSpan, kind: SpanKind, attributes: dict[str, AttributeValue] | None
    ) -> trace.Span:
        """``start_span`` under ``parent``, one of this provider's spans, given directly instead of in a context.

        The same span as ``start_span(name, set_span_in_context(parent), kind, attributes)``, without
        building that context or reading it back: a request's stage spans know their parent
        (``current_span``), and the lookup was a fifth of what starting one cost. As in ``start_span``,
        a child of an ended parent is not recorded.
        """
        ids = parent.context
        if self._starters or not ids[5]:  # processors that see the start get the context they expect
            return self.start_span(name, trace.set_span_in_context(parent), kind, attributes)
        if self._random_ids:  # a valid parent and a non-zero 64-bit id: valid, without _ids' checks
            span_id = getrandbits(64) or self._span_id()  # the draw inlined; 0 (never, in practice) draws again
            span_context: SpanContext = _new_tuple(_Ids, (ids[0], span_id, False, ids[3], ids[4], True))
        else:
            span_context = _ids(ids[0], self._span_id(), ids[3], ids[4])
        if parent.end_time is not None:  # as start_span: a child of an ended span is not recorded
            return trace.NonRecordingSpan(span_context)
        return LeanSpan(self, name, span_context, ids, kind, attributes, None, None, True, True)

    def _trace_id(self) -> int:
        if not self._random_ids:
            return self._ids.generate_trace_id()
        trace_id = getrandbits(128)
        while not trace_id:  # as RandomIdGenerator: never the invalid id 0
            trace_id = getrandbits(128)
        return trace_id

    def _span_id(self) -> int:
        if not self._random_ids:
            return self._ids.generate_span_id()
        span_id = getrandbits(64)
        while not span_id:
            span_id = getrandbits(64)
        return span_id

    @contextmanager
    def start_as_current_span(  # type: ignore[override]  # the API wraps it in its own decorator type
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        """Start a span and make it the current one for the block; end it on exit."""
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        with trace.use_span(span, end_on_exit, record_exception, set_status_on_exception) as current:
            yield current


class LeanTracerProvider(trace.TracerProvider):
    """The process's tracer provider: sampler and resource as the SDK builds them, SDK span processors."""

    def __init__(
        self,
        resource: Resource,
        sampler: Sampler,
        limits: SpanLimits | None = None,
        id_generator: IdGenerator | None = None,
        shutdown_on_exit: bool = True,
    ) -> None:
        self.resource = _PlainResource(resource)
        self.sampler = sampler
        self.limits = limits or SpanLimits()  # reads OTEL_SPAN_*_LIMIT and OTEL_ATTRIBUTE_* itself
        self.id_generator = id_generator or RandomIdGenerator()
        self.processors: list[SpanProcessor] = []
        # Only processors that do something when a span starts are called then: the exporting
        # ones do nothing, and the call is a measurable part of a cheap span.
        self.starters: list[SpanProcessor] = []
        self._shut_down = False
        if shutdown_on_exit:
            atexit.register(self.shutdown)

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> LeanTracer:
        """A tracer for one instrumentation scope (name, version, schema URL)."""
        scope = _PlainScope(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        return LeanTracer(self, scope)

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Processors see every span, in the order they were added."""
        self.processors.append(processor)
        if _overrides(processor, "on_start"):
            self.starters.append(processor)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush every processor; False if one did not finish in time."""
        return all([p.force_flush(timeout_millis) for p in self.processors])  # noqa: C419 - flush all, no short cut

    def shutdown(self) -> None:
        """Shut the processors down once (also at interpreter exit)."""
        if self._shut_down:
            return
        self._shut_down = True
        for processor in self.processors:
            processor.shutdown()
