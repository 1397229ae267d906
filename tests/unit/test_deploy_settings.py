"""Env vars set by compose, the Dockerfile and Kubernetes are exactly ones the code reads."""

from __future__ import annotations

from typing import Any

import opentelemetry.sdk.environment_variables as otel_env
import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from feature_repo.settings import FeastSettings
from observability.settings import TelemetrySettings
from serving.settings import ServingSettings
from tests.unit.test_deploy_support import (
    APP_SERVICES,
    K8S,
    OVERLAYS,
    containers,
    dockerfile_env,
    k8s_docs,
    kustomize_build,
    pod_specs,
    service_env,
)
from training.settings import TrainSettings

pytestmark = pytest.mark.unit

SETTINGS: tuple[type[BaseSettings], ...] = (FeastSettings, ServingSettings, TrainSettings, TelemetrySettings)
# Read by MLflow itself (the client in training and serving).
MLFLOW_VARS = {"MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"}
# Set for the image's runtime, not for skewless' settings.
RUNTIME_VARS = {
    "PATH",
    "PYTHONPATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONSAFEPATH",
    "HOME",
    "TMPDIR",
    "MPLCONFIGDIR",
    "MLFLOW_DISABLE_TELEMETRY",  # read by MLflow itself: no usage reports from a deployed service
}
# Read by the OpenTelemetry SDK itself (observability/tracing.py leaves them to it); each must be
# a name the SDK defines, so a typo cannot silently turn tracing into a no-op.
SDK_OTEL_VARS = {
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
    "OTEL_RESOURCE_ATTRIBUTES",
}
# Set ahead of the code that reads it; add "NAME": "why" while a setting is still being built.
PENDING: dict[str, str] = {}


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Every env var name a pydantic-settings class reads (prefix + field, or its aliases)."""
    prefix = cls.model_config.get("env_prefix", "")
    names = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c for c in alias.choices if isinstance(c, str)}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{name}")
    return {n.upper() for n in names}


def sdk_vars() -> set[str]:
    """Every OTEL_* variable the OpenTelemetry SDK defines (the values of its constants)."""
    return {getattr(otel_env, n) for n in dir(otel_env) if n.startswith("OTEL_")}


def known_vars() -> set[str]:
    return set().union(*(env_names(c) for c in SETTINGS)) | MLFLOW_VARS | sdk_vars()


def unknown(env: dict[str, Any]) -> set[str]:
    return {k for k in env if k.upper() not in known_vars() and k not in RUNTIME_VARS and k not in PENDING}


def validate_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Load every settings class from exactly this environment: bad values fail like at start-up."""
    import os

    for k in list(os.environ):
        if k.startswith(("SKEWLESS_", "MLFLOW_", "OTEL_")):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for cls in SETTINGS:
        cls()


def k8s_container_env() -> list[tuple[str, dict[str, str]]]:
    """(container, env) for every container of every workload, ConfigMaps expanded (base + overlays)."""
    sources: list[list[dict[str, Any]]] = [[d for _, d in k8s_docs(K8S / "base")]]
    sources += [b for b in (kustomize_build(o) for o in OVERLAYS) if b is not None]
    out = []
    for docs in sources:
        maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
        for doc in docs:
            for spec in pod_specs(doc):
                for c in containers(spec):
                    env: dict[str, str] = {}
                    for src in c.get("envFrom", []):
                        env.update(maps[src["configMapRef"]["name"]])
                    for e in c.get("env", []):
                        env[e["name"]] = e.get("value", "from-secret")
                    out.append((f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}", env))
    return out


def test_settings_classes_read_the_documented_variables() -> None:
    assert {"SKEWLESS_REDIS_CONNECTION", "SKEWLESS_FEAST_REGISTRY", "SKEWLESS_REDIS_PASSWORD"} <= known_vars()
    assert "MLFLOW_TRACKING_URI" in env_names(ServingSettings) & env_names(TrainSettings)
    assert {"SKEWLESS_API_KEY", "SKEWLESS_API_KEY_FILE", "SKEWLESS_MAX_BODY_BYTES"} <= env_names(ServingSettings)
    assert {"SKEWLESS_TRACE_EXPORT", "SKEWLESS_LOG_FORMAT", "SKEWLESS_SLOW_REQUEST_MS"} <= env_names(TelemetrySettings)
    assert sdk_vars() >= SDK_OTEL_VARS, sorted(SDK_OTEL_VARS - sdk_vars())


def test_skewless_mlflow_variables_win_over_mlflows_own_in_training_and_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One env file may carry both: the project's own name is the more specific, for every component.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///generic.db")
    monkeypatch.setenv("SKEWLESS_MLFLOW_TRACKING_URI", "sqlite:///ours.db")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "generic")
    monkeypatch.setenv("SKEWLESS_EXPERIMENT_NAME", "ours")
    assert ServingSettings().mlflow_tracking_uri == "sqlite:///ours.db"
    train = TrainSettings()
    assert train.tracking_uri == "sqlite:///ours.db"
    assert train.experiment_name == "ours"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_compose_sets_only_variables_the_code_reads(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**dockerfile_env(), **service_env(service)}
    assert not unknown(env), f"{service} sets variables nothing reads: {sorted(unknown(env))}"
    validate_settings({k: v for k, v in env.items() if k not in RUNTIME_VARS}, monkeypatch)


