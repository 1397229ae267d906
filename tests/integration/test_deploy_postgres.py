"""The compose stack's Postgres, proven on a real PostgreSQL server started for this module.

infra/postgres/init-databases.sh (what the postgres container runs on an empty volume) creates
the two roles and databases. Then `feast apply` writes the Feast SQL registry as compose's
`feast-apply` job does, and the `mlflow server` command of compose's `mlflow` service serves
a run and its artifacts from the `mlflow` database.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from mlflow import MlflowClient

from feature_repo.datagen.generate import generate
from feature_repo.settings import FeastSettings, get_feast_settings
from feature_repo.store import open_store
from tests.support import RedisProcess, free_port
from tests.unit.test_deploy_support import compose

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SUPERUSER_PASSWORD = "postgres-Secret-0"
PASSWORDS = {"MLFLOW_DB_PASSWORD": "mlflow-Secret-1", "FEAST_DB_PASSWORD": "feast-Secret-2"}


@dataclass
class Postgres:
    port: int

    def url(self, role: str, password: str, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{role}:{password}@127.0.0.1:{self.port}/{database}"


def pg_binaries() -> tuple[str, str]:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not on PATH; `apt-get install postgresql`")
    return initdb, pg_ctl


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A private PostgreSQL on a free port, initialised by the compose stack's init script."""
    initdb, pg_ctl = pg_binaries()
    # PostgreSQL refuses to run as root: as root, run it as the `postgres` system user, in a
    # folder that user can reach (pytest's tmp folders are private to root).
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="skewless-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    pwfile = folder / "pw"
    pwfile.write_text(SUPERUSER_PASSWORD)
    if as_user:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    data, port = folder / "data", free_port()

    def pg(*argv: str) -> None:
        subprocess.run([*as_user, *argv], capture_output=True, text=True, timeout=120, check=True)

    pg(initdb, "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8")
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder}"
    pg(pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-o", options, "-w", "start")
    try:
        env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "POSTGRES_USER": "postgres", "PGHOST": "127.0.0.1"}
        env |= {"PGPORT": str(port), "PGPASSWORD": SUPERUSER_PASSWORD, **PASSWORDS}
        init = subprocess.run(
            ["bash", str(ROOT / "infra/postgres/init-databases.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert init.returncode == 0, init.stdout + init.stderr
        yield Postgres(port)
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_each_service_owns_its_database_and_no_other(postgres: Postgres) -> None:
    for role, password in (("mlflow", PASSWORDS["MLFLOW_DB_PASSWORD"]), ("feast", PASSWORDS["FEAST_DB_PASSWORD"])):
        other = "feast" if role == "mlflow" else "mlflow"
        with psycopg.connect(postgres.url(role, password, role, "postgresql"), connect_timeout=5) as conn:
            conn.execute("CREATE TABLE probe (x int)")  # the owner can create its schema
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(postgres.url(role, password, other, "postgresql"), connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres.url("feast", "wrong", "feast", "postgresql"), connect_timeout=5)


def test_feast_apply_writes_the_sql_registry(postgres: Postgres, tmp_path: Path) -> None:
    """The `feast-apply` job's command with compose's registry URL, against the real database."""
    redis = RedisProcess(port=free_port(), workdir=tmp_path / "redis").start()
    try:
        end = pd.Timestamp.now(tz="UTC").normalize()
        generate(tmp_path / "data", users=50, days=45, seed=3, end=end, progress=False)
        registry = postgres.url("feast", PASSWORDS["FEAST_DB_PASSWORD"], "feast")
        settings = {
            "SKEWLESS_FEAST_REGISTRY": registry,
            "SKEWLESS_DATA_DIR": str(tmp_path / "data"),
            "SKEWLESS_REDIS_CONNECTION": redis.connection,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKEWLESS_")} | settings
        argv = compose()["services"]["feast-apply"]["command"]
        assert argv[:2] == ["python", "-m"]
        out = subprocess.run(
            [sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stdout + out.stderr
        saved = dict(os.environ)  # open_store exports the Feast variables process-wide
        try:
            store = open_store(FeastSettings(feast_registry=registry, data_dir=tmp_path / "data"))
            services = {s.name for s in store.list_feature_services()}
        finally:
            os.environ.clear()
            os.environ.update(saved)
            get_feast_settings.cache_clear()
        assert "churn_v1" in services
    finally:
        redis.kill()


def test_the_compose_mlflow_server_runs_on_postgres(postgres: Postgres, tmp_path: Path) -> None:
    """compose's `mlflow server` command (addresses adapted): a run and its artifact round-trip."""
    argv = list(compose()["services"]["mlflow"]["command"])
    port = free_port()

    def replace(flag: str, value: str) -> None:
        argv[argv.index(flag) + 1] = value

    backend = argv[argv.index("--backend-store-uri") + 1]
    assert backend.startswith("postgresql+psycopg://mlflow:") and backend.endswith("@postgres:5432/mlflow")
    replace("--backend-store-uri", postgres.url("mlflow", PASSWORDS["MLFLOW_DB_PASSWORD"], "mlflow"))
    replace("--artifacts-destination", str(tmp_path / "mlartifacts"))
    replace("--host", "127.0.0.1")
    replace("--port", str(port))
    replace("--allowed-hosts", f"127.0.0.1:{port},localhost:{port}")
    exe = str(Path(sys.executable).parent / argv[0])
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    log = (tmp_path / "mlflow.log").open("w")
    # Its own process group: `mlflow server` starts worker processes, stopped together below.
    server = subprocess.Popen(
        [exe, *argv[1:]], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"mlflow server exited: {(tmp_path / 'mlflow.log').read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # our own server
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health in 120 s"
            time.sleep(0.5)
        client = MlflowClient(tracking_uri=url)
        experiment = client.create_experiment("compose-check")
        run = client.create_run(experiment)
        card = tmp_path / "card.md"
        card.write_text("served through the tracking server")
        client.log_artifact(run.info.run_id, str(card))
        client.set_terminated(run.info.run_id)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), "the server proxies artifacts"
        got = Path(client.download_artifacts(run.info.run_id, "card.md", str(tmp_path / "back")))
        assert got.read_text() == "served through the tracking server"
        assert list((tmp_path / "mlartifacts").rglob("card.md")), "stored under --artifacts-destination"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        log.close()
