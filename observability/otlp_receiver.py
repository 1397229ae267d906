"""A minimal OTLP/HTTP trace receiver that decodes what arrives on the wire.

Tests and the benchmark use it instead of Jaeger: it accepts `POST /v1/traces` with an
`ExportTraceServiceRequest` protobuf (what the OTLP HTTP exporter sends) and keeps the
decoded spans, so a test can assert on parents, names and attributes of real exported spans.
Written by hand because no maintained Python package offers an embeddable OTLP receiver;
`opentelemetry-proto` supplies the message types.

    python -m observability.otlp_receiver --port 4318   # counts spans until Ctrl-C
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


@dataclass(frozen=True)
class ReceivedSpan:
    """One decoded span, ids as lowercase hex like the W3C traceparent."""

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status: str
    events: tuple[tuple[str, dict[str, Any]], ...]
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""

    @property
    def duration_ms(self) -> float:
        """Span duration in milliseconds."""
        return (self.end_ns - self.start_ns) / 1e6


def decode(body: bytes) -> list[ReceivedSpan]:
    """Every span in one serialized ExportTraceServiceRequest."""
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    out: list[ReceivedSpan] = []
    for rs in req.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    ReceivedSpan(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        name=s.name,
                        kind=s.kind,
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        attributes={kv.key: _value(kv.value) for kv in s.attributes},
                        status=_STATUS.get(s.status.code, str(s.status.code)),
                        events=tuple((e.name, {kv.key: _value(kv.value) for kv in e.attributes}) for e in s.events),
                        resource=resource,
                        scope=ss.scope.name,
                    )
                )
    return out


class OtlpReceiver:
    """An OTLP/HTTP receiver on 127.0.0.1 in a background thread; ``port=0`` picks a free port."""

    def __init__(self, port: int = 0, keep: bool = True) -> None:
        self._spans: list[ReceivedSpan] = []
        self._count = 0
        self._keep = keep  # the benchmark only counts, so memory stays flat under load
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        """Base URL for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends /v1/traces)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> OtlpReceiver:
        """Serve in the background; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def spans(self) -> list[ReceivedSpan]:
        """A copy of every span received so far."""
        with self._lock:
            return list(self._spans)

    def span_count(self) -> int:
        """How many spans arrived (kept or not)."""
        with self._lock:
            return self._count

    def clear(self) -> None:
        """Forget the spans received so far."""
        with self._lock:
            self._spans.clear()

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Poll until ``predicate(spans)`` is true; the spans, or AssertionError with what arrived."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"spans never matched; got {[(s.name, s.trace_id[:8]) for s in spans]}")
            time.sleep(0.05)

    def _add(self, body: bytes) -> None:
        if not self._keep:
            # Count only: the C protobuf parser, no Python objects per span, so a receiver under
            # benchmark load takes little CPU from the server it measures.
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
            with self._lock:
                self._count += n
            return
        spans = decode(body)
        with self._lock:
            self._count += len(spans)
            self._spans.extend(spans)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/traces":
                    self._answer(404, b"")
                    return
                try:
                    receiver._add(body)
                except Exception:  # a malformed export must not kill the receiver thread
                    self._answer(400, b"")
                    return
                self._answer(200, ExportTraceServiceResponse().SerializeToString())

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args  # quiet: one line per export would drown test output

        return Handler


def main(port: int = 4318) -> None:
    """Run a receiver on ``port`` and print the running span count every second."""
    receiver = OtlpReceiver(port, keep=False).start()
    print(f"OTLP/HTTP receiver on {receiver.endpoint}/v1/traces", flush=True)
    try:
        while True:
            time.sleep(1)
            print(f"spans received: {receiver.span_count()}", flush=True)
    except KeyboardInterrupt:
        receiver.stop()


if __name__ == "__main__":
    import typer

    typer.run(main)
