"""Tracing end to end: a uvicorn API exports over real OTLP/HTTP to a receiver in this process,
which decodes the ExportTraceServiceRequest protobufs as Jaeger would receive them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from feature_repo.settings import PROJECT_ROOT
from observability.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.conftest import FeatureEnv
from tests.integration.conftest import MODEL_NAME, AppFactory, Registry
from tests.support import ApiServer, free_port

pytestmark = pytest.mark.integration

USER = "u0000042"
SERVER_KIND = 2  # SPAN_KIND_SERVER in the OTLP protobuf
CLIENT_KIND = 3


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers.items()), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


@pytest.fixture(scope="module")
def receiver(otlp_receiver: OtlpReceiver) -> OtlpReceiver:
    """The session's receiver (the training run exported there too); tests filter by trace id."""
    return otlp_receiver


def traced_env(api_env: dict[str, str], endpoint: str) -> dict[str, str]:
    return {
        **api_env,
        "OTEL_SDK_DISABLED": "false",
        "SKEWLESS_TRACE_EXPORT": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_SERVICE_NAME": "skewless-api-under-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # export within 50 ms, so tests need not wait long
        "SKEWLESS_SLOW_REQUEST_MS": "100",
    }


@pytest.fixture(scope="module")
def api(
    api_env: dict[str, str], receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    server = ApiServer(traced_env(api_env, receiver.endpoint), tmp_path_factory.mktemp("api")).start("/ready")
    yield server
    server.stop()


def trace_of(receiver: OtlpReceiver, trace_id: str, names: set[str], server: bool = True) -> dict[str, ReceivedSpan]:
    """The spans of one trace by name, once every name in ``names`` (and, for a request, its
    server span) has arrived. The server span ends last, after the response is sent, so it can
    reach the receiver in a later export batch than its children."""

    def arrived(spans: list[ReceivedSpan]) -> bool:
        mine = [s for s in spans if s.trace_id == trace_id]
        has_root = not server or any(s.kind == SERVER_KIND for s in mine)
        return has_root and names <= {s.name for s in mine}

    spans = receiver.wait_for(arrived)
    return {s.name: s for s in spans if s.trace_id == trace_id}


def server_span(spans: dict[str, ReceivedSpan]) -> ReceivedSpan:
    (root,) = [s for s in spans.values() if s.kind == SERVER_KIND]
    return root


def test_one_prediction_is_one_trace_with_feature_and_inference_children(
    api: ApiServer, receiver: OtlpReceiver
) -> None:
    status, headers, body = get(api.url(f"/v1/predict/{USER}"))
    assert status == 200, body
    trace_id = headers["x-trace-id"]
    assert len(trace_id) == 32 and int(trace_id, 16)
    spans = trace_of(receiver, trace_id, {"feature_retrieval", "model_inference"})
    root = server_span(spans)
    assert root.parent_span_id == ""  # the server span is the root
    assert root.attributes["http.route"] == "/v1/predict/{entity_id}"
    assert root.resource["service.name"] == "skewless-api-under-test"
    assert root.resource["deployment.environment"] == "test"

    features, inference = spans["feature_retrieval"], spans["model_inference"]
    assert features.parent_span_id == root.span_id and inference.parent_span_id == root.span_id
    assert features.attributes["skewless.feature_service"] == "churn_v1"
    assert features.attributes["skewless.entity_count"] == 1
    assert features.attributes["skewless.features.missing_count"] >= 0
    assert features.attributes["skewless.features.stale_count"] >= 0
    assert inference.attributes["skewless.model.name"] == "churn"
    assert inference.attributes["skewless.model.version"] == json.loads(body)["model"]["version"]
    assert inference.attributes["skewless.model.rows"] == 1

    redis_spans = [s for s in receiver.spans() if s.trace_id == trace_id and s.attributes.get("db.system") == "redis"]
    assert redis_spans, "no Redis command span in the trace"
    assert all(s.parent_span_id == features.span_id for s in redis_spans)
    assert {s.kind for s in redis_spans} == {CLIENT_KIND}
    # Every span of the request lies within the server span.
    for s in receiver.spans():
        if s.trace_id == trace_id:
            assert root.start_ns <= s.start_ns and s.end_ns <= root.end_ns


def test_through_feasts_sdk_the_redis_instrumentations_spans_sit_under_feature_retrieval(
    api_env: dict[str, str], receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """Stages are current in our own ContextVar; redis-py's instrumentation, under Feast's read, still finds them."""
    env = {**traced_env(api_env, receiver.endpoint), "SKEWLESS_FEATURE_READER": "sdk"}
    server = ApiServer(env, tmp_path).start("/ready")
    try:
        status, headers, body = get(server.url(f"/v1/predict/{USER}"))
    finally:
        server.stop()
    assert status == 200, body
    trace_id = headers["x-trace-id"]
    spans = trace_of(receiver, trace_id, {"feature_retrieval", "model_inference"})
    features = spans["feature_retrieval"]
    assert features.parent_span_id == server_span(spans).span_id
    redis_spans = [s for s in receiver.spans() if s.trace_id == trace_id and s.attributes.get("db.system") == "redis"]
    assert redis_spans, "no redis-py span in the trace"
    assert all(s.parent_span_id == features.span_id for s in redis_spans)


def test_incoming_traceparent_is_continued(api: ApiServer, receiver: OtlpReceiver) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    status, headers, _ = get(api.url(f"/v1/predict/{USER}"), {"traceparent": f"00-{trace_id}-{parent}-01"})
    assert status == 200
    assert headers["x-trace-id"] == trace_id
    root = server_span(trace_of(receiver, trace_id, {"feature_retrieval"}))
    assert root.parent_span_id == parent


def test_batch_and_errors_carry_trace_ids_and_probes_are_not_traced(api: ApiServer, receiver: OtlpReceiver) -> None:
    req = urllib.request.Request(
        api.url("/v1/predict"),
        data=json.dumps({"entity_ids": [USER, "u9999999"]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        batch_trace = r.headers["x-trace-id"]
    spans = trace_of(receiver, batch_trace, {"feature_retrieval", "model_inference"})
    assert spans["feature_retrieval"].attributes["skewless.entity_count"] == 2
    assert spans["feature_retrieval"].attributes["skewless.entities.not_found"] == 1

    status, headers, _ = get(api.url("/v1/predict/not-an-id"))
    assert status == 422 and "x-trace-id" in headers
    status, headers, _ = get(api.url("/health"))
    assert status == 200 and "x-trace-id" not in headers
    get(api.url("/ready"))
    get(api.url("/metrics"))
    # A traced request after the probes: once it has arrived, so would any probe span before it.
    _, headers, _ = get(api.url(f"/v1/predict/{USER}"))
    trace_of(receiver, headers["x-trace-id"], {"feature_retrieval"})
    routes = {s.attributes.get("http.route") for s in receiver.spans()}
    assert not routes & {"/health", "/ready", "/metrics"}


def test_a_redis_stall_is_an_error_span_and_a_slow_request_warning(
    api: ApiServer, receiver: OtlpReceiver, feature_env: FeatureEnv
) -> None:
    # Paused past the 250 ms deadline: the read fails, the span says why, the client gets a 503.
    feature_env.redis.pause()
    try:
        status, headers, _ = get(api.url(f"/v1/predict/{USER}"))
    finally:
        feature_env.redis.resume()
    assert status == 503
    failed = trace_of(receiver, headers["x-trace-id"], {"feature_retrieval"})
    assert failed["feature_retrieval"].status == "ERROR"
    assert any(name == "exception" for name, _ in failed["feature_retrieval"].events)
    assert server_span(failed).status == "ERROR"

    # Paused for 150 ms, under the deadline: a correct answer, but slower than the 100 ms threshold.
    feature_env.redis.pause()
    threading.Timer(0.15, feature_env.redis.resume).start()
    status, headers, _ = get(api.url(f"/v1/predict/{USER}"))
    assert status == 200
    slow_trace = headers["x-trace-id"]
    deadline = time.monotonic() + 5
    warning: dict[str, object] | None = None
    while warning is None and time.monotonic() < deadline:
        for line in api.logs().splitlines():
            if line.startswith("{") and slow_trace in line:
                record = json.loads(line)
                if record["message"].startswith("slow request"):
                    warning = record
        time.sleep(0.05)
    assert warning is not None, api.logs()[-2000:]
    assert warning["level"] == "WARNING"
    assert warning["trace_id"] == slow_trace
    assert warning["route"] == "/v1/predict/{entity_id}"
    assert warning["entity_count"] == 1
    stages = warning["stages_ms"]
    assert isinstance(stages, dict) and stages["feature_retrieval"] >= 100
    assert "model_inference" in stages
    assert float(warning["duration_ms"]) >= 150  # type: ignore[arg-type]


def test_the_api_writes_nothing_but_json_log_lines(api: ApiServer) -> None:
    # A log shipper parses the stream line by line: a library's warning printed raw (MLflow's
    # SQLAlchemy deprecation at start-up did) is a line it cannot read.
    lines = [line for line in api.logs().splitlines() if line.strip()]
    assert lines, "the API logged nothing at all"
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line[:300]}")
        assert isinstance(record, dict), line
        assert {"level", "logger", "message", "trace_id", "span_id", "time"} <= record.keys(), line


def test_a_dead_collector_blocks_nothing(api_env: dict[str, str], tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    server = ApiServer(traced_env(api_env, dead), tmp_path).start("/ready")
    try:
        took: list[float] = []
        for _ in range(50):
            t0 = time.perf_counter()
            status, headers, _ = get(server.url(f"/v1/predict/{USER}"))
            took.append(time.perf_counter() - t0)
            assert status == 200 and "x-trace-id" in headers
            time.sleep(0.01)  # spread over several export attempts
        # A blocking exporter shows up as seconds (its timeout), not as scheduling noise.
        assert sorted(took)[len(took) // 2] < 0.1, f"median {sorted(took)[len(took) // 2] * 1000:.0f} ms"
        assert max(took) < 1.0, f"a request took {max(took) * 1000:.0f} ms with the collector down"
    finally:
        took = server.stop()
    assert took < 10, f"shutdown took {took:.1f}s with the collector down"


def test_training_run_is_one_trace_with_a_span_per_stage_and_mlflow_knows_it(
    receiver: OtlpReceiver, registry: Registry
) -> None:
    # The session's model was trained by the CLI with export on (tests/integration/conftest.py).
    version = registry.client.get_model_version(MODEL_NAME, registry.champion_version)
    run = registry.client.get_run(version.run_id)
    trace_id = run.data.tags["otel.trace_id"]
    stages = {"historical_retrieval", "fit", "evaluate", "register"}
    spans = trace_of(receiver, trace_id, {"train", *stages}, server=False)
    root = spans["train"]
    assert root.parent_span_id == "" and root.resource["service.name"] == "skewless-train"
    assert all(spans[name].parent_span_id == root.span_id for name in stages)
    assert spans["register"].attributes["mlflow.run_id"] == run.info.run_id
    order = sorted(stages, key=lambda n: spans[n].start_ns)
    assert order == ["historical_retrieval", "fit", "evaluate", "register"]


def test_pipeline_commands_are_traced_and_continue_a_given_traceparent(
    api_env: dict[str, str], receiver: OtlpReceiver
) -> None:
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    env = {
        **traced_env(api_env, receiver.endpoint),
        "OTEL_SERVICE_NAME": "skewless-pipeline",
        "TRACEPARENT": f"00-{trace_id}-{parent}-01",
    }
    for command in ("validate", "materialize"):
        proc = subprocess.run(
            [sys.executable, "-m", "feature_repo.pipeline.cli", command],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
    spans = trace_of(receiver, trace_id, {"validate", "materialize"}, server=False)
    assert spans["validate"].parent_span_id == parent and spans["materialize"].parent_span_id == parent
    assert spans["validate"].attributes["skewless.failures"] == 0


def test_without_export_requests_still_get_trace_ids_and_continue_the_caller(make_client: AppFactory) -> None:
    # The embedded default: nothing is exported or instrumented, yet ids correlate logs and callers.
    client = make_client()
    first = client.get(f"/v1/predict/{USER}").headers["x-trace-id"]
    second = client.get(f"/v1/predict/{USER}").headers["x-trace-id"]
    assert len(first) == 32 and int(first, 16) and first != second
    given = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = client.get(f"/v1/predict/{USER}", headers={"traceparent": f"00-{given}-00f067aa0ba902b7-01"})
    assert r.status_code == 200 and r.headers["x-trace-id"] == given
    assert "x-trace-id" not in client.get("/health").headers


def test_fastapis_own_server_span_when_asked(
    api_env: dict[str, str], receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory, api: ApiServer
) -> None:
    """SKEWLESS_SERVER_SPAN=fastapi: FastAPI's instrumentation makes the server span, with the same shape."""
    env = {**traced_env(api_env, receiver.endpoint), "SKEWLESS_SERVER_SPAN": "fastapi"}
    server = ApiServer(env, tmp_path_factory.mktemp("api-fastapi-spans")).start("/ready")
    try:
        spans_by_scope = {}
        for target in (server, api):
            status, headers, _ = get(target.url(f"/v1/predict/{USER}"))
            assert status == 200
            spans = trace_of(receiver, headers["x-trace-id"], {"feature_retrieval", "model_inference"})
            root = server_span(spans)
            assert root.parent_span_id == "" and root.name == "GET /v1/predict/{entity_id}"
            assert spans["feature_retrieval"].parent_span_id == root.span_id
            spans_by_scope[root.scope] = root
    finally:
        server.stop()
    assert set(spans_by_scope) == {"fastapi", "skewless.serving.http"}
    theirs, ours = spans_by_scope["fastapi"], spans_by_scope["skewless.serving.http"]
    # Same HTTP attributes (the port differs: two servers).
    assert {k: v for k, v in ours.attributes.items() if k != "server.port"} == {
        k: v for k, v in theirs.attributes.items() if k != "server.port"
    }
