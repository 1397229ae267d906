"""Tracing wiring: every traced process exports to Jaeger (compose) or a collector (k8s) under its own name."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from observability.settings import TelemetrySettings
from tests.unit.test_deploy_settings import k8s_container_env
from tests.unit.test_deploy_support import compose, service_env

pytestmark = pytest.mark.unit

# The API and the jobs whose spans a user follows in Jaeger.
TRACED_SERVICES = ("api", "feast-apply", "materialize", "train")
# OTLP's standard ports per protocol (what Jaeger and the OTel collector listen on).
OTLP_PORTS = {"http/protobuf": 4318, "grpc": 4317}
JAEGER_UI = 16686


def check_export(where: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Export is on (as TelemetrySettings parses it) and the endpoint's port matches the protocol."""
    monkeypatch.setenv("SKEWLESS_TRACE_EXPORT", env.get("SKEWLESS_TRACE_EXPORT", ""))
    assert TelemetrySettings().trace_export is True, f"{where}: SKEWLESS_TRACE_EXPORT must be true"
    protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert protocol in OTLP_PORTS, f"{where}: observability/tracing.py supports {sorted(OTLP_PORTS)}"
    endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.scheme == "http" and endpoint.port == OTLP_PORTS[protocol], f"{where}: {endpoint.geturl()}"
    assert env["OTEL_SERVICE_NAME"].startswith("skewless-"), where
    return env["OTEL_SERVICE_NAME"]


def test_compose_services_export_to_jaeger_under_distinct_names(monkeypatch: pytest.MonkeyPatch) -> None:
    names = {}
    for service in TRACED_SERVICES:
        env = service_env(service)
        names[service] = check_export(service, env, monkeypatch)
        assert urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"]).hostname == "jaeger", service
    assert len(set(names.values())) == len(names), f"service names must differ: {names}"


def test_jaeger_receives_otlp_and_publishes_its_ui() -> None:
    jaeger = compose()["services"]["jaeger"]
    assert str(jaeger["environment"]["COLLECTOR_OTLP_ENABLED"]).lower() == "true"
    published = {int(p.rsplit(":", 1)[1]) for p in jaeger["ports"]}
    assert {JAEGER_UI, *OTLP_PORTS.values()} <= published
    assert all(p.startswith("127.0.0.1:") for p in jaeger["ports"]), "local only"
    # Tracing is optional: a Jaeger that is slow or unhealthy must not hold back the API or jobs.
    for service in ("api", "feast-apply"):
        assert compose()["services"][service]["depends_on"]["jaeger"]["condition"] == "service_started"


def test_kubernetes_workloads_export_under_distinct_names(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, set[str]] = {}
    for where, env in k8s_container_env():
        name = check_export(where, env, monkeypatch)
        workload = where.rsplit("/", 1)[0]
        seen.setdefault(name, set()).add(workload.split("/", 1)[1])
    # One name per workload (the same workload appears once per overlay).
    assert {"skewless-api", "skewless-feast-apply", "skewless-materialize", "skewless-train"} <= seen.keys()
    for name, workloads in seen.items():
        assert len(workloads) == 1, f"{name} is shared by {workloads}"
