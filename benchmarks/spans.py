"""CPU of tracing one prediction, side by side: FastAPI's server span against ours, fastotel fed span by
span against in bursts, and the SDK's TracerProvider against ours.

Each "request" makes the four spans a prediction makes (server, feature_retrieval with a Redis
CLIENT span under it, model_inference), with their attributes, two of them made current. Run
with and without export (fastotel's processor, to a port nobody listens on: spans are still
copied and encoded, and the failed sends are counted, never retried on the caller's thread).

    python -m benchmarks.spans
"""

from __future__ import annotations

import os
import time
from typing import Any

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
    _server_spans(lean_provider=LeanTracerProvider(resource, sampler, shutdown_on_exit=False), n=n)
    _bursts(resource, sampler, n)
    print()
    print("| spans of one request (4) | SDK µs | lean µs | SDK / lean |")
    print("|---|---:|---:|---:|")
    for export in (False, True):
        sdk_us, lean_us = results[("sdk", export)], results[("lean", export)]
        label = "recorded and exported (fastotel)" if export else "recorded, no processor"
        print(f"| {label} | {sdk_us:.1f} | {lean_us:.1f} | {sdk_us / lean_us:.2f}× |")


def _server_spans(lean_provider: LeanTracerProvider, n: int) -> None:
    """One request through an app that answers at once: FastAPI's server span against ours."""
    import asyncio

    from fastapi import FastAPI

    from observability.server_span import ServerSpans
    from serving.telemetry import RequestTelemetry

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def app_with(fastapi_spans: bool) -> FastAPI:
        config: Any = {"tracing": fastapi_spans, "tracer_provider": lean_provider, "metrics": False, "logs": False}
        built = FastAPI(telemetry={**config, "operation_spans": False, "auto_configure": False})
        built.add_middleware(_Answer, answer=answer)  # answers before routing, as the fast path does
        if not fastapi_spans:
            built.add_middleware(
                RequestTelemetry, slow_ms=1e9, server_spans=ServerSpans(lean_provider), local_ids=False
            )
        return built

    async def per_request(built: FastAPI) -> float:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: Any) -> None:
            return None

        def scope() -> dict[str, Any]:
            return {**_SCOPE, "headers": list(_SCOPE["headers"])}

        for _ in range(n // 10):
            await built(scope(), receive, send)
        best = float("inf")
        for _ in range(5):
            t0 = time.process_time()
            for _ in range(n):
                await built(scope(), receive, send)
            best = min(best, (time.process_time() - t0) / n)
        return best * 1e6

    theirs = asyncio.run(per_request(app_with(True)))
    ours = asyncio.run(per_request(app_with(False)))
    print("| server span of one request, no processor | FastAPI's µs | ours µs | FastAPI / ours |")
    print("|---|---:|---:|---:|")
    print(f"| instrumentation and span | {theirs:.1f} | {ours:.1f} | {theirs / ours:.2f}× |")


def _bursts(resource: Resource, sampler: Any, n: int) -> None:
    """Four spans a request handed to fastotel one by one or in bursts, the thread blocking between requests."""
    import select

    from fastotel import OTLPSpanProcessor

    from observability.bursts import SpanBursts

    def pause() -> None:
        select.select([], [], [], 0.00002)  # blocks, as a server's thread does in epoll between requests

    t0 = time.process_time()
    for _ in range(n):
        pause()
    pause_us = (time.process_time() - t0) / n * 1e6
    out = {}
    for name in ("one by one", "in bursts"):
        provider = LeanTracerProvider(resource, sampler, shutdown_on_exit=False)
        processor = OTLPSpanProcessor()
        provider.add_span_processor(SpanBursts(processor) if name == "in bursts" else processor)
        tracer = provider.get_tracer("bench")
        t0 = time.process_time()
        for _ in range(n):
            _request(tracer)
            pause()
        provider.force_flush()
        out[name] = (time.process_time() - t0) / n * 1e6 - pause_us
        provider.shutdown()
    print()
    print("| 4 spans exported, thread blocking between requests | one by one µs | in bursts µs | ratio |")
    print("|---|---:|---:|---:|")
    one, burst = out["one by one"], out["in bursts"]
    print(f"| fastotel | {one:.1f} | {burst:.1f} | {one / burst:.2f}× |")


_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/v1/predict/u0000001",
    "raw_path": b"/v1/predict/u0000001",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk")],
    "client": ("127.0.0.1", 1),
    "server": ("127.0.0.1", 8000),
}


class _Answer:
    def __init__(self, app: Any, answer: Any) -> None:
        self.app, self.answer = app, answer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.answer(scope, receive, send)


if __name__ == "__main__":
    app()
