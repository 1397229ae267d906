"""`redis.sh forget`, which `make data` runs: a running private online store loses the old dataset's values.

Materialization writes a row only when it is newer than the stored one, from where the registry
says the last run ended, so a regenerated dataset (another seed, or more users, on the same day)
would otherwise never reach Redis while training reads it: served and offline features would differ.
(The registry and snapshot halves of `forget` need no Redis: tests/unit/test_local_redis_helper.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.unit.test_local_redis_helper import helper

pytestmark = pytest.mark.integration


def test_forget_empties_the_running_private_redis(tmp_path: Path) -> None:
    started = helper(tmp_path, {}, "up")
    assert started.returncode == 0, started.stderr
    port = int((tmp_path / ".state" / "redis" / "port").read_text())
    try:
        client = redis.Redis(port=port, socket_timeout=2)
        client.hset(b"old-dataset-entity", b"field", b"value")
        forgot = helper(tmp_path, {}, "forget")
        assert forgot.returncode == 0, forgot.stderr
        assert "emptied the private Redis" in forgot.stdout
        assert client.dbsize() == 0
        again = helper(tmp_path, {}, "up")
        assert again.stdout.startswith("private Redis already running")  # the same instance, kept
    finally:
        helper(tmp_path, {}, "down")
