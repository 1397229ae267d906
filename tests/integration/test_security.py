"""Access and input limits through the real app: API key, body cap, batch cap; secrets never leak."""

from __future__ import annotations

import hmac
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import serving.security
from serving.settings import ServingSettings
from tests.conftest import FeatureEnv
from tests.fault.conftest import register_model
from tests.fault.harness import api_environment, copy_redis, running_api
from tests.integration.conftest import MODEL_NAME, AppFactory, Registry
from tests.support import RedisProcess, free_port

pytestmark = pytest.mark.integration

KEY = "k-" + "7" * 30
OPEN_PATHS = {"/health", "/ready", "/metrics"}


def _protected_requests(client: TestClient) -> list[tuple[str, str, dict[str, object] | None]]:
    """One request per non-probe route the app declares (so a new route cannot slip by unprotected)."""
    out: list[tuple[str, str, dict[str, object] | None]] = [("GET", "/openapi.json", None), ("GET", "/docs", None)]
    for template, operations in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        if template in OPEN_PATHS:
            continue
        path = template.replace("{entity_id}", "u0000042")
        for method in operations:
            out.append((method.upper(), path, {"entity_ids": ["u0000042"]} if method == "post" else None))
    assert len(out) >= 5
    return out


def test_without_a_configured_key_nothing_is_asked(make_client: AppFactory) -> None:
    client = make_client()
    assert client.get("/v1/model").status_code == 200
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_every_non_probe_endpoint_needs_the_key(make_client: AppFactory) -> None:
    client = make_client(api_key=KEY)
    for method, path, body in _protected_requests(client):
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY[:-1]}, {"X-API-Key": KEY + "x"}):
            r = client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "X-API-Key"
            assert KEY not in r.text
        r = client.request(method, path, json=body, headers={"X-API-Key": KEY})
        assert r.status_code != 401, (method, path)
        assert r.status_code < 500, (method, path, r.text)


def test_probes_and_metrics_stay_open_with_a_key(make_client: AppFactory) -> None:
    client = make_client(api_key=KEY)
    for path in sorted(OPEN_PATHS):
        assert client.get(path).status_code == 200, path


def test_the_spec_declares_the_key(make_client: AppFactory) -> None:
    spec = make_client(api_key=KEY).get("/openapi.json", headers={"X-API-Key": KEY}).json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert spec["paths"]["/v1/model"]["get"]["security"] == [{"ApiKey": []}]
    assert "401" in spec["paths"]["/v1/predict"]["post"]["responses"]
    assert "security" not in spec["paths"]["/health"]["get"]


def test_the_key_can_come_from_a_secret_file(make_client: AppFactory, tmp_path: Path) -> None:
    secret = tmp_path / "api-key"
    secret.write_text(KEY + "\n")
    client = make_client(api_key_file=str(secret))
    assert client.get("/v1/model").status_code == 401
    assert client.get("/v1/model", headers={"X-API-Key": KEY}).status_code == 200


def test_an_empty_key_fails_at_start_up(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    for settings in (ServingSettings(api_key=""), ServingSettings(api_key_file=tmp_path / "empty")):  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="empty"):
            settings.resolved_api_key()


