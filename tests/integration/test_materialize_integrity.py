"""Materialization keeps Redis whole: a run killed with SIGKILL part-way, then re-run, ends
byte-identical to one clean run; a Redis that lost its data is refilled by the next run. (A second
run changing nothing and a failed validation writing nothing are in test_feature_repo.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from feature_repo.pipeline.materialize import mark_key
from feature_repo.settings import PROJECT_ROOT
from tests.conftest import FeatureEnv
from tests.support import RedisProcess, free_port, redis_digest

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "feature_repo.pipeline.cli", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _run(env: dict[str, str], *args: str) -> None:
    proc = _cli(env, *args)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode(errors="replace")


def _writes(proc: RedisProcess) -> int:
    stats = proc.client().info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_hset", "cmdstat_hmset"))


def test_a_run_killed_part_way_then_rerun_ends_identical_to_a_clean_run(
    feature_env: FeatureEnv, tmp_path: Path
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "OTEL_"))}
    # Small chunks: many pipelines, so "half-way" falls between two of them, not inside one burst.
    base.update(
        {
            "SKEWLESS_DATA_DIR": str(feature_env.data_dir),
            "OTEL_SDK_DISABLED": "true",
            "SKEWLESS_MATERIALIZE_CHUNK_ROWS": "20",
        }
    )
    clean = RedisProcess(port=free_port(), workdir=tmp_path / "clean").start()
    killed = RedisProcess(port=free_port(), workdir=tmp_path / "killed").start()
    try:

        def env(redis_proc: RedisProcess, registry: Path) -> dict[str, str]:
            return base | {"SKEWLESS_REDIS_CONNECTION": redis_proc.connection, "SKEWLESS_FEAST_REGISTRY": str(registry)}

        # A fresh registry (no materialization history), copied so each run starts from nothing.
        _run(env(clean, tmp_path / "registry.db"), "apply")
        shutil.copy(tmp_path / "registry.db", tmp_path / "registry-clean.db")
        shutil.copy(tmp_path / "registry.db", tmp_path / "registry-killed.db")
        end = pd.Timestamp.now(tz="UTC").isoformat()  # one end for every run, so their windows agree

        _run(env(clean, tmp_path / "registry-clean.db"), "materialize", "--end", end)
        digest = redis_digest(clean.client())
        total = _writes(clean)
        assert clean.client().dbsize() > 0 and total > 0

        proc = _cli(env(killed, tmp_path / "registry-killed.db"), "materialize", "--end", end)
        deadline = time.monotonic() + 120
        while _writes(killed) < total // 2:
            assert proc.poll() is None, "the run ended before it could be killed half-way"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        proc.kill()  # SIGKILL: no cleanup, no registry update for the view in progress
        proc.wait(10)
        half = _writes(killed)
        assert half < total, "killed too late to be half-way"
        assert redis_digest(killed.client()) != digest, "the killed run had already written everything"

        _run(env(killed, tmp_path / "registry-killed.db"), "materialize", "--end", end)
        assert redis_digest(killed.client()) == digest
        print(f"\nmaterialize: killed after {half} of {total} HSETs; re-run digest equals the clean run's")
    finally:
        clean.kill()
        killed.kill()


def test_a_redis_that_lost_its_data_is_refilled_by_the_next_run(feature_env: FeatureEnv, tmp_path: Path) -> None:
    # Restarted without persistence, or failed over: the registry still records the runs, so a plain
    # incremental run would write only rows newer than its last end, and most users would stay missing.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "OTEL_"))}
    redis_proc = RedisProcess(port=free_port(), workdir=tmp_path / "redis").start()
    try:
        env = base | {
            "SKEWLESS_DATA_DIR": str(feature_env.data_dir),
            "OTEL_SDK_DISABLED": "true",
            "SKEWLESS_REDIS_CONNECTION": redis_proc.connection,
            "SKEWLESS_FEAST_REGISTRY": str(tmp_path / "registry.db"),
        }

        def materialize(minutes: int) -> str:
            proc = _cli(env, "materialize", "--end", (first_end + pd.Timedelta(minutes=minutes)).isoformat())
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out.decode(errors="replace")
            return out.decode(errors="replace")

        _run(env, "apply")
        first_end = pd.Timestamp.now(tz="UTC")
        assert "refilling" not in materialize(0)  # a first run: nothing recorded, nothing to refill
        client = redis_proc.client()
        digest = redis_digest(client)
        assert client.dbsize() > 1
        assert client.exists(mark_key("skewless")) and not client.exists("skewless:materializing:skewless")
        client.flushall()
        assert "refilling" in materialize(1)
        assert redis_digest(client) == digest
        assert "refilling" not in materialize(2)  # intact, and marked: resumes
        assert redis_digest(client) == digest
    finally:
        redis_proc.kill()
