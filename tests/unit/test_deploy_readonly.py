"""A read-only root filesystem works: every place the image's processes write is a mount.

The image runs from /tmp (tmpfs in compose, an emptyDir in k8s) with HOME, TMPDIR and
MPLCONFIGDIR there too, so MLflow's model downloads (tempfile), matplotlib and DuckDB spills
land on it. Settings that name a place on disk are classified below; a new one fails
test_every_path_setting_is_classified until someone decides whether it is written.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from tests.unit.test_deploy_settings import SETTINGS, k8s_container_env
from tests.unit.test_deploy_support import (
    APP_SERVICES,
    K8S,
    compose,
    containers,
    dockerfile_env,
    dockerfile_stages,
    k8s_docs,
    pod_specs,
    service_env,
)

pytestmark = pytest.mark.unit

# Settings naming a file or folder the code only reads (code, secrets, inputs).
READ_ONLY_PATHS = {"repo_path", "redis_password_file", "api_key_file", "labels_file"}
# Settings naming a folder the code writes, and the compose services that write it.
WRITTEN_PATHS = {"data_dir": ("datagen", "validate")}
# Per-container scratch: unset, they default under $TMPDIR, which every container mounts writable.
SCRATCH_PATHS = {"compile_cache_dir"}
# URI settings: a sqlite:/// or file path would be written, so in the stack they must be servers.
SERVER_URIS = {"MLFLOW_TRACKING_URI": "http://", "SKEWLESS_FEAST_REGISTRY": "postgresql+psycopg://"}
# Services that use MLflow / the Feast registry (and so must get a server URI, not the file default).
USES = {
    "MLFLOW_TRACKING_URI": ("api", "train"),
    "SKEWLESS_FEAST_REGISTRY": ("api", "feast-apply", "materialize", "train"),
}


def path_fields(cls: type[BaseSettings]) -> set[str]:
    return {n for n, f in cls.model_fields.items() if "Path" in str(f.annotation)}


def under(path: str, mounts: set[str]) -> bool:
    return any(PurePosixPath(path).is_relative_to(m) for m in mounts)


def compose_writable(svc: dict[str, Any]) -> set[str]:
    """tmpfs mounts plus read-write volumes of a compose service."""
    tmpfs = svc.get("tmpfs", [])
    mounts = {tmpfs} if isinstance(tmpfs, str) else set(tmpfs)
    for v in svc.get("volumes", []):
        parts = v.split(":")
        if len(parts) >= 2 and not (len(parts) == 3 and "ro" in parts[2].split(",")):
            mounts.add(parts[1])
    return mounts


def workdir() -> str:
    return [i.split()[1] for i in dockerfile_stages()[-1] if i.upper().startswith("WORKDIR ")][-1]


def test_every_path_setting_is_classified() -> None:
    fields = set().union(*(path_fields(c) for c in SETTINGS))
    assert fields <= READ_ONLY_PATHS | WRITTEN_PATHS.keys() | SCRATCH_PATHS, (
        f"classify {sorted(fields - READ_ONLY_PATHS - WRITTEN_PATHS.keys() - SCRATCH_PATHS)} in this test, "
        "and mount a volume where it is written"
    )


def test_scratch_paths_stay_under_tmpdir_in_every_deployment() -> None:
    for cls in SETTINGS:
        for name in SCRATCH_PATHS & set(cls.model_fields):
            assert cls.model_fields[name].default is None, f"{name} must default under $TMPDIR"
            var = f"SKEWLESS_{name.upper()}"
            assert var not in dockerfile_env()
            assert all(var not in service_env(svc) for svc in compose()["services"]), var


def test_the_image_writes_only_under_tmp() -> None:
    env = dockerfile_env()
    for var in ("HOME", "TMPDIR", "MPLCONFIGDIR"):
        assert under(env[var], {"/tmp"}), var
    assert workdir() == "/tmp", "run from a writable folder: libraries write relative to the working directory"
    assert env.get("PYTHONSAFEPATH") == "1", "the working directory must not be on sys.path"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    runs = " ".join(i for i in dockerfile_stages()[-1] if i.upper().startswith("RUN "))
    assert "compileall" in runs, "bytecode is compiled at build time, never written at run time"
    cmd = next(i for i in dockerfile_stages()[-1] if i.upper().startswith("CMD "))
    assert '"-m", "serving.server"' in cmd and "--app-dir" not in cmd, "the code is found through PYTHONPATH only"
    assert env.get("PYTHONPATH") == "/app"


def test_compose_app_containers_are_read_only_with_writable_mounts() -> None:
    services = compose()["services"]
    image_env = dockerfile_env()
    for name in (*APP_SERVICES, "mlflow"):
        svc = services[name]
        writable = compose_writable(svc)
        assert svc.get("read_only") is True, name
        assert "/tmp" in writable, f"{name}: no tmpfs /tmp"
        env = {**image_env, **service_env(name)}
        for var in ("HOME", "TMPDIR", "MPLCONFIGDIR"):
            assert under(env[var], writable), f"{name}: {var}={env[var]} is not on a writable mount"
    for field, writers in WRITTEN_PATHS.items():
        var = f"SKEWLESS_{field.upper()}"
        for name in writers:
            assert under(image_env[var], compose_writable(services[name])), f"{name} writes {var}, mounted read-only"
    out = services["datagen"]["command"][services["datagen"]["command"].index("--out") + 1]
    assert under(out, compose_writable(services["datagen"]))
    mlflow = services["mlflow"]["command"]
    artifacts = mlflow[mlflow.index("--artifacts-destination") + 1]
    assert under(artifacts, compose_writable(services["mlflow"]))


def test_compose_services_use_servers_not_files_for_state() -> None:
    for var, users in USES.items():
        for name in users:
            value = service_env(name).get(var, "")
            assert value.startswith(SERVER_URIS[var]), f"{name}: {var} must be a server, got {value!r}"


def test_kubernetes_pods_write_only_to_volumes() -> None:
    for _, doc in k8s_docs(K8S / "base"):
        for spec in pod_specs(doc):
            for c in containers(spec):
                where = f"{doc['metadata']['name']}/{c['name']}"
                assert "workingDir" not in c or under(c["workingDir"], {"/tmp"}), where
                writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
                assert "/tmp" in writable, where
                if c["name"] == "validate":  # writes the validation marker next to the tables
                    assert "/data" in writable, where
    for where, env in k8s_container_env():
        assert env["MLFLOW_TRACKING_URI"].startswith("http"), where
