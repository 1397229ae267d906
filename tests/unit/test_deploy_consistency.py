"""Ports, image names, commands and probe paths agree across Dockerfile, compose, k8s and the app."""

from __future__ import annotations

import importlib
import re
import tomllib
from functools import cache

import pytest
import yaml

from tests.unit.test_deploy_support import (
    API_PORT,
    APP_SERVICES,
    IMAGE_NAME,
    K8S,
    ROOT,
    compose,
    containers,
    dockerfile_stages,
    k8s_docs,
    pod_specs,
)

pytestmark = pytest.mark.unit

BUILD_TOOLS = ("gcc", "g++", "build-essential", "make ", "clang", "cmake", "python3-dev", "libc6-dev")


@cache
def app_paths() -> set[str]:
    """Paths the real app serves: built by create_app() (the lifespan, which needs services, never runs)."""
    from serving.app import create_app

    app = create_app()
    return set(app.openapi()["paths"]) | {app.docs_url or "", app.openapi_url or ""}


def final_stage() -> list[str]:
    return dockerfile_stages()[-1]


def test_dockerfile_is_multi_stage_slim_and_locked() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "builder + runtime"
    builder = " ".join(stages[0])
    assert "uv sync --frozen --no-dev" in builder
    assert "COPY pyproject.toml uv.lock" in builder
    assert all("slim" in s[0] or "PYTHON_IMAGE" in s[0] for s in stages)
    assert "slim" in (ROOT / "Dockerfile").read_text().split("ARG PYTHON_IMAGE=", 1)[1].split()[0]


def test_final_stage_is_non_root_with_a_healthcheck_and_no_build_tools() -> None:
    stage = final_stage()
    users = [i.split()[1] for i in stage if i.upper().startswith("USER ")]
    assert users and re.fullmatch(r"\d+(:\d+)?", users[-1]), f"USER must be numeric, got {users}"
    assert users[-1].split(":")[0] != "0"
    assert any(i.upper().startswith("HEALTHCHECK ") for i in stage)
    runs = " ".join(i for i in stage if i.upper().startswith("RUN ")).lower()
    for tool in BUILD_TOOLS:
        assert tool not in runs, f"{tool.strip()} in the final stage"
    assert not any(re.match(r"COPY\s+\.\s", i) for i in stage), "copy only what runs, not the whole context"


def test_healthcheck_and_cmd_agree_with_the_app() -> None:
    stage = final_stage()
    health = next(i for i in stage if i.upper().startswith("HEALTHCHECK "))
    assert "urllib" in health and "curl" not in health
    m = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", health)
    assert m and int(m[1]) == API_PORT and m[2] in app_paths()
    assert f"EXPOSE {API_PORT}" in stage
    cmd = next(i for i in stage if i.upper().startswith("CMD "))
    assert f'"--port", "{API_PORT}"' in cmd and '"-m", "serving.server"' in cmd


def test_app_serves_the_probe_and_metrics_paths() -> None:
    assert {"/health", "/ready", "/metrics", "/docs"} <= app_paths()


def test_compose_ports_probes_and_scrape_target_agree() -> None:
    services = compose()["services"]
    api = services["api"]
    assert any(p.endswith(f":{API_PORT}") for p in api["ports"])
    probe = " ".join(api["healthcheck"]["test"])
    m = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", probe)
    assert m and int(m[1]) == API_PORT and m[2] == "/ready" and m[2] in app_paths()
    prom = (ROOT / "infra/prometheus/prometheus.yml").read_text()
    assert f'"api:{API_PORT}"' in prom and "metrics_path: /metrics" in prom


def test_one_image_for_the_api_and_the_jobs() -> None:
    services = compose()["services"]
    images = {services[s]["image"] for s in (*APP_SERVICES, "mlflow")}
    assert len(images) == 1
    assert images.pop().split("/")[-1].split(":")[0] == IMAGE_NAME
    for _, doc in k8s_docs(K8S / "base"):
        for spec in pod_specs(doc):
            for c in containers(spec):
                assert c["image"] == IMAGE_NAME, f"{doc['metadata']['name']}/{c['name']}: kustomize images sets the tag"


