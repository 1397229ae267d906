"""The compose stack's Redis ACL users, proven on a real redis-server.

The ACL file is rendered by infra/redis/render-acl.sh (what the Redis container's entrypoint
runs) from infra/redis/users.acl.template. Then the real pipeline materializes as
`skewless-materialize`, the real API serves as `skewless-serving`, and every command the users
must not have is refused with NOPERM.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry

from feature_repo.settings import FeastSettings, get_feast_settings
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import FeatureEnv, build_feature_env
from tests.integration.conftest import MODEL_NAME, Registry, wait_for
from tests.support import RedisProcess, feast_keys, free_port
from tests.unit.test_deploy_support import compose

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {
    "REDIS_SERVING_PASSWORD": "serving-Secret-1",
    "REDIS_MATERIALIZE_PASSWORD": "materialize-Secret-2",
    "REDIS_ADMIN_PASSWORD": "admin-Secret-3",
}
SERVING = ("skewless-serving", PASSWORDS["REDIS_SERVING_PASSWORD"])
MATERIALIZE = ("skewless-materialize", PASSWORDS["REDIS_MATERIALIZE_PASSWORD"])
ADMIN = ("skewless-admin", PASSWORDS["REDIS_ADMIN_PASSWORD"])
# Commands neither service user may run: wiping, reconfiguring, user admin, full keyspace dumps.
ADMIN_COMMANDS = (
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "GET", "maxmemory"),
    ("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"),
    ("KEYS", "*"),
    ("ACL", "LIST"),
    ("BGSAVE",),
    ("SWAPDB", "0", "1"),
    ("SHUTDOWN", "NOSAVE"),
)


def render_acl(out: Path) -> str:
    """Run the container's renderer with the passwords in its environment; return the file."""
    subprocess.run(
        ["sh", str(ROOT / "infra/redis/render-acl.sh"), str(ROOT / "infra/redis/users.acl.template"), str(out)],
        env={"PATH": "/usr/bin:/bin", **PASSWORDS},
        check=True,
        timeout=10,
    )
    return out.read_text()


@dataclass
class AclRedis(RedisProcess):
    """A redis-server whose default user is off: start-up pings as the admin user, and the
    connection string (what build_feature_env hands Feast) names the user in `connect_as`."""

    connect_as: str = MATERIALIZE[0]

    def client(self) -> redis.Redis:
        return self.as_user(*ADMIN)

    def as_user(self, user: str | None = None, password: str | None = None) -> redis.Redis:
        # No retries: redis-py retries authentication errors with backoff (6 s per refusal).
        return redis.Redis(
            port=self.port, username=user, password=password, socket_timeout=2, retry=Retry(NoBackoff(), 0)
        )

    @property
    def connection(self) -> str:
        return f"127.0.0.1:{self.port},username={self.connect_as}"


@dataclass
class AclStack:
    redis: AclRedis
    env: FeatureEnv


@pytest.fixture(scope="module")
def acl_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclStack]:
    """Render the ACL, start redis-server with it, and run apply + materialize as skewless-materialize."""
    tmp = tmp_path_factory.mktemp("acl")
    acl = tmp / "users.acl"
    text = render_acl(acl)
    assert not any(p in text for p in PASSWORDS.values()), "the rendered file must hold hashes only"
    server = AclRedis(port=free_port(), workdir=tmp / "redis", extra_args=("--aclfile", str(acl)))
    server.start()
    # build_feature_env exports its settings process-wide: put the session's environment back
    # at once, so fixtures built later (the session's feature repo) never see this password.
    saved = dict(os.environ)
    try:
        os.environ["SKEWLESS_REDIS_PASSWORD"] = MATERIALIZE[1]
        env = build_feature_env(tmp / "feast", server, users=200)
    except BaseException:
        server.kill()
        raise
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_feast_settings.cache_clear()
    yield AclStack(server, env)
    server.kill()


def feature_keys(stack: AclStack) -> list[bytes]:
    keys = feast_keys(stack.redis.client())
    assert keys, "materialization as skewless-materialize wrote nothing"
    return keys


