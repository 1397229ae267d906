"""SpanBursts passes every span on, in bursts, promptly when traffic is low, and loses none."""

from __future__ import annotations

import threading
import time

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from observability.bursts import SpanBursts

pytestmark = pytest.mark.unit


class Recorder(SpanProcessor):
    """Records what reaches it and in how many separate hand-overs."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.flushed = 0
        self.shut = False

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.flushed += 1
        return True

    def shutdown(self) -> None:
        self.shut = True


def spans(n: int) -> list[ReadableSpan]:
    return [ReadableSpan(name=f"s{i}") for i in range(n)]


def test_spans_are_held_until_a_burst_is_full_then_passed_on_in_order() -> None:
    down = Recorder()
    bursts = SpanBursts(down, size=4, max_wait_s=60)
    given = spans(10)
    for s in given[:3]:
        bursts.on_end(s)
    assert down.spans == []
    bursts.on_end(given[3])
    assert down.spans == given[:4]
    for s in given[4:]:
        bursts.on_end(s)
    assert down.spans == given[:8]
    assert bursts.force_flush() and down.flushed == 1
    assert down.spans == given  # the last two, by the flush
    bursts.shutdown()
    assert down.shut


def test_a_quiet_service_still_exports_within_the_wait() -> None:
    down = Recorder()
    bursts = SpanBursts(down, size=64, max_wait_s=0.05)
    bursts.on_end(spans(1)[0])
    deadline = time.monotonic() + 5
    while not down.spans and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(down.spans) == 1
    bursts.shutdown()


def test_shutdown_passes_on_what_is_held() -> None:
    down = Recorder()
    bursts = SpanBursts(down, size=64, max_wait_s=60)
    for s in spans(5):
        bursts.on_end(s)
    bursts.shutdown()
    assert len(down.spans) == 5 and down.shut


def test_no_span_is_lost_when_many_threads_end_spans() -> None:
    down = Recorder()
    bursts = SpanBursts(down, size=7, max_wait_s=0.01)
    per_thread = 2_000

    def work(k: int) -> None:
        for s in spans(per_thread):
            bursts.on_end(s)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bursts.force_flush()
    assert len(down.spans) == 4 * per_thread
    assert len({id(s) for s in down.spans}) == 4 * per_thread  # each once
    bursts.shutdown()


def test_fastotels_spans_go_straight_to_its_native_half() -> None:
    from fastotel import OTLPSpanProcessor

    from observability.bursts import native_on_end

    processor = OTLPSpanProcessor(endpoint="http://127.0.0.1:9/v1/traces")
    try:
        on_end = native_on_end(processor)
        assert on_end == processor._native.on_end
        assert type(on_end).__name__ == "builtin_function_or_method"
        other = Recorder()
        assert native_on_end(other) == other.on_end
    finally:
        processor.shutdown()


def test_spans_go_to_the_on_end_given_and_the_native_export_is_given_fastotels() -> None:
    from observability.tracing import _exporting_processor

    down, given = Recorder(), Recorder()
    bursts = SpanBursts(down, size=2, on_end=given.on_end)
    for span in spans(2):
        bursts.on_end(span)
    assert [s.name for s in given.spans] == ["s0", "s1"] and down.spans == []
    bursts.shutdown()
    assert down.shut  # flush and shutdown stay the exporting processor's

    native = _exporting_processor(native=True)
    try:
        assert isinstance(native, SpanBursts)
        assert type(native._on_end).__name__ == "builtin_function_or_method"  # fastotel's native half
    finally:
        native.shutdown()