def test_dockerfile_env_is_read_by_the_code() -> None:
    env = dockerfile_env()
    assert not unknown(env), sorted(unknown(env))
    assert env["HOME"] == env["TMPDIR"] == "/tmp" and env["MPLCONFIGDIR"].startswith("/tmp")


def test_services_that_touch_redis_get_a_user_and_a_password() -> None:
    for service in ("api", "feast-apply", "materialize", "train"):
        env = service_env(service)
        assert "username=" in env["SKEWLESS_REDIS_CONNECTION"], service
        assert env.get("SKEWLESS_REDIS_PASSWORD") or env.get("SKEWLESS_REDIS_PASSWORD_FILE"), service
        assert env["SKEWLESS_FEAST_REGISTRY"].startswith("postgresql+psycopg://"), service
    for service in ("api", "train"):
        assert service_env(service)["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_every_required_setting_is_provided(monkeypatch: pytest.MonkeyPatch) -> None:
    required = {n for c in SETTINGS for n, f in c.model_fields.items() if f.is_required()}
    for service in APP_SERVICES:
        env = {k.upper() for k in {**dockerfile_env(), **service_env(service)}}
        for cls in SETTINGS:
            prefix = cls.model_config.get("env_prefix", "").upper()
            missing = {n for n in required if n in cls.model_fields and f"{prefix}{n.upper()}" not in env}
            assert not missing, f"{service} lacks required {cls.__name__} settings {missing}"


def test_kubernetes_sets_only_variables_the_code_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    found = k8s_container_env()
    assert found
    for where, env in found:
        assert not unknown(env), f"{where} sets variables nothing reads: {sorted(unknown(env))}"
        assert "SKEWLESS_REDIS_CONNECTION" in env and "SKEWLESS_FEAST_REGISTRY" in env, where
        assert "SKEWLESS_REDIS_PASSWORD_FILE" in env, where
        validate_settings({k: v for k, v in env.items() if k not in PENDING}, monkeypatch)


def test_kubernetes_pipeline_jobs_use_the_read_write_redis_user() -> None:
    for where, env in k8s_container_env():
        user = "skewless-materialize" if any(j in where for j in ("apply", "validate", "/materialize")) else None
        if user:
            assert f"username={user}" in env["SKEWLESS_REDIS_CONNECTION"], where
        elif "skewless-api" in where or "train" in where:
            assert "username=skewless-serving" in env["SKEWLESS_REDIS_CONNECTION"], where


def test_kubernetes_secrets_are_references_not_values() -> None:
    for path, doc in k8s_docs(K8S / "base"):
        assert doc["kind"] != "Secret", f"{path.name}: secrets are created out of band, never committed"
    for overlay in OVERLAYS:
        for path in (K8S / "overlays" / overlay).glob("*.yaml"):
            kinds = [d.get("kind") for d in yaml.safe_load_all(path.read_text()) if d]
            assert "Secret" not in kinds, path
