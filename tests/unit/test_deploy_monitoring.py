"""Dashboards and alerts reference only series the API exports; compose and k8s rules agree.

These compare against the exposition of the app's metrics registry (fast, no services);
tests/integration/test_deploy_dashboard.py compares against a live app's /metrics.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from serving.metrics import Metrics
from tests.unit.test_deploy_support import K8S, ROOT, compose

pytestmark = pytest.mark.unit

SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
# Series Prometheus adds to every target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "le",
}


@cache
def exported() -> set[str]:
    """Sample names the API's /metrics can expose: the exposition of the registry the app serves."""
    text = generate_latest(Metrics().registry).decode()
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        base = name.removesuffix("_total") if kind == "counter" else name
        names |= {base + s for s in SUFFIXES.get(kind, ("",))}
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (labels, functions, durations and keywords removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    idents = re.findall(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", e)
    return {name for name, call in idents if not call and name.lower() not in PROMQL_WORDS}


def dashboard() -> dict:
    return json.loads((ROOT / "infra/grafana/dashboards/skewless-api.json").read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    """Every PromQL expression of the Prometheus rules (compose and k8s share them) and Grafana's rules."""
    rules = yaml.safe_load((ROOT / "infra/prometheus/alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    grafana = yaml.safe_load((ROOT / "infra/grafana/provisioning/alerting/skewless-rules.yaml").read_text())
    exprs += [
        q["model"]["expr"] for g in grafana["groups"] for r in g["rules"] for q in r["data"] if "expr" in q["model"]
    ]
    return exprs


def test_metric_name_parser() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(a_bucket{route=~"/v1.*"}[5m]))) / ignoring(x) group_left b'
    assert metric_names(expr) == {"a_bucket", "b"}


def test_the_app_exports_the_series_the_dashboard_needs() -> None:
    assert {"skewless_http_request_duration_seconds_bucket", "skewless_model_version"} <= exported()


def test_dashboard_uses_only_exported_metrics() -> None:
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert used, "the dashboard has no queries"
    assert used <= exported(), f"not exported by the API: {sorted(used - exported())}"


def test_dashboard_covers_the_required_panels() -> None:
    exprs = " ".join(dashboard_exprs())
    for needed in (
        "_count[",
        "histogram_quantile(0.5",
        "histogram_quantile(0.99",
        'status=~"5..',
        "stale_features",
        "missing_features",
        "prediction_score_bucket",
        "model_version",
    ):
        assert needed in exprs, needed
    uids = {p["datasource"]["uid"] for p in dashboard()["panels"]}
    ds = yaml.safe_load((ROOT / "infra/grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert uids == {d["uid"] for d in ds["datasources"]}


def test_alert_rules_use_only_exported_metrics() -> None:
    for expr in alert_exprs():
        assert metric_names(expr) <= exported() | SYNTHETIC, expr
    grafana = yaml.safe_load((ROOT / "infra/grafana/provisioning/alerting/skewless-rules.yaml").read_text())
    titles = " ".join(r["title"] for g in grafana["groups"] for r in g["rules"]).lower()
    assert "error rate" in titles and "p99" in titles and "stale" in titles


def test_kubernetes_rules_equal_the_compose_rules() -> None:
    compose_rules = yaml.safe_load((ROOT / "infra/prometheus/alerts.yml").read_text())
    k8s_rule = yaml.safe_load((K8S / "base/prometheusrule.yaml").read_text())
    assert k8s_rule["spec"] == compose_rules


def test_monitoring_files_are_mounted_where_their_configs_expect_them() -> None:
    services = compose()["services"]
    prom_mounts = dict(
        v.rsplit(":", 2)[:2] if v.endswith(":ro") else v.split(":", 1) for v in services["prometheus"]["volumes"]
    )
    prom = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    for rule_file in prom["rule_files"]:
        assert rule_file in prom_mounts.values()
    graf_mounts = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    provider = yaml.safe_load((ROOT / "infra/grafana/provisioning/dashboards/skewless.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] in graf_mounts
    assert "/etc/grafana/provisioning" in graf_mounts


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool is not installed; `apt-get install prometheus` (Debian) provides it")
    return exe


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    """promtool checks the config and the rules, then runs the alert unit tests in alerts.test.yml."""
    exe = promtool()
    prom = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    shutil.copy(ROOT / "infra/prometheus/alerts.yml", tmp_path / "alerts.yml")
    prom["rule_files"] = [str(tmp_path / "alerts.yml")]  # the container path, relocated
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom))
    folder = ROOT / "infra/prometheus"
    for args in (
        ["check", "config", str(tmp_path / "prometheus.yml")],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ):
        out = subprocess.run([exe, *args], cwd=folder, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}{out.stderr}"


def test_every_alert_has_a_firing_unit_test() -> None:
    rules = yaml.safe_load((ROOT / "infra/prometheus/alerts.yml").read_text())
    tests = yaml.safe_load((ROOT / "infra/prometheus/alerts.test.yml").read_text())
    fired = {c["alertname"] for t in tests["tests"] for c in t["alert_rule_test"] if c["exp_alerts"]}
    quiet = {c["alertname"] for t in tests["tests"] for c in t["alert_rule_test"] if not c["exp_alerts"]}
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert alerts <= fired, f"alerts never shown to fire: {sorted(alerts - fired)}"
    assert alerts <= quiet, f"alerts never shown to stay quiet: {sorted(alerts - quiet)}"
