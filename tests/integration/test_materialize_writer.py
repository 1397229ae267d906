"""The fast writer leaves Redis byte-identical to Feast's own materializer, run after run."""

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
from feature_repo.pipeline import writer
from feature_repo.pipeline.validate import mark_valid, validate_dir
from feature_repo.settings import FeastSettings
from feature_repo.store import feast_env, open_store
from tests.support import RedisProcess, free_port, redis_digest

pytestmark = pytest.mark.integration


@pytest.fixture
def two_redis(tmp_path: Path) -> Iterator[tuple[RedisProcess, RedisProcess]]:
    a = RedisProcess(port=free_port(), workdir=tmp_path / "ra").start()
    b = RedisProcess(port=free_port(), workdir=tmp_path / "rb").start()
    yield a, b
    a.kill()
    b.kill()


def test_writer_leaves_redis_identical_to_feast(tmp_path: Path, two_redis: tuple[RedisProcess, RedisProcess]) -> None:
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
    fast_store = open_store(settings[1])
    assert writer.supported(fast_store) is None

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
        written = writer.materialize_incremental(fast_store, run_end, chunk_rows=97)  # many small chunks
        assert sum(written.values()) > 0
        assert feast_redis.client().dbsize() == fast_redis.client().dbsize() > 0
        assert redis_digest(feast_redis.client()) == redis_digest(fast_redis.client())
        # The registry records the run the same way, so the next run starts at the same place.
        for fv in feast_store.list_feature_views():
            assert fast_store.get_feature_view(fv.name).most_recent_end_time == fv.most_recent_end_time


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
    assert "TTL" in (writer.supported(store) or "")
