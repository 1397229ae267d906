"""Fault fixtures: a small model registered in a private MLflow (tests/fault/register.py), and where
the figures go. Independent of the training run, so fault tests need no trained champion."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from feature_repo.settings import PROJECT_ROOT
from feature_repo.store import feast_env
from tests.conftest import FeatureEnv
from tests.fault.register import PRIOR

FAULT_MODEL = "churn_fault"


@dataclass(frozen=True)
class FaultModel:
    """The model fault tests serve: its registered name, tracking URI and training prior."""

    name: str
    tracking_uri: str
    prior: float


def register_model(env: FeatureEnv, tracking_uri: str, name: str = FAULT_MODEL) -> FaultModel:
    """Register a small accepted model as ``name@champion`` in ``tracking_uri`` (in a child process)."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "MLFLOW_", "OTEL_"))}
    child_env.update(feast_env(env.settings))
    child_env.update(
        {
            "SKEWLESS_DATA_DIR": str(env.data_dir),
            "SKEWLESS_FEAST_REGISTRY": env.settings.feast_registry,
            "SKEWLESS_REDIS_CONNECTION": env.settings.redis_connection,
            "OTEL_SDK_DISABLED": "true",
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fault.register", tracking_uri, name],
        cwd=PROJECT_ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, f"registering the fault model failed:\n{proc.stdout}\n{proc.stderr}"
    return FaultModel(name, tracking_uri, PRIOR)


@pytest.fixture(scope="session")
def fault_model(feature_env: FeatureEnv, tmp_path_factory: pytest.TempPathFactory) -> FaultModel:
    """A private MLflow holding one accepted model version."""
    tmp = tmp_path_factory.mktemp("fault-mlflow")
    return register_model(feature_env, f"sqlite:///{tmp / 'mlflow.db'}")


@pytest.fixture(scope="session")
def fault_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of fault_table.jsonl: one line of figures per scenario."""
    return tmp_path_factory.mktemp("fault-figures")


def baseline(url: str, candidates: list[str]) -> dict[str, float]:
    """Scores the healthy service gives ``candidates``, keeping only IDs scored 'ok'."""
    expected: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=10) as c:
        for eid in candidates:
            r = c.get(f"/v1/predict/{eid}")
            if r.status_code == 200 and r.json()["status"] == "ok":
                expected[eid] = r.json()["score"]
    assert len(expected) >= 10, "too few scorable users for a fault test"
    return expected