def test_the_key_is_compared_in_constant_time(make_client: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(serving.security.hmac, "compare_digest", spy)
    client = make_client(api_key=KEY)
    assert client.get("/v1/model", headers={"X-API-Key": "nope"}).status_code == 401
    assert client.get("/v1/model", headers={"X-API-Key": KEY}).status_code == 200
    assert calls == [(b"nope", KEY.encode()), (KEY.encode(), KEY.encode())]


def test_body_over_the_cap_is_413_declared_or_chunked(make_client: AppFactory) -> None:
    client = make_client(max_body_bytes=2048, max_batch_size=1000)
    ids = [f"u{i:07d}" for i in range(200)]  # ~2.4 kB as JSON
    big = httpx.Request("POST", "http://x", json={"entity_ids": ids}).content
    assert len(big) > 2048

    r = client.post("/v1/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent as Transfer-Encoding: chunked
        for i in range(0, len(big), 500):
            yield big[i : i + 500]

    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"

    small = httpx.Request("POST", "http://x", json={"entity_ids": ids[:50]}).content
    r = client.post("/v1/predict", content=iter([small]), headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert len(r.json()["predictions"]) == 50


def test_chunked_body_over_the_cap_is_413_over_the_wire(
    feature_env: FeatureEnv, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A real HTTP/1.1 chunked upload to uvicorn, no Content-Length, stopped at the cap."""
    tmp = tmp_path_factory.mktemp("chunked")
    model = register_model(feature_env, f"sqlite:///{tmp / 'mlflow.db'}")
    env = api_environment(
        feature_env, model.tracking_uri, model.name, feature_env.redis.connection, max_body_bytes="4096"
    )
    with running_api(env, tmp / "api", wait_path="/health") as api, httpx.Client(base_url=api.url("")) as c:
        r = c.post("/v1/predict", content=(b'{"entity_ids": ["' + b"u" * 1000 for _ in range(50)))
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "body_too_large"
        assert "content-length" not in r.request.headers
        assert c.get("/health").status_code == 200


def test_a_trickled_body_is_408_and_frees_its_slot(
    feature_env: FeatureEnv, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A client that declares a body and stops sending (slowloris) must not keep its in-flight slot:
    with one slot, the next caller would otherwise be shed for as long as the trickle lasts."""

    tmp = tmp_path_factory.mktemp("trickle")
    model = register_model(feature_env, f"sqlite:///{tmp / 'mlflow.db'}")
    env = api_environment(
        feature_env,
        model.tracking_uri,
        model.name,
        feature_env.redis.connection,
        max_in_flight="1",
        body_timeout_ms="300",
    )
    with running_api(env, tmp / "api") as api, socket.create_connection(("127.0.0.1", api.port), timeout=5) as slow:
        head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        slow.sendall(head + b'{"entity_ids": [')  # 16 of the 100 bytes, then nothing
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer:
            part = slow.recv(4096)
            assert part, "the server closed the connection without an answer"
            answer += part
        waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"body_timeout" in answer or b"body_timeout" in slow.recv(4096)
        assert 0.25 < waited < 3, f"answered after {waited:.2f} s"
        with httpx.Client(base_url=api.url("")) as c:  # the one slot is free again
            r = c.post("/v1/predict", json={"entity_ids": ["u0000001"]})
            assert r.status_code == 200, r.text


def test_batch_over_the_cap_is_422(make_client: AppFactory) -> None:
    client = make_client(max_batch_size=5)
    r = client.post("/v1/predict", json={"entity_ids": [f"u{i:07d}" for i in range(6)]})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "batch_too_large"
    assert client.post("/v1/predict", json={"entity_ids": [f"u{i:07d}" for i in range(5)]}).status_code == 200


PASSWORD = "pw-Zq8" + "x" * 20 + "-never-shown"


def test_redis_password_never_leaks(feature_env: FeatureEnv, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A password-protected Redis, the password from a secret file; then the password changes under the
    running API (every read fails with WRONGPASS) and a second API starts with a wrong one. The password
    must not appear in logs, spans, any response body, /v1/model, /ready or /metrics."""
    from observability.otlp_receiver import OtlpReceiver

    tmp = tmp_path_factory.mktemp("secrets")
    redis_proc = RedisProcess(port=free_port(), workdir=tmp / "redis").start()
    receiver = OtlpReceiver().start()
    bodies: list[str] = []
    logs: list[str] = []
    try:
        copy_redis(feature_env.redis.client(), redis_proc.client())
        admin = redis_proc.client()
        admin.config_set("requirepass", PASSWORD)
        admin = redis_proc.client()
        admin.connection_pool.connection_kwargs["password"] = PASSWORD
        secret = tmp / "redis-password"
        secret.write_text(PASSWORD + "\n")
        model = register_model(feature_env, f"sqlite:///{tmp / 'mlflow.db'}")
        tracing = {"TRACE_EXPORT": "true", "LOG_LEVEL": "DEBUG"}
        env = api_environment(
            feature_env, model.tracking_uri, model.name, redis_proc.connection, redis_password_file=str(secret)
        )
        env.pop("SKEWLESS_FEAST_CONNECTION", None)  # the API derives it (with the password) itself
        env.pop("OTEL_SDK_DISABLED")
        env.update({f"SKEWLESS_{k}": v for k, v in tracing.items()})
        env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})

        def exercise(url: str) -> None:
            with httpx.Client(base_url=url, timeout=10) as c:
                for method, path, body in [
                    ("GET", "/v1/predict/u0000042", None),
                    ("GET", "/v1/predict/u0000042?include_features=true", None),
                    ("GET", "/v1/predict/u9999999", None),
                    ("GET", "/v1/predict/bad id", None),
                    ("POST", "/v1/predict", {"entity_ids": ["u0000001", "u0000002"]}),
                    ("POST", "/v1/predict", {"entity_ids": "nope"}),
                    ("GET", "/v1/model", None),
                    ("GET", "/ready", None),
                    ("GET", "/metrics", None),
                    ("GET", "/openapi.json", None),
                ]:
                    r = c.request(method, path, json=body)
                    bodies.append(f"{method} {path} {r.status_code} {r.headers} {r.text}")

        with running_api(env, tmp / "api-good") as api:
            exercise(api.url(""))
            assert any(" 200 " in b and "/v1/model" in b for b in bodies), "the good API did not serve"
            admin.config_set("requirepass", PASSWORD + "-rotated")
            admin.client_kill_filter(_type="normal", skipme=True)  # drop the API's authenticated connections
            exercise(api.url(""))
            logs.append(api.logs())
        assert any(" 503 " in b and "/v1/predict/u0000042" in b for b in bodies), "the wrong password never showed"

        env["SKEWLESS_REDIS_PASSWORD"] = PASSWORD  # env var wins over the file; now wrong from the start
        with running_api(env, tmp / "api-wrong", wait_path="/health") as api:
            exercise(api.url(""))
            logs.append(api.logs())
        spans = receiver.spans()
    finally:
        receiver.stop()
        redis_proc.kill()
    assert any("WRONGPASS" in b or "Authentication" in b or "invalid" in b for b in bodies + logs)
    attributes = [f"{s.name} {s.attributes} {s.resource} {s.events} {s.status}" for s in spans]
    for where, texts in (("response", bodies), ("log", logs), ("span", attributes)):
        leaked = [t[:300] for t in texts if PASSWORD in t or PASSWORD[:12] in t]
        assert not leaked, f"the Redis password appears in a {where}: {leaked[:2]}"
    print(f"\nsecrets: {len(bodies)} responses, {sum(len(x) for x in logs)} log chars, {len(spans)} spans checked")


def test_redis_tls_comes_through_the_connection_string(
    feature_env: FeatureEnv, registry: Registry, tmp_path: Path
) -> None:
    """A TLS-only redis-server: with `ssl=true,ssl_ca_certs=...` the API reads features over TLS;
    the same address without `ssl=true` is not ready."""
    import shutil
    import subprocess
    import time

    import redis

    from feature_repo.settings import FeastSettings
    from serving.app import create_app

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    req = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        [*req, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    binary = shutil.which("redis-server")
    assert binary
    plain = [binary, "--port", "0", "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]
    tls_files = ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)]
    server = subprocess.Popen(
        [*plain, "--tls-port", str(port), *tls_files, "--tls-auth-clients", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        tls = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(cert), socket_timeout=2)
        deadline = time.monotonic() + 10
        while True:
            try:
                tls.ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, "TLS redis-server did not start"
                time.sleep(0.05)
        copy_redis(feature_env.redis.client(), tls)
        settings = ServingSettings(mlflow_tracking_uri=registry.tracking_uri, model_name=MODEL_NAME)
        for connection, ready in ((f"127.0.0.1:{port},ssl=true,ssl_ca_certs={cert}", 200), (f"127.0.0.1:{port}", 503)):
            feast: FeastSettings = feature_env.settings.model_copy(update={"redis_connection": connection})
            with TestClient(create_app(settings, feast), raise_server_exceptions=False) as client:
                assert client.get("/ready").status_code == ready, (connection, client.get("/ready").text)
                r = client.get("/v1/predict/u0000042")
                if ready == 200:
                    assert r.status_code == 200 and r.json()["status"] == "ok", r.text
                else:
                    assert r.status_code == 503, r.text
    finally:
        server.kill()
        server.wait(5)
