"""Prometheus metrics, one registry per app so several apps (tests) never collide."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Sub-millisecond to the deadline and beyond: the hot path lives at ~1 ms.
_LATENCY = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Every series the API exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_seconds = Histogram(
            "skewless_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["method", "route", "status"],
            buckets=_LATENCY,
            registry=r,
        )
        self.feature_seconds = Histogram(
            "skewless_feature_retrieval_seconds",
            "Online feature read (Feast + Redis) per request.",
            buckets=_LATENCY,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "skewless_inference_seconds", "LightGBM predict per request.", buckets=_LATENCY, registry=r
        )
        self.missing_features = TallyCounter(
            "skewless_missing_features", "Features the model saw as missing.", "feature", registry=r
        )
        self.stale_features = TallyCounter(
            "skewless_stale_features", "Features older than their view's TTL.", "feature", registry=r
        )
        self.predictions = Counter("skewless_predictions_total", "Predictions by status.", ["status"], registry=r)
        self.score = BulkHistogram(
            "skewless_prediction_score",
            "Distribution of served churn scores.",
            buckets=tuple(i / 10 for i in range(1, 11)),
            registry=r,
        )
        self.feature_errors = Counter(
            "skewless_feature_store_errors_total", "Online store failures and deadline misses.", registry=r
        )
        self.model_info = Gauge(
            "skewless_model_info", "The loaded model version (value 1).", ["name", "version", "alias"], registry=r
        )
        self.model_version = Gauge("skewless_model_version", "Loaded model version number.", registry=r)
        self._model_labels: tuple[str, str, str] | None = None
        self.reloads = Counter(
            "skewless_model_reloads_total", "Model load attempts by outcome.", ["outcome"], registry=r
        )
        # labels() validates and locks on every call (~5 µs, a dozen calls a request); the children
        # never change once made, so the hot path looks them up here instead.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def count_predictions(self, status: str, n: int) -> None:
        """Add ``n`` predictions with ``status``."""
        self._child(self.predictions, status).inc(n)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request's latency."""
        self._child(self.request_seconds, method, route, str(status)).observe(seconds)

    def set_model(self, name: str, version: str, alias: str) -> None:
        """Point the info gauge at the version now serving; earlier versions drop to 0."""
        # Zeroing instead of clear(): Feast sets PROMETHEUS_MULTIPROC_DIR in-process, and
        # prometheus_client then warns on every label removal.
        if self._model_labels is not None:
            self.model_info.labels(*self._model_labels).set(0)
        self._model_labels = (name, version, alias)
        self.model_info.labels(name, version, alias).set(1)
        if version.isdigit():
            self.model_version.set(int(version))

    def observe_rows(self, missing: Sequence[str], stale: Sequence[str]) -> None:
        """Count missing and stale features, of one row or of a whole request (one label lookup each)."""
        self.missing_features.tally.update(missing)
        self.stale_features.tally.update(stale)


class TallyCounter(Collector):
    """A counter by one label, kept in a plain dict and turned into samples only when scraped.

    A request adds to it once per missing or stale feature (a dozen for a sparse row): through
    prometheus_client children each increment takes a lock (~2 µs); a dict update does not. The
    API updates and scrapes it on its one event loop thread.
    """

    def __init__(self, name: str, documentation: str, label: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.tally: Tally[str] = Tally()
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        """One ``<name>_total`` sample per label value seen."""
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, n in sorted(self.tally.items()):
            family.add_metric([value], n)
        yield family


class BulkHistogram(Collector):
    """A histogram fed a request's values at once, exposed as an ordinary Prometheus histogram.

    A batch scores up to hundreds of rows; ``Histogram.observe`` per row took a lock and a bucket
    search each time (~3 µs a row), one numpy bincount per request does the same counting.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)  # +Inf is the extra last bucket
        self._bounds = self.bounds.tolist()
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)
        self.total = 0.0
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        """Count ``values``: bucket ``le=b`` takes every value <= b, as Prometheus defines it."""
        if values.size == 1:  # a single-entity request: numpy's call overhead would dominate
            value = float(values[0])
            self.counts[bisect_left(self._bounds, value)] += 1
            self.total += value
        elif values.size:
            self.counts += np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self.counts))
            self.total += float(values.sum())

    def collect(self) -> Iterator[Metric]:
        """Cumulative ``_bucket`` samples, ``_count`` and ``_sum``."""
        cumulative = np.cumsum(self.counts).tolist()
        bounds = [floatToGoString(b) for b in self.bounds.tolist()] + ["+Inf"]
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=list(zip(bounds, cumulative, strict=True)), sum_value=self.total
        )


class RequestTimer:
    """Pure ASGI middleware: latency per route template (not per raw path, to bound cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(scope["method"], template, status, time.perf_counter() - start)
