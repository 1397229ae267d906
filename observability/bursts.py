"""Hand ended spans to the exporting processor in bursts instead of one at a time.

fastotel's processor wakes its native thread for each span it is given. A server's thread
blocks in epoll between requests, so every wake-up became a thread switch on the same core.
Measured on 2 shared cores, CPU per exported span: 5.6 µs given back to back, 12 µs when the
caller blocked after every request's four spans, 22 µs after every span; given in bursts of 64
with the same blocking, 8.9 µs (``python -m benchmarks.spans`` compares the two ways on whole
requests). In a served prediction, ~20 µs a request less. This keeps up to ``size`` spans and
passes them on together, and at least every ``max_wait_s`` so a quiet service still exports
promptly. Batching, limits, retries and the wire format stay the exporting processor's.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

BURST_SIZE = 64
MAX_WAIT_S = 0.5


def native_on_end(processor: SpanProcessor) -> Callable[[ReadableSpan], None]:
    """fastotel's native ``on_end`` behind ``processor``, or the processor's own.

    fastotel's ``OTLPSpanProcessor.on_end`` (0.9, pinned below 0.10) is one Python line that hands the
    span to its native half; calling that half directly saves a Python call a span.
    """
    native = getattr(processor, "_native", None)
    on_end = getattr(native, "on_end", None)
    return on_end if callable(on_end) else processor.on_end


class SpanBursts(SpanProcessor):
    """Passes ended spans to ``exporting`` ``size`` at a time, or ``max_wait_s`` after they ended."""

    def __init__(
        self,
        exporting: SpanProcessor,
        size: int = BURST_SIZE,
        max_wait_s: float = MAX_WAIT_S,
        on_end: Callable[[ReadableSpan], None] | None = None,
    ) -> None:
        """``on_end``: what each span is passed to, ``exporting.on_end`` by default (see ``native_on_end``)."""
        self.exporting = exporting
        self._on_end = on_end or exporting.on_end
        self.size = size
        self.max_wait_s = max_wait_s
        # A deque: append and popleft are atomic, so spans ended on any thread need no lock.
        self._pending: deque[ReadableSpan] = deque()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._timer_lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        """Keep the span; pass the burst on once it is full."""
        pending = self._pending
        pending.append(span)
        if len(pending) >= self.size:
            self._flush()
        elif self._timer is None and not self._stop.is_set():
            self._start_timer()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Pass on what is kept, then flush the exporting processor."""
        self._flush()
        return self.exporting.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Stop the timer, pass on what is kept, shut the exporting processor down."""
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout=self.max_wait_s * 2)
        self._flush()
        self.exporting.shutdown()

    def _flush(self) -> None:
        pending, on_end = self._pending, self._on_end
        while True:
            try:
                span = pending.popleft()
            except IndexError:
                return
            on_end(span)

    def _start_timer(self) -> None:
        # Started with the first span, not at construction: nothing runs in a process that never traces.
        with self._timer_lock:
            if self._timer is None:
                self._timer = threading.Thread(target=self._tick, name="span-bursts", daemon=True)
                self._timer.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.max_wait_s):
            self._flush()