def test_default_user_is_off_and_passwords_are_checked(acl_stack: AclStack) -> None:
    anonymous = acl_stack.redis.as_user()
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis.AuthenticationError):
        acl_stack.redis.as_user(SERVING[0], MATERIALIZE[1]).ping()


def test_serving_user_reads_feature_hashes_and_nothing_else(acl_stack: AclStack) -> None:
    keys = feature_keys(acl_stack)
    admin = acl_stack.redis.client()
    serving = acl_stack.redis.as_user(*SERVING)
    assert serving.ping()
    key = keys[0]
    stored = admin.hgetall(key)
    assert serving.hgetall(key) == stored and stored
    fields = sorted(stored)
    assert serving.hmget(key, fields) == [stored[f] for f in fields]
    _, found = serving.scan(0, count=1000)  # the direct reader's layout check scans
    assert found
    for command in (("HSET", key, "x", "1"), ("DEL", key), ("EXPIRE", key, "1"), ("SET", "k", "v"), *ADMIN_COMMANDS):
        with pytest.raises(redis.exceptions.NoPermissionError):
            serving.execute_command(*command)
    assert admin.hgetall(key) == stored, "a refused command changed the data"
    assert len(feast_keys(admin)) == len(keys)


def test_materialize_user_writes_but_cannot_administer(acl_stack: AclStack) -> None:
    keys = feature_keys(acl_stack)
    materialize = acl_stack.redis.as_user(*MATERIALIZE)
    scratch = b"skewless-acl-test"
    materialize.hset(scratch, mapping={b"f": b"1"})
    assert materialize.expire(scratch, 60) and materialize.hgetall(scratch) == {b"f": b"1"}
    assert materialize.delete(scratch) == 1
    for command in ADMIN_COMMANDS:
        with pytest.raises(redis.exceptions.NoPermissionError):
            materialize.execute_command(*command)
    assert len(feast_keys(acl_stack.redis.client())) == len(keys), "a refused command changed the data"


def test_the_api_serves_as_the_read_only_user(acl_stack: AclStack, registry: Registry) -> None:
    """create_app with the compose API's Redis user: /ready, and predictions through the real read path."""
    saved = dict(os.environ)
    try:
        feast = FeastSettings(
            repo_path=acl_stack.env.settings.repo_path,
            data_dir=acl_stack.env.data_dir,
            feast_registry=acl_stack.env.settings.feast_registry,
            redis_connection=f"127.0.0.1:{acl_stack.redis.port},username={SERVING[0]}",
            redis_password=SecretStr(SERVING[1]),
        )
        settings = ServingSettings(mlflow_tracking_uri=registry.tracking_uri, model_name=MODEL_NAME)
        with TestClient(create_app(settings, feast), raise_server_exceptions=False) as client:
            ready = client.get("/ready")
            assert ready.status_code == 200, ready.text
            ids = [f"u{i:07d}" for i in range(40)]
            r = client.post("/v1/predict", json={"entity_ids": ids})
            assert r.status_code == 200, r.text
            statuses = [p["status"] for p in r.json()["predictions"]]
            assert "ok" in statuses and "degraded" not in statuses, statuses
            # The direct reader's start-up check (SCAN + HMGET) passed under the read-only user too.
            state = client.app.state.skewless  # type: ignore[attr-defined]
            plan = state.holder.current.plan
            assert wait_for(lambda: state.online.path(plan) == "direct", timeout=30), state.online.path(plan)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_feast_settings.cache_clear()


def test_the_compose_healthcheck_logs_in_as_the_serving_user(acl_stack: AclStack) -> None:
    """The redis service's healthcheck command, run by a shell as compose runs it (port adapted)."""
    kind, command = compose()["services"]["redis"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    command = command.replace("redis-cli", f"redis-cli -p {acl_stack.redis.port}")
    env = {"PATH": "/usr/bin:/bin"}
    ok = subprocess.run(["sh", "-c", command], env={**env, **PASSWORDS}, capture_output=True, timeout=10)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = {**PASSWORDS, "REDIS_SERVING_PASSWORD": "wrong"}
    assert subprocess.run(["sh", "-c", command], env={**env, **wrong}, capture_output=True, timeout=10).returncode
