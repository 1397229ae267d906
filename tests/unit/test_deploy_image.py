"""The image's builder stage can install the locked runtime dependencies without a compiler.

The builder is python:3.11-slim-bookworm (glibc 2.36, no gcc). A runtime dependency that has
no wheel for CPython 3.11 on manylinux x86_64 (glibc <= 2.36) would need a build toolchain
there and fail `uv sync --frozen --no-dev` at image build time; this finds it from uv.lock alone.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.tags import Tag
from packaging.utils import parse_wheel_filename

from tests.unit.test_deploy_support import ROOT

pytestmark = pytest.mark.unit

GLIBC = (2, 36)  # Debian bookworm, the base of python:3.11-slim-bookworm
PYTHON = (3, 11)
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.11",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def applies(dep: dict[str, Any]) -> bool:
    return "marker" not in dep or Marker(dep["marker"]).evaluate(TARGET)


def runtime_packages() -> list[dict[str, Any]]:
    """The project's runtime closure in uv.lock (no dev group), for Linux x86_64 and CPython 3.11."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {p["name"]: p for p in lock["package"]}
    root = next(p for p in lock["package"] if set(p["source"]) & {"editable", "virtual"})
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo = [(d["name"], tuple(d.get("extra", []))) for d in root["dependencies"] if applies(d)]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        deps = list(packages[name].get("dependencies", []))
        for extra in extras:
            deps += packages[name].get("optional-dependencies", {}).get(extra, [])
        todo += [(d["name"], tuple(d.get("extra", []))) for d in deps if applies(d)]
    return [packages[n] for n in sorted({n for n, _ in seen})]


def installable(tag: Tag) -> bool:
    """A wheel tag pip/uv would accept on CPython 3.11, manylinux x86_64 with glibc 2.36."""
    interp, abi, platform = tag.interpreter, tag.abi, tag.platform
    if interp in ("py3", "py2.py3") and abi == "none":
        python_ok = True
    elif interp.startswith("cp3") and interp[3:].isdigit():
        minor = int(interp[3:])
        python_ok = (abi in ("none", f"cp3{minor}") and minor == PYTHON[1]) or (abi == "abi3" and minor <= PYTHON[1])
    else:
        python_ok = False
    if platform == "any":
        return python_ok
    if not platform.endswith("_x86_64"):
        return False
    legacy = platform.removesuffix("_x86_64")
    if legacy in LEGACY_MANYLINUX:
        return python_ok and LEGACY_MANYLINUX[legacy] <= GLIBC
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", platform)
    return python_ok and m is not None and (int(m[1]), int(m[2])) <= GLIBC


def test_wheel_tag_rules() -> None:
    assert installable(Tag("cp311", "cp311", "manylinux_2_17_x86_64"))
    assert installable(Tag("cp39", "abi3", "manylinux2014_x86_64"))
    assert installable(Tag("py3", "none", "any"))
    assert not installable(Tag("cp312", "cp312", "manylinux_2_17_x86_64"))
    assert not installable(Tag("cp311", "cp311", "manylinux_2_39_x86_64")), "newer glibc than bookworm"
    assert not installable(Tag("cp311", "cp311", "musllinux_1_2_x86_64"))
    assert not installable(Tag("cp311", "cp311", "manylinux_2_17_aarch64"))


def test_every_runtime_dependency_has_a_wheel_for_the_image() -> None:
    packages = runtime_packages()
    names = {p["name"] for p in packages}
    assert {"feast", "lightgbm", "mlflow", "fastapi", "redis", "psycopg-binary"} <= names
    # (mypy does ship: Feast requires sqlalchemy[mypy].)
    assert not names & {"pytest", "ruff", "dvc", "check-jsonschema"}, "dev tools must stay out of the image"
    missing = [
        p["name"]
        for p in packages
        if not any(
            installable(t) for w in p.get("wheels", []) for t in parse_wheel_filename(w["url"].rsplit("/", 1)[1])[3]
        )
    ]
    assert not missing, f"no wheel for CPython 3.11 / manylinux x86_64 / glibc 2.36: {missing}"


def test_build_context_leaves_out_secrets_and_state() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".git", ".venv", ".state", "data", "mlruns", "mlartifacts"} <= ignored
    assert "!.env.example" in ignored and ".env.*" in ignored
