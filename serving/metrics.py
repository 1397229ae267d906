"""Prometheus metrics, one registry per app so several apps (tests) never collide."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterator, Sequence
from itertools import accumulate

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Metric
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
        # The per-request series are plain collectors (PlainHistogram, TallyCounter): see why there.
        self.request_seconds = PlainHistogram(
            "skewless_http_request_duration_seconds",
            "HTTP request latency by route.",
            _LATENCY,
            r,
            labels=("method", "route", "status"),
        )
        self.feature_seconds = PlainHistogram(
            "skewless_feature_retrieval_seconds", "Online feature read (Feast + Redis) per request.", _LATENCY, r
        )
        self.inference_seconds = PlainHistogram(
            "skewless_inference_seconds", "LightGBM predict per request.", _LATENCY, r
        )
        self.missing_features = TallyCounter(
            "skewless_missing_features", "Features the model saw as missing.", "feature", registry=r
        )
        self.stale_features = TallyCounter(
            "skewless_stale_features", "Features older than their view's TTL.", "feature", registry=r
        )
        self.predictions = TallyCounter("skewless_predictions", "Predictions by status.", "status", registry=r)
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
        self._requests: dict[tuple[str, str, int], Buckets] = {}  # request_seconds by (method, route, status)
        self.reloads = Counter(
            "skewless_model_reloads_total", "Model load attempts by outcome.", ["outcome"], registry=r
        )

    def count_predictions(self, status: str, n: int) -> None:
        """Add ``n`` predictions with ``status``."""
        self.predictions.tally[status] += n

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request's latency."""
        series = self._requests.get((method, route, status))
        if series is None:
            series = self._requests[method, route, status] = self.request_seconds.labels(method, route, str(status))
        series.observe(seconds)

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
        if missing:  # Counter.update type-checks its argument even when there is nothing to add
            self.missing_features.tally.update(missing)
        if stale:
            self.stale_features.tally.update(stale)


class TallyCounter(Collector):
    """A counter by one label, kept in a plain dict and turned into samples only when scraped.

    A request adds to it once per missing or stale feature (a dozen for a sparse row) and once for
    its predictions' status: through prometheus_client children each increment takes a lock
    (~2 µs); a dict update does not. The API updates and scrapes it on its one event loop thread.
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


class Buckets:
    """One histogram series: a count per bucket (the last one is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count ``value``: bucket ``le=b`` takes every value <= b, as Prometheus defines it."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class PlainHistogram(Collector):
    """A histogram (optionally by labels) kept in plain lists, exposed as an ordinary Prometheus histogram.

    The same calls as ``prometheus_client.Histogram`` (``observe``, ``labels(...).observe``), without
    its per-call label validation, two locks and Python walk over the buckets: a request makes three
    of these calls, and the request path runs on one event loop thread, as do scrapes (/metrics is
    an async route), so there is nothing to lock against.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
        labels: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = list(labels)
        self.bounds = sorted(float(b) for b in buckets)
        self.series: dict[tuple[str, ...], Buckets] = {}
        self._unlabelled = None if labels else self.labels()
        registry.register(self)

    def labels(self, *values: str) -> Buckets:
        """The series for these label values, made on first use."""
        series = self.series.get(values)
        if series is None:
            if len(values) != len(self.label_names):
                raise ValueError(f"{self.name} takes labels {self.label_names}, got {values}")
            series = self.series[values] = Buckets(self.bounds)
        return series

    def observe(self, value: float) -> None:
        """Count ``value`` in a histogram without labels."""
        series = self._unlabelled  # inlined Buckets.observe: two calls fewer, on every request
        if series is None:
            raise ValueError(f"{self.name} has labels {self.label_names}: observe through labels(...)")
        series.counts[bisect_left(series.bounds, value)] += 1
        series.total += value

    def collect(self) -> Iterator[Metric]:
        """Cumulative ``_bucket`` samples, ``_count`` and ``_sum`` per label values."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.label_names)
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for values, series in self.series.items():  # first-seen order, as prometheus_client's children
            cumulative = list(accumulate(series.counts))
            family.add_metric(list(values), list(zip(les, cumulative, strict=True)), series.total)
        yield family


class BulkHistogram(PlainHistogram):
    """A histogram without labels that also takes a whole request's values at once.

    A batch scores up to hundreds of rows; counting them one by one cost ~3 µs a row through
    prometheus_client, one numpy bincount per request does the same counting.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        super().__init__(name, documentation, buckets, registry)
        self._np_bounds = np.asarray(self.bounds, dtype=np.float64)

    def observe_many(self, values: np.ndarray) -> None:
        """Count ``values``, as ``observe`` would one by one."""
        if values.size == 1:  # a single-entity request: numpy's call overhead would dominate
            self.observe(float(values[0]))
        elif values.size:
            series = self.labels()
            added = np.bincount(np.searchsorted(self._np_bounds, values, side="left"), minlength=len(series.counts))
            series.counts = [a + b for a, b in zip(series.counts, added.tolist(), strict=True)]
            series.total += float(values.sum())


def final_status(status: int | None, error: BaseException | None) -> int:
    """The status a request ends with: the one sent; else 500 if the app raised (what the server's
    error handler answers); else 499, nginx's "client closed request": the client left first
    (mid-upload, or cancelled), which must not count toward the 5xx alert."""
    if status:
        return status
    return 500 if isinstance(error, Exception) else 499


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
        status = 0
        error: BaseException | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as e:
            error = e
            raise
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            final = final_status(status, error)
            self.metrics.observe_request(scope["method"], template, final, time.perf_counter() - start)
