"""observability.server_span gives the server span FastAPI's own instrumentation gives.

The same requests go to two copies of one app: one traced by FastAPI (``FastAPI(telemetry=...)``),
one by ``RequestTelemetry`` with ``ServerSpans``. Each exports to memory; the spans must have the
same names, kinds, attributes, status and parents.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, StatusCode

from observability.lean_tracer import LeanTracerProvider
from observability.server_span import ServerSpans
from serving.errors import ApiError, install_error_handlers
from serving.telemetry import RequestTelemetry

pytestmark = pytest.mark.unit

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

# (method, path, headers): successes, client errors, server errors, an escaping exception, no
# route, query strings (one to redact), an unknown method, a caller's trace.
REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/v1/things/t1", {}),
    ("GET", "/v1/things/t1?include=all&sig=secret", {}),
    ("GET", "/v1/things/missing", {}),
    ("GET", "/v1/things/t1/sub/7", {}),
    ("GET", "/v1/unavailable", {}),
    ("GET", "/v1/broken", {}),
    ("GET", "/nowhere", {}),
    ("POST", "/v1/things", {"content-type": "application/json"}),
    ("PURGE", "/v1/things/t1", {}),
    ("GET", "/v1/things/t1", {"traceparent": CALLER}),
    ("GET", "/v1/things/t1", {"host": "api.example.com:8443"}),
]


def _app(fastapi_spans: bool, provider: LeanTracerProvider) -> FastAPI:
    app = FastAPI(
        telemetry={
            "tracing": fastapi_spans,
            "tracer_provider": provider,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
        }
    )
    install_error_handlers(app)

    @app.get("/v1/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str]:
        if thing_id == "missing":
            raise HTTPException(404, "no such thing")
        return {"id": thing_id}

    @app.get("/v1/things/{thing_id}/sub/{n}")
    def sub(thing_id: str, n: int) -> dict[str, Any]:
        return {"id": thing_id, "n": n}

    @app.post("/v1/things")
    def create(body: dict[str, int]) -> dict[str, int]:  # an empty body: 422 from validation
        return body

    @app.get("/v1/unavailable")
    def unavailable() -> None:
        raise ApiError(503, "feature_store_unavailable", "down")

    @app.get("/v1/broken")
    def broken() -> None:
        raise RuntimeError("boom")

    if not fastapi_spans:
        app.add_middleware(RequestTelemetry, slow_ms=1e9, server_spans=ServerSpans(provider), local_ids=False)
    return app


def _spans(fastapi_spans: bool) -> tuple[list[ReadableSpan], list[dict[str, str]]]:
    exported = InMemorySpanExporter()
    provider = LeanTracerProvider(Resource.create({}), ParentBased(ALWAYS_ON), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    client = TestClient(_app(fastapi_spans, provider), raise_server_exceptions=False)
    headers = []
    for method, path, extra in REQUESTS:
        headers.append(dict(client.request(method, path, headers=extra).headers))
    # Behind a proxy that strips a prefix: the route is named with the app's root path.
    behind = TestClient(_app(fastapi_spans, provider), raise_server_exceptions=False, root_path="/api")
    headers.append(dict(behind.get("/v1/things/t1").headers))
    spans = list(exported.get_finished_spans())
    assert all(s.kind is SpanKind.SERVER for s in spans)
    assert len(spans) == len(REQUESTS) + 1, [s.name for s in spans]
    return spans, headers


def _shape(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code,
        "parent": None if span.parent is None else (span.parent.trace_id, span.parent.span_id, span.parent.is_remote),
        "events": [e.name for e in span.events],
    }


def test_server_spans_match_fastapis_instrumentation_request_by_request() -> None:
    theirs, _ = _spans(fastapi_spans=True)
    ours, _ = _spans(fastapi_spans=False)
    for (method, path, _extra), a, b in zip([*REQUESTS, ("GET", "/api/v1/things/t1", {})], theirs, ours, strict=True):
        assert _shape(b) == _shape(a), f"{method} {path}"
    assert ours[-1].name == "GET /api/v1/things/{thing_id}", ours[-1].name


def test_what_the_spans_say() -> None:
    spans, headers = _spans(fastapi_spans=False)
    by = {f"{m} {p} {sorted(h)}": s for (m, p, h), s in zip(REQUESTS, spans, strict=False)}
    ok = by["GET /v1/things/t1 []"]
    assert ok.name == "GET /v1/things/{thing_id}"
    assert ok.attributes is not None and ok.attributes["http.route"] == "/v1/things/{thing_id}"
    assert ok.attributes["http.response.status_code"] == 200 and ok.status.status_code is StatusCode.UNSET
    assert by["GET /v1/things/t1?include=all&sig=secret []"].attributes["url.query"] == "include=all&sig=REDACTED"  # type: ignore[index]
    for failing, error_type in (("GET /v1/unavailable []", "503"), ("GET /v1/broken []", "RuntimeError")):
        span = by[failing]
        assert span.status.status_code is StatusCode.ERROR and span.attributes["error.type"] == error_type  # type: ignore[index]
    assert by["GET /v1/things/missing []"].status.status_code is StatusCode.UNSET  # a 4xx is the caller's error
    assert by["GET /nowhere []"].name == "GET"  # no route matched: no template to name it by
    assert by["PURGE /v1/things/t1 []"].attributes["http.request.method"] == "_OTHER"  # type: ignore[index]
    continued = by["GET /v1/things/t1 ['traceparent']"]
    assert continued.context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    assert continued.parent is not None and continued.parent.span_id == int("b7ad6b7169203331", 16)
    # Every traced answer names its trace: the header is the server span's trace id.
    for span, h in zip(spans, headers, strict=True):
        if h.get("x-trace-id"):
            assert h["x-trace-id"] == format(span.context.trace_id, "032x")
    assert sum(1 for h in headers if "x-trace-id" in h) >= len(headers) - 1  # the escaping 500 has none


def test_host_cache_is_bounded() -> None:
    provider = LeanTracerProvider(Resource.create({}), ALWAYS_ON, shutdown_on_exit=False)
    spans = ServerSpans(provider)
    for i in range(500):
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"host", f"h{i}.example:80".encode())]}
        span, _, _ = spans.start(scope)
        assert span.attributes["server.address"] == f"h{i}.example"  # type: ignore[attr-defined]
    assert len(spans._hosts) <= 64
