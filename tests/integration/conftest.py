"""Serving fixtures: a model trained by the real training CLI into a private MLflow, and app builders.

The champion comes from `python -m training train` run as a subprocess against the session's
feature repo, exactly as an operator would run it. Extra versions for reload and refusal tests
are re-registrations of that champion's native booster with chosen tags (fast, no retraining).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lightgbm
import mlflow
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from feature_repo.contract import TAG_PREFIX
from feature_repo.settings import PROJECT_ROOT
from observability.otlp_receiver import OtlpReceiver
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import FeatureEnv

MODEL_NAME = "churn"


@dataclass
class Registry:
    """The session's private MLflow and the champion the training CLI registered."""

    tracking_uri: str
    client: MlflowClient
    champion_version: str

    def booster(self, name: str, version: str) -> lightgbm.Booster:
        """A version's native booster, read as serving reads it (no pickle)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=tmp, tracking_uri=self.tracking_uri
            )
            return lightgbm.Booster(model_file=str(Path(path) / "model.lgb"))

    def register_copy(
        self, name: str, tags: dict[str, str] | None = None, alias: str | None = None, source_version: str = ""
    ) -> str:
        """Register the champion's booster again as a new version of ``name`` with its tags (+ overrides)."""
        src = source_version or self.champion_version
        booster = self.booster(MODEL_NAME, src)
        src_tags = self.client.get_model_version(MODEL_NAME, src).tags
        with mlflow.start_run(run_name=f"copy-{name}"):
            mlflow.log_metric("test_roc_auc", 0.5)
            info = mlflow.lightgbm.log_model(booster, name="model", registered_model_name=name)
        version = str(info.registered_model_version)
        for k, v in {**{k: v for k, v in src_tags.items() if k.startswith(TAG_PREFIX)}, **(tags or {})}.items():
            self.client.set_model_version_tag(name, version, k, v)
        if alias:
            self.client.set_registered_model_alias(name, alias, version)
        return version


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver for the session; the training run below exports its trace to it."""
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def registry(
    feature_env: FeatureEnv, tmp_path_factory: pytest.TempPathFactory, otlp_receiver: OtlpReceiver
) -> Registry:
    """Train and register the churn model with the training CLI (subprocess), into a private MLflow."""
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    env = {
        **os.environ,
        "SKEWLESS_DATA_DIR": str(feature_env.data_dir),
        "SKEWLESS_FEAST_REGISTRY": feature_env.settings.feast_registry,
        "SKEWLESS_REDIS_CONNECTION": feature_env.settings.redis_connection,
        "MLFLOW_TRACKING_URI": uri,
        # mlflow.set_registry_uri() in an earlier in-process training exports its own; not this one's.
        "MLFLOW_REGISTRY_URI": uri,
        "SKEWLESS_MODEL_NAME": MODEL_NAME,
        "SKEWLESS_MAX_ROUNDS": "60",
        "SKEWLESS_TRACE_EXPORT": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "training", "train"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"training CLI failed:\n{proc.stdout}\n{proc.stderr}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("serving-tests")
    client = MlflowClient(tracking_uri=uri)
    try:
        version = str(client.get_model_version_by_alias(MODEL_NAME, "champion").version)
    except mlflow.exceptions.MlflowException:
        # The promotion gate may keep a first model on 600 users out; serving tests need a champion.
        version = str(client.get_model_version_by_alias(MODEL_NAME, "challenger").version)
        client.set_registered_model_alias(MODEL_NAME, "champion", version)
    return Registry(uri, client, version)


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(feature_env: FeatureEnv, registry: Registry) -> Iterator[AppFactory]:
    """Build TestClients (lifespan run) with settings overrides and an optional clock; all closed after."""
    opened: list[TestClient] = []

    def make(clock: Callable[[], float] | None = None, **overrides: object) -> TestClient:
        # No background compile unless a test asks: its scorer would attach mid-test (and cost ~20 s of CPU).
        settings = ServingSettings(
            **{  # type: ignore[arg-type]
                "mlflow_tracking_uri": registry.tracking_uri,
                "model_name": MODEL_NAME,
                "compile_model": False,
                **overrides,
            }
        )
        client = TestClient(create_app(settings, feature_env.settings, clock=clock), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for c in opened:
        c.__exit__(None, None, None)


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compiled-model cache for the session: the champion compiles once (~20 s), then loads in ms."""
    return tmp_path_factory.mktemp("compiled") / "cache"


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``check`` until true or timeout; True when it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@pytest.fixture(scope="session")
def api_env(feature_env: FeatureEnv, registry: Registry) -> dict[str, str]:
    """Environment for a uvicorn API process (tests.support.ApiServer) on the session's repo and model."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SKEWLESS_", "MLFLOW_", "TRACEPARENT"))}
    return {
        **env,
        "SKEWLESS_DATA_DIR": str(feature_env.data_dir),
        "SKEWLESS_FEAST_REGISTRY": feature_env.settings.feast_registry,
        "SKEWLESS_REDIS_CONNECTION": feature_env.settings.redis_connection,
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "SKEWLESS_MODEL_NAME": MODEL_NAME,
        "SKEWLESS_COMPILE_MODEL": "false",  # as make_client: LightGBM scores unless a test asks
        "OTEL_SDK_DISABLED": "true",
    }
