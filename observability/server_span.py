"""The HTTP server span of a request, with the names and attributes FastAPI's instrumentation gives it.

Why not FastAPI's own (``FastAPI(telemetry=...)``): around one span it cost 64 µs of CPU a
request against 24 µs for this module in ``serving.telemetry.RequestTelemetry``, which also
adds X-Trace-Id and times the request (``python -m benchmarks.spans`` prints both; 2 shared
cores). In a served prediction, switching saved ~100 µs a request. Per request FastAPI builds the headers object
twice, splits the Host header with urllib, walks the middleware stack looking for the
contrib instrumentation, attaches three contexts and runs a generator context manager.
This does the same work once: Host parsed once per distinct header (FastAPI's own
``_server_attributes``, cached), the propagator run only when a header it reads came, one
context attached by the caller. ``tests/unit/test_server_span.py`` exports both for the same
requests (routes, 404, 422, 5xx, an escaping exception, query strings, a caller's
``traceparent``) and compares names, kinds, parents, attributes and status.

``SKEWLESS_SERVER_SPAN=fastapi`` goes back to FastAPI's instrumentation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi.telemetry._api import _HTTP_METHODS, _exception_type
from fastapi.telemetry._asgi import _HEADERS_GETTER, _SCHEMA_URL, _SENSITIVE_QUERY_PARAMETERS, _server_attributes
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue
from starlette.datastructures import Headers
from starlette.types import Scope

# Distinct (Host header, scheme, server) triples remembered; a flood of odd Host headers only
# empties the cache, it never grows memory.
_MAX_HOSTS = 64


def _known_methods() -> frozenset[str]:
    """As FastAPI reads OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS: other methods become ``_OTHER``."""
    raw = os.getenv("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "").strip()
    return frozenset(m.strip() for m in raw.split(",") if m.strip()) if raw else _HTTP_METHODS


def _redacted_query(query_string: bytes) -> str:
    """``url.query`` with the signature parameters the semantic conventions name replaced by REDACTED."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return urlencode([(k, "REDACTED" if k in _SENSITIVE_QUERY_PARAMETERS else v) for k, v in pairs])


def _span_method(method: str) -> str:
    """The span name's method part: HTTP for methods outside the known set."""
    return "HTTP" if method == "_OTHER" else method


_OTHER_NAMES = ("_OTHER", _span_method("_OTHER"))


class ServerSpans:
    """Starts and finishes one SERVER span per HTTP request; the caller makes it current."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        # Our scope name (FastAPI does not make these spans), FastAPI's semantic-convention schema.
        self.tracer = provider.get_tracer("skewless.serving.http", schema_url=_SCHEMA_URL)
        self.methods = _known_methods()
        # Header names the configured propagators read (traceparent, tracestate, baggage, ...).
        self.fields = frozenset(f.lower().encode("latin-1") for f in propagate.get_global_textmap().fields)
        self._hosts: dict[tuple[Any, ...], dict[str, AttributeValue]] = {}
        # Per known method, the attribute's value and the span name's start; anything else is _OTHER.
        self._method_names = {m: (m, _span_method(m)) for m in self.methods}

    def start(self, scope: Scope) -> tuple[Span, Context, str]:
        """The request's server span, the context to attach for it (the caller's trace continued), and
        the route prefix to pass to ``finish``: the app's root path as the request arrived, before any
        mount's router adds to it."""
        original = scope.get("method", "")
        method, name = self._names(original)
        attributes: dict[str, AttributeValue] = {
            "url.scheme": scope.get("scheme", "http"),
            "http.request.method": method,
        }
        if scope.get("http_version"):
            attributes["network.protocol.version"] = scope["http_version"]
        attributes.update(self._server(scope))
        attributes["url.path"] = scope["path"]
        if scope.get("query_string"):
            attributes["url.query"] = _redacted_query(scope["query_string"])
        if original != method:
            attributes["http.request.method_original"] = original
        parent = self._parent(scope)
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        prefix = scope.get("app_root_path", scope.get("root_path", "")).rstrip("/")
        return span, trace.set_span_in_context(span, parent), prefix

    def finish(self, span: Span, scope: Scope, prefix: str, status: int | None, error: BaseException | None) -> None:
        """Route, status code and failure on the span, then end it: ERROR for an exception or a 5xx."""
        attributes: dict[str, AttributeValue] = {}
        route = getattr(scope.get("route"), "path_format", None)
        if route is not None:
            route = prefix + route
            attributes["http.route"] = route
            span.update_name(f"{self._names(scope.get('method', ''))[1]} {route}")
        if status is not None:
            attributes["http.response.status_code"] = status
        if error is not None or status is None or status >= 500:
            attributes["error.type"] = _exception_type(error) if error else str(status or "incomplete_response")
            span.set_status(StatusCode.ERROR)
        span.set_attributes(attributes)
        span.end()

    def _names(self, method: str) -> tuple[str, str]:
        """The request's method as the attribute gives it (``_OTHER`` if unknown) and as the span name starts."""
        return self._method_names.get(method, _OTHER_NAMES)

    def _server(self, scope: Scope) -> Mapping[str, AttributeValue]:
        host = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
                break
        key = (host, scope.get("scheme"), tuple(scope.get("server") or ()))  # some servers give a list
        found = self._hosts.get(key)
        if found is None:
            if len(self._hosts) >= _MAX_HOSTS:
                self._hosts.clear()
            found = self._hosts[key] = _server_attributes(scope)
        return found

    def _parent(self, scope: Scope) -> Context:
        """The caller's context from the propagation headers; an empty one (a new trace) without them."""
        fields = self.fields
        for name, _ in scope["headers"]:
            if name in fields:
                return propagate.extract(Headers(scope=scope), getter=_HEADERS_GETTER)
        return Context()
