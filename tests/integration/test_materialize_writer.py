"""The column-wise writer leaves Redis byte-identical, and the registry recording the same runs,
as Feast's own materializer, run after run, whether it reads the registry file itself (the CLI)
or goes through an open FeatureStore."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from feature_repo.datagen.generate import generate
from feature_repo.pipeline import plan as plans
from feature_repo.pipeline.materialize import materialize
from feature_repo.pipeline.protos import RegistryProto
from feature_repo.pipeline.validate import mark_valid, validate_dir
from feature_repo.settings import PROJECT_ROOT, FeastSettings
from feature_repo.store import feast_env, open_store
from tests.support import RedisProcess, feast_keys, free_port, redis_digest

pytestmark = pytest.mark.integration


@pytest.fixture
def two_redis(tmp_path: Path) -> Iterator[tuple[RedisProcess, RedisProcess]]:
    a = RedisProcess(port=free_port(), workdir=tmp_path / "ra").start()
    b = RedisProcess(port=free_port(), workdir=tmp_path / "rb").start()
    yield a, b
    a.kill()
    b.kill()


def _registry(path: Path) -> tuple[bytes, list[bytes]]:
    """The registry without write times and version id; views by name (Feast moves an updated view to the end)."""
    registry = RegistryProto.FromString(path.read_bytes())
    registry.ClearField("version_id")
    registry.ClearField("last_updated")
    views = sorted(registry.feature_views, key=lambda fv: fv.spec.name)
    for fv in views:
        fv.meta.ClearField("last_updated_timestamp")
    serialized = [fv.SerializeToString(deterministic=True) for fv in views]
    registry.ClearField("feature_views")
    return registry.SerializeToString(deterministic=True), serialized


def _cli_materialize(settings: FeastSettings, end: str) -> set[str]:
    """`materialize` as `make materialize` runs it, in its own process; returns the modules it imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKEWLESS_")}
    env |= {
        "SKEWLESS_DATA_DIR": str(settings.data_dir),
        "SKEWLESS_FEAST_REGISTRY": settings.feast_registry,
        "SKEWLESS_REDIS_CONNECTION": settings.redis_connection,
        "SKEWLESS_MATERIALIZE_CHUNK_ROWS": "97",  # many small chunks: replies read across bursts
        "OTEL_SDK_DISABLED": "true",
    }
    argv = [sys.executable, "-O", "-X", "importtime", "-m", "feature_repo.pipeline.cli", "materialize", "--end", end]
    proc = subprocess.run(argv, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("through", ["cli", "store"])
def test_writer_leaves_redis_and_registry_identical_to_feast(
    tmp_path: Path, two_redis: tuple[RedisProcess, RedisProcess], through: str
) -> None:
    data = tmp_path / "data"
    end = pd.Timestamp.now(tz="UTC").normalize()
    generate(data, users=400, days=60, seed=23, end=end, progress=False)
    assert validate_dir(data).ok
    mark_valid(data)
    feast_redis, fast_redis = two_redis
    settings = [
        FeastSettings.model_validate(
            {"data_dir": str(data), "feast_registry": str(data / name), "redis_connection": r.connection}
        )
        for name, r in (("feast.db", feast_redis), ("fast.db", fast_redis))
    ]
    env = {**os.environ, **feast_env(settings[0])}
    subprocess.run([sys.executable, "-m", "feature_repo.pipeline.cli", "apply"], env=env, check=True, timeout=300)
    shutil.copy(data / "feast.db", data / "fast.db")  # the same applied registry, before any run
    feast_store = open_store(settings[0])
    fast_store = open_store(settings[1]) if through == "store" else None
    if fast_store is not None:
        assert plans.read_store(fast_store).why_not() is None

    # Two incremental runs: the second starts where the first ended and overwrites older rows,
    # which exercises the skip-if-not-newer rule against what the first run stored.
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    for first, run_end in ((True, now - timedelta(days=1)), (False, now)):
        if first:
            # The writer's first window ends at run_end and starts one TTL before it (Feast's own
            # first incremental run would start one TTL before now): Feast writes that window here.
            for fv in feast_store.list_feature_views():
                assert fv.ttl is not None
                feast_store.materialize(run_end - fv.ttl, run_end, feature_views=[fv.name])
        else:
            feast_store.materialize_incremental(end_date=run_end)
        if fast_store is None:
            imported = _cli_materialize(settings[1], run_end.isoformat())
            # The whole point of the CLI's path: neither Feast's SDK nor pandas is loaded.
            assert not {m for m in imported if m == "pandas" or (m.startswith("feast") and ".protos" not in m)}
        else:
            materialize(fast_store, settings[1], run_end)
        assert len(feast_keys(feast_redis.client())) == len(feast_keys(fast_redis.client())) > 0
        assert redis_digest(feast_redis.client()) == redis_digest(fast_redis.client())
        # The registry records the runs as Feast does, so the next run (ours or Feast's) starts at the same place.
        assert _registry(data / "fast.db") == _registry(data / "feast.db")


def test_writer_declines_what_it_does_not_reproduce(
    tmp_path: Path, two_redis: tuple[RedisProcess, RedisProcess]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    s = FeastSettings.model_validate(
        {"data_dir": str(data), "feast_registry": str(data / "r.db"), "redis_connection": two_redis[0].connection}
    )
    store = open_store(s)
    store.config.online_store.key_ttl_seconds = 3600  # Feast would EXPIRE each key; this writer does not
    assert "TTL" in (plans.read_store(store).why_not() or "")
