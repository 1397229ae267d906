"""Kubernetes manifests: schema-valid, hardened, and overlays that build (or at least resolve)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.unit.test_deploy_support import (
    K8S,
    OVERLAYS,
    containers,
    k8s_docs,
    kustomize_build,
    pod_specs,
)

pytestmark = pytest.mark.unit

K8S_VERSION = kubernetes_validate.latest_version()
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}


def validate(doc: dict[str, Any], where: str) -> None:
    if (doc["apiVersion"], doc["kind"]) in CRDS:
        return  # no schema offline: checked structurally below
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")


def kustomization(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def test_base_manifests_match_the_kubernetes_schemas() -> None:
    docs = list(k8s_docs(K8S / "base"))
    assert {d["kind"] for _, d in docs} >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "CronJob",
        "Job",
        "ServiceMonitor",
        "PrometheusRule",
    }
    for path, doc in docs:
        validate(doc, path.name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_and_matches_the_schemas(overlay: str) -> None:
    built = kustomize_build(overlay)
    if built is None:
        pytest.skip(
            "no kustomize or kubectl on PATH (kubectl embeds kustomize; install it to build the overlays): "
            "test_overlays_resolve checks their structure instead"
        )
    for doc in built:
        validate(doc, f"overlays/{overlay}")
        assert doc["metadata"].get("namespace"), f"{doc['kind']}/{doc['metadata']['name']} has no namespace"
    images = {c["image"] for d in built for s in pod_specs(d) for c in containers(s)}
    assert len(images) == 1, f"API and jobs must run one image, got {images}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_resolve(overlay: str) -> None:
    """Without a kustomize binary: every resource and patch file exists and every patch hits an object."""
    base = K8S / "base"
    objects = {(d["kind"], d["metadata"]["name"]) for _, d in k8s_docs(base)}
    for res in kustomization(base)["resources"]:
        assert (base / res).is_file(), res
    folder = K8S / "overlays" / overlay
    kz = kustomization(folder)
    assert kz["resources"] == ["../../base"]
    assert kz.get("namespace")
    assert [i["name"] for i in kz["images"]] == ["skewless"]
    for patch in kz.get("patches", []):
        if "path" in patch:
            for doc in yaml.safe_load_all((folder / patch["path"]).read_text()):
                assert (doc["kind"], doc["metadata"]["name"]) in objects, f"{patch['path']} patches nothing"
        else:
            target = patch["target"]
            assert (target["kind"], target["name"]) in objects, f"inline patch targets nothing: {target}"


def test_workloads_run_restricted() -> None:
    workloads = [(p, d) for p, d in k8s_docs(K8S / "base") if pod_specs(d)]
    assert {d["kind"] for _, d in workloads} == {"Deployment", "Job", "CronJob"}
    for path, doc in workloads:
        spec = pod_specs(doc)[0]
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001, path.name
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", path.name
        assert spec["automountServiceAccountToken"] is False, path.name
        tmp = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, f"{path.name}/{c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, f"{path.name}/{c['name']}"
            assert sc["capabilities"]["drop"] == ["ALL"], f"{path.name}/{c['name']}"
            assert any(m["mountPath"] == "/tmp" and m["name"] in tmp for m in c["volumeMounts"]), c["name"]
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["name"]


def test_api_deployment_is_probed_scaled_and_protected() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_docs(K8S / "base")}
    dep = docs[("Deployment", "skewless-api")]
    api = dep["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    hpa = docs[("HorizontalPodAutoscaler", "skewless-api")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "skewless-api"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    pdb = docs[("PodDisruptionBudget", "skewless-api")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    svc = docs[("Service", "skewless-api")]
    assert svc["spec"]["selector"].items() <= labels.items()
    redis = docs[("Service", "redis")]
    assert redis["spec"]["type"] == "ExternalName", "Redis is a managed service referenced by name"
    assert docs[("CronJob", "skewless-materialize")]["spec"]["concurrencyPolicy"] == "Forbid"
    # kubectl apply -k starts every Job at once: training waits, suspended, until the operator
    # has run feast apply and a first materialization (README.md, section Kubernetes).
    assert docs[("Job", "skewless-train")]["spec"]["suspend"] is True
    assert not docs[("Job", "skewless-feast-apply")]["spec"].get("suspend")


def test_monitoring_crds_are_well_formed() -> None:
    docs = {d["kind"]: d for _, d in k8s_docs(K8S / "base")}
    sm = docs["ServiceMonitor"]
    svc = next(
        d for _, d in k8s_docs(K8S / "base") if d["kind"] == "Service" and d["metadata"]["name"] == "skewless-api"
    )
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in port_names and ep["path"] == "/metrics"
    rule = docs["PrometheusRule"]
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations", "record", "keep_firing_for"}
            assert r["alert"] and r["expr"] and r["labels"]["severity"] in ("critical", "warning", "info")
