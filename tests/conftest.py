"""Shared fixtures. Integration fixtures start their own redis-server on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from feast import FeatureStore

from feature_repo.datagen.generate import generate
from feature_repo.pipeline.materialize import materialize
from feature_repo.pipeline.validate import mark_valid, validate_dir
from feature_repo.settings import FeastSettings, get_feast_settings
from feature_repo.store import feast_env, open_store
from tests.support import RedisProcess, free_port

# A fixed "today" would make online features stale against the wall clock, so the
# integration data ends at midnight UTC today; unit tests use fixed dates.
TEST_USERS = 600


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A private redis-server for the session."""
    r = RedisProcess(port=free_port(), workdir=tmp_path_factory.mktemp("redis")).start()
    yield r
    r.kill()


@dataclass
class FeatureEnv:
    """A generated dataset, applied and materialized into a private Redis."""

    settings: FeastSettings
    store: FeatureStore
    data_dir: Path
    redis: RedisProcess
    end: pd.Timestamp


def build_feature_env(tmp: Path, redis_proc: RedisProcess, users: int = TEST_USERS, seed: int = 11) -> FeatureEnv:
    """Generate, validate, `feast apply` and materialize into ``redis_proc``."""
    data_dir = tmp / "data"
    end = pd.Timestamp.now(tz="UTC").normalize()
    generate(data_dir, users=users, days=90, seed=seed, end=end, progress=False)
    report = validate_dir(data_dir)
    assert report.ok, report.failures
    mark_valid(data_dir)
    env = {
        "SKEWLESS_DATA_DIR": str(data_dir),
        "SKEWLESS_FEAST_REGISTRY": str(data_dir / "registry.db"),
        "SKEWLESS_REDIS_CONNECTION": redis_proc.connection,
    }
    os.environ.update(env)
    get_feast_settings.cache_clear()
    settings = get_feast_settings()
    os.environ.update(feast_env(settings))
    # The real `feast apply`, through the same CLI `make apply` runs.
    subprocess.run(
        [sys.executable, "-m", "feature_repo.pipeline.cli", "apply"],
        env=dict(os.environ),
        check=True,
        timeout=300,
        capture_output=True,
    )
    store = open_store(settings)
    materialize(store, settings)
    return FeatureEnv(settings=settings, store=store, data_dir=data_dir, redis=redis_proc, end=end)


@pytest.fixture(scope="session")
def feature_env(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisProcess) -> FeatureEnv:
    """One materialized feature repo shared by the integration tests of a session."""
    return build_feature_env(tmp_path_factory.mktemp("feast"), redis_server)
