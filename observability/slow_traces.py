"""Keep every slow trace even when head sampling drops most traces, without a collector.

Head sampling decides when a request starts, before anyone knows it will be slow. So the
sampler here records every span (RECORD_ONLY when the configured sampler says drop), and the
processor holds a dropped trace's spans until its local root ends: a root slower than the
threshold gets the whole trace exported, marked sampled; a fast one is forgotten.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

_SAMPLED = TraceFlags.SAMPLED
# Traces whose root never ends (a crashed request) must not grow memory without bound.
MAX_PENDING_TRACES = 2048


class RecordAlwaysSampler(Sampler):
    """The configured sampler's decision, except that "drop" becomes "record, don't sample"."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """Delegate, then upgrade DROP to RECORD_ONLY, with the span's attributes (a dropped result has none)."""
        result = self.delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision is Decision.DROP:
            return SamplingResult(Decision.RECORD_ONLY, attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        """Shown in debug output."""
        return f"RecordAlways({self.delegate.get_description()})"


def _as_sampled(span: ReadableSpan) -> ReadableSpan:
    """The same span with the sampled flag set, so exporting processors accept it."""
    ctx = span.get_span_context()
    assert ctx is not None
    sampled = SpanContext(ctx.trace_id, ctx.span_id, ctx.is_remote, TraceFlags(TraceFlags.SAMPLED), ctx.trace_state)
    return ReadableSpan(
        name=span.name,
        context=sampled,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class KeepSlowTraces(SpanProcessor):
    """Passes sampled spans to ``exporting``; holds unsampled ones and passes a trace on only if slow.

    ``exporting`` is a batching exporter's processor (fastotel's or the SDK's BatchSpanProcessor),
    which does nothing when a span starts, so neither does this.
    """

    def __init__(self, exporting: SpanProcessor, threshold_s: float) -> None:
        self.exporting = exporting
        self.threshold_ns = int(threshold_s * 1e9)
        self._pending: OrderedDict[int, list[ReadableSpan]] = OrderedDict()

    def on_end(self, span: ReadableSpan) -> None:
        """Export sampled spans now; decide on unsampled traces when their local root ends."""
        ctx = span.context  # ReadableSpan's property; a plain slot on the lean tracer's spans
        if ctx is None:
            return
        if ctx.trace_flags & _SAMPLED:  # the flag bit itself: TraceFlags.sampled is a Python property
            self.exporting.on_end(span)
            return
        # on_end runs on whichever thread ended the span; dict operations below are atomic
        # under the GIL and a trace's spans all end on the request's own thread or task.
        held = self._pending.setdefault(ctx.trace_id, [])
        held.append(span)
        is_local_root = span.parent is None or span.parent.is_remote
        if not is_local_root:
            if len(self._pending) > MAX_PENDING_TRACES:
                self._pending.popitem(last=False)
            return
        if span.parent is None:  # a fresh trace id: every span held under it is this request's
            spans = self._pending.pop(ctx.trace_id, held)
        else:  # a caller's trace, which its parallel calls to us share: take only this root's spans
            spans = self._take_descendants(ctx.trace_id, ctx.span_id)
        duration = (span.end_time or 0) - (span.start_time or 0)
        if duration >= self.threshold_ns:
            for s in spans:
                self.exporting.on_end(_as_sampled(s))

    def _take_descendants(self, trace_id: int, root_id: int) -> list[ReadableSpan]:
        """The held spans of ``trace_id`` under the local root ``root_id`` (itself included), removed;
        a sibling request's spans in the same trace stay held for their own root."""
        held = self._pending.pop(trace_id, [])
        parents = {s.context.span_id: s.parent.span_id for s in held if s.context is not None and s.parent is not None}
        mine: list[ReadableSpan] = []
        others: list[ReadableSpan] = []
        for s in held:
            node: int | None = s.context.span_id if s.context is not None else None
            while node is not None and node != root_id:
                node = parents.get(node)
            (mine if node == root_id else others).append(s)
        if others:
            self._pending[trace_id] = others
        return mine

    def shutdown(self) -> None:
        """Drop what is held and shut the exporting processor down."""
        self._pending.clear()
        self.exporting.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the exporting processor."""
        return self.exporting.force_flush(timeout_millis)
