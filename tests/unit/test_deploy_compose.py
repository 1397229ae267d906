"""docker-compose.yml: valid against the Compose spec, chained correctly, no committed secrets."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_deploy_support import JOB_SERVICES, ROOT, compose, env_example, venv_bin

pytestmark = pytest.mark.unit


def test_compose_file_matches_the_compose_spec() -> None:
    out = subprocess.run(
        [venv_bin("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("Debian's docker-compose (1.29) is not installed; `apt-get install docker-compose` to run this")
    env_file = tmp_path / ".env"
    env_file.write_text((ROOT / ".env.example").read_text())
    out = subprocess.run(
        [
            exe,
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(env_file),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, svc in compose()["services"].items():
        if name in JOB_SERVICES:
            assert svc.get("restart") == "no", f"{name} is a one-shot job"
            continue
        assert "healthcheck" in svc, f"{name} has no healthcheck"
        assert svc["healthcheck"]["test"], name


def test_pipeline_jobs_run_in_order_before_the_api() -> None:
    services = compose()["services"]
    chain = ["datagen", "validate", "feast-apply", "materialize", "train", "api"]
    for before, after in itertools.pairwise(chain):
        dep = services[after]["depends_on"][before]
        assert dep["condition"] == "service_completed_successfully", f"{after} must wait for {before} to succeed"
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_api_healthcheck_asks_ready_and_api_key_is_on() -> None:
    api = compose()["services"]["api"]
    assert "/ready" in " ".join(api["healthcheck"]["test"])
    assert api["environment"]["SKEWLESS_API_KEY"]


def test_no_secret_is_committed_in_compose() -> None:
    """Every password-like value comes from the environment, and compose refuses an empty one."""
    raw = (ROOT / "docker-compose.yml").read_text()
    for key, value in re.findall(r"^\s*([A-Z_]*(?:PASSWORD|API_KEY|SECRET|TOKEN)[A-Z_]*):\s*(.+)$", raw, re.M):
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value.strip()), f"{key} must be ${{VAR:?...}}, got {value}"
    # Database URLs embed their password only through a required variable.
    for userinfo in re.findall(r"postgresql\+psycopg://(.*?)@", raw):
        assert re.fullmatch(r"\w+:\$\{[A-Z_]+:\?[^}]*\}", userinfo), userinfo


def test_env_example_provides_every_required_variable_with_a_placeholder() -> None:
    raw = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", raw))
    example = env_example()
    assert required <= example.keys(), f"missing from .env.example: {sorted(required - example.keys())}"
    for name in required:
        assert example[name] == "change-me", f"{name} in .env.example must be a placeholder"


def test_redis_acl_users_are_least_privilege() -> None:
    rules = {
        line.split()[1]: line.split()
        for line in (ROOT / "infra/redis/users.acl.template").read_text().splitlines()
        if line.startswith("user ")
    }
    assert rules["default"][2] == "off"
    serving = rules["skewless-serving"]
    assert {"+@read", "-@write", "-@admin", "-@dangerous", "~*"} <= set(serving)
    materialize = rules["skewless-materialize"]
    assert {"+@write", "-@admin", "-@dangerous", "-flushall", "-flushdb", "-config"} <= set(materialize)
    # The connection strings compose hands out name those users.
    services = compose()["services"]
    assert "username=skewless-serving" in services["api"]["environment"]["SKEWLESS_REDIS_CONNECTION"]
    for job in ("feast-apply", "materialize"):
        assert "username=skewless-materialize" in services[job]["environment"]["SKEWLESS_REDIS_CONNECTION"]
    conf = (ROOT / "infra/redis/redis.conf").read_text()
    assert re.search(r"^appendonly yes$", conf, re.M), "persistence must be on"


def test_postgres_init_creates_mlflow_and_feast_databases() -> None:
    script = (ROOT / "infra/postgres/init-databases.sh").read_text()
    assert "create mlflow " in script and "create feast " in script
    pg = compose()["services"]["postgres"]
    assert any("docker-entrypoint-initdb.d" in v for v in pg["volumes"])
    registry = compose()["services"]["api"]["environment"]["SKEWLESS_FEAST_REGISTRY"]
    assert registry.startswith("postgresql+psycopg://feast:") and registry.endswith("@postgres:5432/feast")


def test_readme_ui_addresses_are_published_by_compose() -> None:
    deploy = (ROOT / "README.md").read_text().split("## Deploy", 1)[1]
    documented = {int(p) for p in re.findall(r"http://localhost:(\d+)", deploy)}
    published = {
        int(p.rsplit(":", 2)[-2] if p.count(":") == 2 else p.split(":")[0]): name
        for name, svc in compose()["services"].items()
        for p in svc.get("ports", [])
    }
    assert {8000, 5000, 16686, 3000, 9090} <= documented
    assert documented <= published.keys(), (
        f"README names ports compose does not publish: {documented - published.keys()}"
    )


def test_redis_entrypoint_finds_its_files_and_writes_only_to_tmpfs() -> None:
    redis = compose()["services"]["redis"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in redis["volumes"]}
    script = (ROOT / "infra/redis/entrypoint.sh").read_text()
    assert redis["entrypoint"][-1] in mounted
    for path in set(re.findall(r"/etc/redis/[\w.-]+", script)):
        assert path in mounted, f"entrypoint.sh uses {path}, which compose does not mount"
        assert (ROOT / mounted[path]).is_file(), mounted[path]
    out = re.search(r"^out=(\S+)$", script, re.M)
    assert out and any(out[1].startswith(t + "/") for t in redis["tmpfs"]), "the rendered ACL belongs in tmpfs"
    assert '--aclfile "$out"' in script
