"""CI workflow, pre-commit and the DVC pipeline: valid, and calling the project's real commands."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.unit.test_deploy_support import ROOT, venv_bin

pytestmark = pytest.mark.unit

STAGES = ["generate", "validate", "apply", "materialize", "train"]


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z_-]+):", (ROOT / "Makefile").read_text(), re.M))


def workflow() -> dict:
    return yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())


def test_workflow_matches_the_github_schema() -> None:
    out = subprocess.run(
        [
            venv_bin("check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            str(ROOT / ".github/workflows/ci.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_workflow_runs_every_required_check() -> None:
    text = (ROOT / ".github/workflows/ci.yml").read_text()
    for needed in (
        "ruff check",
        "ruff format --check",
        "mypy",
        "make test",
        "feast plan",
        "pip-audit",
        "bandit",
        "docker/build-push-action",
        "aquasecurity/trivy-action",
    ):
        assert needed in text, needed
    jobs = workflow()["jobs"]
    assert jobs["feast-plan"]["if"] == "github.event_name == 'pull_request'"
    trivy = next(s for s in jobs["image"]["steps"] if "trivy" in s.get("uses", ""))
    assert trivy["with"]["severity"] == "CRITICAL" and trivy["with"]["exit-code"] == "1"


def test_pre_commit_runs_ruff_mypy_and_hygiene_hooks() -> None:
    cfg = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    ids = {h["id"] for r in cfg["repos"] for h in r["hooks"]}
    assert {"ruff", "ruff-format", "mypy", "bandit", "trailing-whitespace", "end-of-file-fixer", "check-yaml"} <= ids
    for repo in cfg["repos"]:
        if repo["repo"] != "local":
            assert re.fullmatch(r"v\d+\.\d+\.\d+", repo["rev"]), "pin hook revisions"


def test_dvc_stages_call_makefile_targets_with_declared_io() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == STAGES
    targets = make_targets()
    produced: set[str] = set()
    for name, stage in stages.items():
        cmd = stage["cmd"].split()
        assert cmd[0] == "make" and cmd[1] in targets, f"{name}: {stage['cmd']}"
        assert stage["deps"], name
        for dep in stage["deps"]:
            assert (ROOT / dep).exists() or dep in produced, f"{name}: {dep} neither exists nor is produced earlier"
        produced |= {next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])}


def test_dvc_repro_dry_plans_every_stage(tmp_path: Path) -> None:
    """`dvc repro --dry` in a scratch copy (no remote, no git): DVC parses the file and orders the stages."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    for stage in stages.values():
        for dep in stage["deps"]:
            p = tmp_path / dep
            p.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / dep).is_dir():
                p.mkdir(exist_ok=True)
                (p / "placeholder").write_text(dep)
            else:
                p.write_text(dep)
    dvc = venv_bin("dvc")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DVC_NO_ANALYTICS": "1"}
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True, env=env, timeout=120)
    out = subprocess.run([dvc, "repro", "--dry"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    planned = re.findall(r"Running stage '(\w+)'", out.stdout)
    assert set(planned) == set(STAGES)
    assert planned.index("generate") < planned.index("validate") < planned.index("materialize")
    assert planned.index("apply") < planned.index("materialize") and planned.index("apply") < planned.index("train")


def test_ci_runs_the_readme_test_command_and_checks_every_package() -> None:
    jobs = workflow()["jobs"]
    runs = [s["run"].strip() for s in jobs["test"]["steps"] if "run" in s]
    assert "make test" in runs, f"the test job must run exactly the README's command, got {runs}"
    assert "make test" in (ROOT / "README.md").read_text().split("\n\n", 2)[1]
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    bandit = next(s["run"] for s in jobs["lint"]["steps"] if "bandit" in s.get("run", ""))
    make_bandit = re.search(r"/bin/(bandit .*)$", (ROOT / "Makefile").read_text(), re.M)
    assert make_bandit and bandit.endswith(make_bandit[1]), "CI and `make lint` run bandit alike"
    smoke = next(s["run"] for s in jobs["image"]["steps"] if "Smoke" in s.get("name", ""))
    for package in packages["packages"]:
        assert re.search(rf"-r [\w ]*\b{package}\b", bandit), f"bandit skips {package}"
        assert f"import {package}" in smoke or f" {package}." in smoke, f"the image smoke test skips {package}"
