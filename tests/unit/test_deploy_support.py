"""Helpers shared by the test_deploy_* modules: load and interpolate the deployment files.

Nothing here starts a service; everything is parsed from the files in the repo.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
OVERLAYS = ("dev", "prod")
API_PORT = 8000
IMAGE_NAME = "skewless"
# Compose services that run the skewless image as the API or a pipeline job (mlflow reuses the
# image as a server and reads no skewless settings).
APP_SERVICES = ("api", "datagen", "validate", "feast-apply", "materialize", "train")
JOB_SERVICES = ("datagen", "validate", "feast-apply", "materialize", "train")

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def env_example() -> dict[str, str]:
    """Assignments in .env.example (comments and blanks skipped)."""
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR:?error} substitution ($$ is a literal $)."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        value = env.get(name)
        if op in (":?", "?") and not value:
            raise KeyError(f"required variable {name} is unset: {arg}")
        if op in (":-", "-") and not value:
            return arg
        return value or ""

    return _VAR.sub(sub, text.replace("$$", "\x00")).replace("\x00", "$")


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml with .env.example's values interpolated and YAML merge keys applied."""
    return yaml.safe_load(interpolate((ROOT / "docker-compose.yml").read_text(), env_example()))


def service_env(name: str) -> dict[str, str]:
    """The environment compose sets for one service (mapping or list form)."""
    env = compose()["services"][name].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


@cache
def dockerfile_stages() -> list[list[str]]:
    """Dockerfile instructions (continuations joined, comments dropped), split per FROM stage."""
    stages: list[list[str]] = [[]]
    buf = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        buf += line.rstrip("\\").strip() + " "
        if line.endswith("\\"):
            continue
        instr = buf.strip()
        buf = ""
        if instr.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(instr)
    return stages[1:]


def dockerfile_env() -> dict[str, str]:
    """ENV values of the final stage (KEY=VALUE form)."""
    env = {}
    for instr in dockerfile_stages()[-1]:
        if instr.upper().startswith("ENV "):
            for k, v in re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", instr[4:]):
                env[k] = v
    return env


def k8s_docs(folder: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes document in a kustomize folder, except kustomization.yaml itself."""
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def kustomize_cmd() -> list[str] | None:
    """A kustomize implementation on PATH (standalone, or kubectl's built-in), if any."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@cache
def kustomize_build(overlay: str) -> list[dict[str, Any]] | None:
    """The rendered overlay, or None when no kustomize implementation is installed."""
    cmd = kustomize_cmd()
    if cmd is None:
        return None
    out = subprocess.run(
        [*cmd, str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=True, timeout=60
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Pod specs inside a Deployment, Job or CronJob."""
    kind = doc.get("kind")
    if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return [doc["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Init and regular containers of a pod spec."""
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def venv_bin(name: str) -> str:
    """A console script installed in the running interpreter's environment."""
    path = Path(os.path.dirname(sys.executable)) / name
    assert path.exists(), f"{name} is missing from the venv: run `make setup` (it is in the dev group of uv.lock)"
    return str(path)


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET:-d}-${EMPTY:-e}-$$HOME", env) == "x-d-e-$HOME"
    with pytest.raises(KeyError, match="NOPE"):
        interpolate("${NOPE:?set it}", env)
