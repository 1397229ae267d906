"""CPU of one prediction's spans: the SDK's TracerProvider against ours, side by side.

Each "request" makes the four spans a prediction makes (server, feature_retrieval with a Redis
CLIENT span under it, model_inference), with their attributes, two of them made current. Run
with and without export (fastotel's processor, to a port nobody listens on: spans are still
copied and encoded, and the failed sends are counted, never retried on the caller's thread).

    python -m benchmarks.spans
"""

from __future__ import annotations

import os
import time

import typer
from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from observability.lean_tracer import LeanTracerProvider

app = typer.Typer(add_completion=False, help=__doc__)

_SERVER: dict[str, AttributeValue] = {
    "http.request.method": "GET",
    "url.scheme": "http",
    "network.protocol.version": "1.1",
    "server.address": "127.0.0.1",
    "server.port": 8000,
    "url.path": "/v1/predict/u0000001",
}


def _request(tracer: trace.Tracer) -> None:
    server = tracer.start_span("GET", kind=SpanKind.SERVER, attributes=_SERVER)
    token = context.attach(trace.set_span_in_context(server))
    features = tracer.start_span("feature_retrieval", attributes={"skewless.entity_count": 1})
    inner = context.attach(trace.set_span_in_context(features))
    redis = tracer.start_span("HMGET", kind=SpanKind.CLIENT, attributes={"db.system": "redis"})
    redis.end()
    features.set_attributes({"skewless.features.missing_count": 0, "skewless.features.stale_count": 0})
    context.detach(inner)
    features.end()
    tracer.start_span("model_inference", attributes={"skewless.model.rows": 1}).end()
    server.set_attributes({"http.route": "/v1/predict/{entity_id}", "http.response.status_code": 200})
    context.detach(token)
    server.end()


def _us_per_request(provider: trace.TracerProvider, n: int) -> float:
    tracer = provider.get_tracer("bench")
    for _ in range(n // 10):
        _request(tracer)
    best = float("inf")
    for _ in range(5):  # the best of five: other load on the machine only ever adds
        t0 = time.process_time()  # all threads: the exporter's native thread counts too
        for _ in range(n):
            _request(tracer)
        best = min(best, (time.process_time() - t0) / n)
    return best * 1e6


@app.command()
def main(n: int = typer.Option(4000, help="Requests per measurement.")) -> None:
    """Print µs of CPU per request for each provider, with and without export, and the ratios."""
    os.environ.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # discard port
    from fastotel import OTLPSpanProcessor

    resource = Resource.create({"service.name": "bench"})
    sampler = ParentBased(ALWAYS_ON)
    results: dict[tuple[str, bool], float] = {}
    for export in (False, True):
        sdk = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
        lean = LeanTracerProvider(resource, sampler, shutdown_on_exit=False)
        for name, provider in (("sdk", sdk), ("lean", lean)):
            if export:
                provider.add_span_processor(OTLPSpanProcessor())
            results[(name, export)] = _us_per_request(provider, n)
    print("| spans of one request (4) | SDK µs | lean µs | SDK / lean |")
    print("|---|---:|---:|---:|")
    for export in (False, True):
        sdk_us, lean_us = results[("sdk", export)], results[("lean", export)]
        label = "recorded and exported (fastotel)" if export else "recorded, no processor"
        print(f"| {label} | {sdk_us:.1f} | {lean_us:.1f} | {sdk_us / lean_us:.2f}× |")


if __name__ == "__main__":
    app()
