"""Hand-rolled collectors expose what prometheus_client's own would; request timings get honest status labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from serving.metrics import BulkHistogram, PlainHistogram, TallyCounter

pytestmark = pytest.mark.unit


def _samples(registry: CollectorRegistry) -> dict[str, float]:
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("#") or "_created" in line:
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def test_bulk_histogram_matches_prometheus_histogram_on_bucket_edges() -> None:
    bounds = tuple(i / 10 for i in range(1, 11))
    reference, ours = CollectorRegistry(), CollectorRegistry()
    h = Histogram("score", "d", buckets=bounds, registry=reference)
    bulk = BulkHistogram("score", "d", bounds, ours)
    rng = np.random.default_rng(3)
    values = np.concatenate([np.array(bounds), np.nextafter(np.array(bounds), 2), [0.0, 1.0, 1.5], rng.random(500)])
    for v in values:
        h.observe(float(v))
    half = len(values) // 2
    for v in values[:half]:  # single-entity requests: one score each
        bulk.observe_many(np.array([v]))
    for chunk in np.array_split(values[half:], 7):  # batches
        bulk.observe_many(chunk)
    bulk.observe_many(np.array([]))
    want, got = _samples(reference), _samples(ours)
    assert want.keys() == got.keys()
    assert {k: v for k, v in got.items() if not k.endswith("_sum")} == {
        k: v for k, v in want.items() if not k.endswith("_sum")
    }
    assert got["score_sum"] == pytest.approx(want["score_sum"])


def test_tally_counter_matches_a_labelled_counter() -> None:
    reference, ours = CollectorRegistry(), CollectorRegistry()
    c = Counter("missing", "d", ["feature"], registry=reference)
    tally = TallyCounter("missing", "d", "feature", ours)
    for names in (["a", "b", "a"], [], ["c"], ["a"]):
        for n in names:
            c.labels(n).inc()
        tally.tally.update(names)
    assert _samples(ours) == _samples(reference)


def test_plain_histogram_matches_prometheus_histogram_with_and_without_labels() -> None:
    reference, ours = CollectorRegistry(), CollectorRegistry()
    bounds = (0.001, 0.01, 0.1, 1.0)
    labelled = Histogram("lat", "d", ["method", "status"], buckets=bounds, registry=reference)
    plain = Histogram("read", "d", buckets=bounds, registry=reference)
    our_labelled = PlainHistogram("lat", "d", bounds, ours, labels=("method", "status"))
    our_plain = PlainHistogram("read", "d", bounds, ours)
    rng = np.random.default_rng(5)
    values = [*bounds, *np.nextafter(np.array(bounds), 2).tolist(), 0.0, 7.5, *rng.exponential(0.05, 300).tolist()]
    for i, v in enumerate(values):
        labels = ("GET", "200") if i % 3 else ("POST", "503")
        labelled.labels(*labels).observe(v)
        our_labelled.labels(*labels).observe(v)
        plain.observe(v)
        our_plain.observe(v)
    want, got = _samples(reference), _samples(ours)
    assert want.keys() == got.keys()
    assert {k: v for k, v in got.items() if "_sum" not in k} == {k: v for k, v in want.items() if "_sum" not in k}
    for k in (k for k in want if "_sum" in k):
        assert got[k] == pytest.approx(want[k])
    with pytest.raises(ValueError, match="labels"):
        our_labelled.observe(0.1)
    with pytest.raises(ValueError, match="labels"):
        our_labelled.labels("GET")


def test_a_request_the_client_left_is_499_and_a_crash_is_500() -> None:
    import asyncio

    from serving.metrics import Metrics, RequestTimer

    async def left(scope: Any, receive: Any, send: Any) -> None:
        return None  # e.g. BodySizeLimit saw http.disconnect: nobody to answer

    async def crashed(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def cancelled(scope: Any, receive: Any, send: Any) -> None:
        raise asyncio.CancelledError

    metrics = Metrics()
    scope = {"type": "http", "method": "POST", "path": "/v1/predict"}
    asyncio.run(RequestTimer(left, metrics)(scope, None, None))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        asyncio.run(RequestTimer(crashed, metrics)(scope, None, None))  # type: ignore[arg-type]
    assert sorted(status for _, _, status in metrics._requests) == [499, 500]
    metrics = Metrics()
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(RequestTimer(cancelled, metrics)(scope, None, None))  # type: ignore[arg-type]
    assert [status for _, _, status in metrics._requests] == [499]  # not a server error
