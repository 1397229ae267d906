"""What a request's spans would cost encoded straight to OTLP protobuf in Python (issue 5's open question).

Tracing at sampling 1.0 costs ~47 µs of server CPU a request (README, Performance): four Python
span objects, the processors, fastotel's copy of each span out of Python and its encode. This
measures the alternative a second tracing path would take: no span objects, the request's four
spans (server, ``feature_retrieval``, ``HMGET``, ``model_inference``) written as
``ScopeSpans.spans`` bytes, with the bytes of repeated attribute pairs cached. Ids, timestamps and
attributes are included; the POST is not. It checks its own output by decoding it with
opentelemetry-proto before it times anything.

Run: ``python -O -m benchmarks.otlp_encode``; prints one JSON line.
"""

from __future__ import annotations

import json
import random
import struct
import time
from random import getrandbits

from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans

_DOUBLE = struct.Struct("<d").pack
_KV_CACHE_SIZE = 4096
Value = str | bool | int | float
Attributes = dict[str, Value]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_varint(i) for i in range(16384)]


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + (_SMALL[len(payload)] if len(payload) < 16384 else _varint(len(payload))) + payload


def _any_value(value: Value) -> bytes:
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    return b"\x21" + _DOUBLE(value)


class SpanEncoder:
    """``Span`` messages (wrapped as ``ScopeSpans.spans`` fields) from plain values."""

    def __init__(self) -> None:
        self._kv: dict[tuple[str, Value], bytes] = {}
        self._names: dict[str, bytes] = {}

    def _attribute(self, key: str, value: Value) -> bytes:
        pair = (key, value)
        encoded = self._kv.get(pair)
        if encoded is None:
            encoded = _field(b"\x4a", _field(b"\x0a", key.encode()) + _field(b"\x12", _any_value(value)))
            if len(self._kv) < _KV_CACHE_SIZE:  # high-cardinality values (url.path) stop being cached
                self._kv[pair] = encoded
        return encoded

    def span(
        self,
        trace_id: bytes,
        span_id: bytes,
        parent_id: bytes | None,
        name: str,
        kind: int,
        start_ns: int,
        end_ns: int,
        attributes: Attributes,
    ) -> bytes:
        """One span; ``kind`` as OTLP numbers it (1 internal, 2 server, 3 client)."""
        name_field = self._names.get(name)
        if name_field is None:
            name_field = self._names[name] = _field(b"\x2a", name.encode())
        parts = [b"\x0a\x10", trace_id, b"\x12\x08", span_id]
        if parent_id is not None:
            parts += (b"\x22\x08", parent_id)
        parts += (name_field, b"\x30", _SMALL[kind], b"\x39", start_ns.to_bytes(8, "little"))
        parts += (b"\x41", end_ns.to_bytes(8, "little"))
        parts += [self._attribute(k, v) for k, v in attributes.items()]
        return _field(b"\x12", b"".join(parts))


_SERVER: Attributes = {
    "http.request.method": "GET",
    "url.scheme": "http",
    "server.address": "127.0.0.1",
    "server.port": 8000,
    "network.protocol.version": "1.1",
    "http.route": "/v1/predict/{entity_id}",
    "http.response.status_code": 200,
}
_RETRIEVAL: Attributes = {
    "skewless.feature_service": "churn_v1",
    "skewless.entity_count": 1,
    "skewless.features.missing_count": 0,
    "skewless.features.stale_count": 0,
    "skewless.entities.not_found": 0,
}
_HMGET: Attributes = {"db.system": "redis", "db.statement": "HMGET", "server.address": "127.0.0.1", "server.port": 6379}
_INFERENCE: Attributes = {"skewless.model.name": "churn", "skewless.model.version": "1", "skewless.model.rows": 1}


def request_spans(encoder: SpanEncoder, entity_id: str) -> bytes:
    """The four spans of one ``GET /v1/predict/{entity_id}``, as ``ScopeSpans.spans`` bytes."""
    t = time.time_ns()
    trace_id = getrandbits(128).to_bytes(16, "big")
    root, retrieval, hmget, inference = (getrandbits(64).to_bytes(8, "big") for _ in range(4))
    server: Attributes = {**_SERVER, "url.path": "/v1/predict/" + entity_id}
    return b"".join(
        (
            encoder.span(trace_id, root, None, "GET /v1/predict/{entity_id}", 2, t, t + 200_000, server),
            encoder.span(trace_id, retrieval, root, "feature_retrieval", 1, t + 10_000, t + 150_000, _RETRIEVAL),
            encoder.span(trace_id, hmget, retrieval, "HMGET", 3, t + 20_000, t + 140_000, _HMGET),
            encoder.span(trace_id, inference, root, "model_inference", 1, t + 155_000, t + 165_000, _INFERENCE),
        )
    )


def _check(encoder: SpanEncoder) -> None:
    """The bytes decode as OTLP, with the names, parents and attributes they were given (not asserts: -O)."""
    spans = ScopeSpans.FromString(request_spans(encoder, "u0000042")).spans
    attrs = {kv.key: kv.value for kv in spans[0].attributes}
    found = {
        "names": [s.name for s in spans],
        "parents": [s.parent_span_id for s in spans[1:]],
        "url.path": attrs["url.path"].string_value,
        "server.port": attrs["server.port"].int_value,
        "kinds": [s.kind for s in spans],
        "root duration": spans[0].end_time_unix_nano - spans[0].start_time_unix_nano,
    }
    expected = {
        "names": ["GET /v1/predict/{entity_id}", "feature_retrieval", "HMGET", "model_inference"],
        "parents": [spans[0].span_id, spans[1].span_id, spans[0].span_id],
        "url.path": "/v1/predict/u0000042",
        "server.port": 8000,
        "kinds": [2, 1, 3, 1],
        "root duration": 200_000,
    }
    if found != expected:
        raise RuntimeError(f"the encoded spans decode differently: {found} != {expected}")


def main(requests: int = 20_000) -> None:
    """Encode ``requests`` requests' spans after a warm-up; print CPU µs a request."""
    encoder = SpanEncoder()
    _check(encoder)
    rng = random.Random(7)
    ids = [f"u{rng.randrange(100_000):07d}" for _ in range(requests)]
    for entity_id in ids[:1000]:
        request_spans(encoder, entity_id)
    start = time.process_time()
    size = 0
    for entity_id in ids:
        size += len(request_spans(encoder, entity_id))
    cpu = time.process_time() - start
    per_request = {"cpu_us_per_request": cpu / requests * 1e6, "bytes_per_request": size / requests}
    print(json.dumps({"requests": requests, **per_request}))


if __name__ == "__main__":
    main()
