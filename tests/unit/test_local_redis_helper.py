"""infra/local/redis.sh: what it writes to .state/env, which every `make` target loads over the environment."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_deploy_support import ROOT

pytestmark = pytest.mark.unit


def helper(tmp_path: Path, env: dict[str, str], command: str = "up") -> subprocess.CompletedProcess[str]:
    """``redis.sh <command>`` from a copy of the script in ``tmp_path``, which it takes for the repo root."""
    script = tmp_path / "infra" / "local" / "redis.sh"
    script.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "infra" / "local" / "redis.sh", script)
    base = {k: v for k, v in os.environ.items() if not k.startswith("SKEWLESS_")}
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(script), command],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )


def run_up(tmp_path: Path, env: dict[str, str]) -> tuple[str, dict[str, str]]:
    """``up`` that succeeds without starting anything; its output and the .state/env it wrote."""
    out = helper(tmp_path, env)
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / ".state" / "env").read_text().splitlines()
    written = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return out.stdout, written


def test_an_exported_redis_wins_over_a_private_one_started_earlier(tmp_path: Path) -> None:
    # A private instance ran here once (its port file stays after `make stop`).
    (tmp_path / ".state" / "redis").mkdir(parents=True)
    (tmp_path / ".state" / "redis" / "port").write_text("6399\n")
    out, written = run_up(tmp_path, {"SKEWLESS_REDIS_CONNECTION": "redis.internal:6380,ssl=true"})
    assert "using configured Redis at redis.internal:6380" in out
    assert written["SKEWLESS_REDIS_CONNECTION"] == "redis.internal:6380,ssl=true"
    assert written["SKEWLESS_FEAST_CONNECTION"].startswith("redis.internal:6380,ssl=true,socket_timeout=")


def test_an_exported_data_dir_and_registry_are_kept_absolute(tmp_path: Path) -> None:
    env = {"SKEWLESS_REDIS_CONNECTION": "redis.internal:6380", "SKEWLESS_DATA_DIR": "elsewhere/data"}
    _, written = run_up(tmp_path, {**env, "SKEWLESS_FEAST_REGISTRY": "elsewhere/registry.db"})
    assert written["SKEWLESS_DATA_DIR"] == str(tmp_path / "elsewhere" / "data")
    assert written["SKEWLESS_FEAST_REGISTRY"] == str(tmp_path / "elsewhere" / "registry.db")
    assert written["SKEWLESS_FEAST_REGISTRY_TYPE"] == "file"
    url = "postgresql+psycopg://feast@db:5432/feast"
    _, written = run_up(tmp_path / "sql", {**env, "SKEWLESS_FEAST_REGISTRY": url})
    assert written["SKEWLESS_FEAST_REGISTRY"] == url
    assert written["SKEWLESS_FEAST_REGISTRY_TYPE"] == "sql"


def test_by_default_the_repos_own_data_dir_and_file_registry(tmp_path: Path) -> None:
    _, written = run_up(tmp_path, {"SKEWLESS_REDIS_CONNECTION": "redis.internal:6380"})
    assert written["SKEWLESS_DATA_DIR"] == str(tmp_path / "data")
    assert written["SKEWLESS_FEAST_REGISTRY"] == str(tmp_path / "data" / "registry.db")
    assert written["SKEWLESS_FEAST_REGISTRY_TYPE"] == "file"


def test_a_private_address_sourced_into_the_shell_is_not_taken_for_the_users_choice(tmp_path: Path) -> None:
    # `set -a; . .state/env` exported the private instance's address, which has stopped since: up
    # must go for a private instance again, not "use the configured Redis" at a dead port. With no
    # redis-server on PATH (and no apt-get), going for one is the install error.
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("dirname", "mkdir", "cat", "id", "python3", "realpath"):
        found = shutil.which(tool)
        assert found is not None, tool
        (tools / tool).symlink_to(found)
    sourced = {"SKEWLESS_REDIS_CONNECTION": "127.0.0.1:6399", "SKEWLESS_STATE_PRIVATE_REDIS": "127.0.0.1:6399"}
    out = helper(tmp_path / "repo", {**sourced, "PATH": str(tools)})
    assert out.returncode == 1
    assert "redis-server is not installed" in out.stderr
    assert "using configured Redis" not in out.stdout


def test_forget_leaves_a_configured_redis_alone_and_says_so(tmp_path: Path) -> None:
    out = helper(tmp_path, {"SKEWLESS_REDIS_CONNECTION": "redis.internal:6380"}, "forget")
    assert out.returncode == 0, out.stderr
    assert "redis.internal:6380 still holds the previous dataset" in out.stderr


def test_forget_drops_the_default_registry_and_names_a_configured_one(tmp_path: Path) -> None:
    # The registry records how far materialization got: for a new dataset, that record is wrong.
    default = tmp_path / "data" / "registry.db"
    default.parent.mkdir(parents=True)
    default.write_bytes(b"registry")
    assert helper(tmp_path, {}, "forget").returncode == 0
    assert not default.exists()
    mine = tmp_path / "elsewhere" / "registry.db"
    mine.parent.mkdir()
    mine.write_bytes(b"registry")
    out = helper(tmp_path, {"SKEWLESS_FEAST_REGISTRY": str(mine)}, "forget")
    assert out.returncode == 0, out.stderr
    assert mine.exists()
    assert f"registry at {mine} still records how far the previous dataset was" in out.stderr


def test_forget_drops_a_stopped_private_instances_snapshot(tmp_path: Path) -> None:
    # Restarted, the instance would load the old dataset's values back from its snapshot.
    snapshot = tmp_path / ".state" / "redis" / "dump.rdb"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(b"REDIS0011")
    out = helper(tmp_path, {}, "forget")
    assert out.returncode == 0, out.stderr
    assert not snapshot.exists()
