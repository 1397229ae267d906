"""`make data` replaces the dataset: the private online store must not keep the old one's values.

Materialization writes a row only when it is newer than the stored one, from where the registry
says the last run ended, so a regenerated dataset (another seed, or more users, on the same day)
would otherwise never reach Redis while training reads it: served and offline features would differ.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from tests.unit.test_deploy_support import ROOT

pytestmark = pytest.mark.integration


def run(script: Path, command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKEWLESS_")}
    return subprocess.run(["bash", str(script), command], env=env, capture_output=True, text=True, timeout=60)


def test_forget_empties_the_running_private_redis(tmp_path: Path) -> None:
    script = tmp_path / "infra" / "local" / "redis.sh"
    script.parent.mkdir(parents=True)
    shutil.copy(ROOT / "infra" / "local" / "redis.sh", script)
    started = run(script, "up")
    assert started.returncode == 0, started.stderr
    port = int((tmp_path / ".state" / "redis" / "port").read_text())
    try:
        client = redis.Redis(port=port, socket_timeout=2)
        client.hset(b"old-dataset-entity", b"field", b"value")
        forgot = run(script, "forget")
        assert forgot.returncode == 0, forgot.stderr
        assert "emptied the private Redis" in forgot.stdout
        assert client.dbsize() == 0
        assert run(script, "up").stdout.startswith("private Redis already running")  # same instance, kept
    finally:
        run(script, "down")