def test_commands_point_at_real_cli_commands() -> None:
    """Every `python -m module command` in compose and k8s names an existing Typer command."""
    argvs = [s.get("command") for s in compose()["services"].values() if isinstance(s.get("command"), list)]
    for _, doc in k8s_docs(K8S / "base"):
        argvs += [c.get("args") for spec in pod_specs(doc) for c in containers(spec)]
    checked = 0
    for argv in argvs:
        if not argv or argv[:2] != ["python", "-m"]:
            continue
        module = argv[2]
        if module.endswith(".generate"):
            assert importlib.util.find_spec(module), module
            checked += 1
            continue
        cli = importlib.import_module(module if module != "training" else "training.cli")
        names = {c.name or c.callback.__name__ for c in cli.app.registered_commands}
        assert argv[3] in names, f"{module} has no command {argv[3]!r} (has {names})"
        checked += 1
    assert checked >= 8


def test_k8s_ports_and_probes_agree_with_the_app() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_docs(K8S / "base")}
    api = docs[("Deployment", "skewless-api")]["spec"]["template"]["spec"]["containers"][0]
    port = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert port["http"] == API_PORT and str(API_PORT) in api["args"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = api[probe]["httpGet"]
        assert get["port"] == "http" and get["path"] in app_paths(), probe
    svc = docs[("Service", "skewless-api")]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_probes_and_scrapes_need_no_api_key() -> None:
    """With auth on, orchestrators and Prometheus still get in: every path they call is exempt."""
    from serving.limits import HEALTH_PATHS

    services = compose()["services"]
    probe = re.search(r"127\.0\.0\.1:\d+(/\w+)", " ".join(services["api"]["healthcheck"]["test"]))
    health = re.search(r"127\.0\.0\.1:\d+(/\w+)", next(i for i in final_stage() if i.upper().startswith("HEALTHCHECK")))
    called = {probe[1] if probe else "", health[1] if health else ""}
    api = next(
        d for _, d in k8s_docs(K8S / "base") if d["kind"] == "Deployment" and d["metadata"]["name"] == "skewless-api"
    )["spec"]["template"]["spec"]["containers"][0]
    called |= {api[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    called |= {
        ep["path"] for _, d in k8s_docs(K8S / "base") if d["kind"] == "ServiceMonitor" for ep in d["spec"]["endpoints"]
    }
    prom = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    called |= {j["metrics_path"] for j in prom["scrape_configs"] if j["job_name"] == "skewless-api"}
    assert called <= HEALTH_PATHS, f"behind the API key: {sorted(called - HEALTH_PATHS)}"


def test_api_key_comes_from_a_secret() -> None:
    """Compose takes it from .env (required); k8s mounts it from skewless-secrets as a file."""
    api_env = (ROOT / "docker-compose.yml").read_text().split("\n  api:\n", 1)[1]
    assert re.search(r"SKEWLESS_API_KEY: \$\{SKEWLESS_API_KEY:\?", api_env)
    spec = next(
        d for _, d in k8s_docs(K8S / "base") if d["kind"] == "Deployment" and d["metadata"]["name"] == "skewless-api"
    )["spec"]["template"]["spec"]
    api = spec["containers"][0]
    env = {e["name"]: e for e in api["env"]}
    assert "SKEWLESS_API_KEY" not in env, "a file, not an env var: env vars leak into crash dumps and `ps e`"
    key_file = env["SKEWLESS_API_KEY_FILE"]["value"]
    mount = next(m for m in api["volumeMounts"] if key_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    items = {i["path"]: i["key"] for i in volume["secret"]["items"]}
    assert volume["secret"]["secretName"] == "skewless-secrets"
    assert items[key_file.removeprefix(mount["mountPath"] + "/")] == "api-key"


def test_image_copies_every_package_the_project_ships() -> None:
    """A package added to pyproject.toml but not copied would break the image at import time."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    copied = {m[1] for i in final_stage() if (m := re.match(r"COPY\s+(\w+)/\s+/app/\1/$", i))}
    assert copied == packages, f"Dockerfile copies {sorted(copied)}, the project ships {sorted(packages)}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not packages & set(ignored), "a shipped package is excluded from the build context"


def test_mlflow_server_port_agrees_with_its_clients() -> None:
    services = compose()["services"]
    cmd = services["mlflow"]["command"]
    port = int(cmd[cmd.index("--port") + 1])
    assert any(p.endswith(f":{port}") for p in services["mlflow"]["ports"])
    for name in ("api", "train"):
        assert services[name]["environment"]["MLFLOW_TRACKING_URI"] == f"http://mlflow:{port}", name
    assert f"http://127.0.0.1:{port}/health" in " ".join(services["mlflow"]["healthcheck"]["test"])
