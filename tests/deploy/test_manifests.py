"""deploy/ renders with kustomize into a safe, valid installation.

What ``kubectl apply -k deploy/`` creates is checked as rendered, never as the source
files: kustomize's transformers (images, namespace, patches) are part of what is tested.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deployhelpers import (
    DEPLOY,
    ROOT,
    Doc,
    env_value,
    find,
    operator_container,
    project_version,
)

from dtrtrust.contract import NOT_READY_TAINT

BASE_IMAGE = f"ghcr.io/dtrtrust/dtrtrust:{project_version()}"
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
# Events about a cluster-scoped object must be in "default" (API server validation): the
# operator's permission to create them is the one thing outside its namespace.
EVENTS_RBAC = "dtrtrust-operator-events"
# The oldest and the newest Kubernetes schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.25.0", "1.37.0")


def _crd_files() -> list[Path]:
    listed = yaml.safe_load((ROOT / "crds" / "Kustomization").read_text())["resources"]
    return [ROOT / "crds" / name for name in listed]


def _without(doc: Doc, label: str) -> Doc:
    """``doc`` without one label (kustomize adds app.kubernetes.io/part-of)."""
    copy = yaml.safe_load(yaml.safe_dump(doc))
    copy["metadata"].get("labels", {}).pop(label, None)
    return dict(copy)


def test_base_renders_the_whole_installation(rendered: list[Doc]) -> None:
    kinds = sorted({(d["kind"], d["metadata"]["name"]) for d in rendered})
    expected = {
        ("Namespace", "dtrtrust-system"),
        ("CustomResourceDefinition", "dtrtrusts.dtrtrust.io"),
        ("ServiceAccount", "dtrtrust-operator"),
        ("ServiceAccount", "dtrtrust-agent"),
        ("ClusterRole", "dtrtrust-operator"),
        ("ClusterRole", "dtrtrust-agent"),
        ("Deployment", "dtrtrust-operator"),
        ("Service", "dtrtrust-operator-metrics"),
        ("NetworkPolicy", "dtrtrust-default-deny-ingress"),
        ("NetworkPolicy", "dtrtrust-operator"),
    }
    assert expected <= set(kinds), f"missing: {sorted(expected - set(kinds))}"
    # The agent DaemonSet is the operator's to create and repair, never a manifest.
    assert not [d for d in rendered if d["kind"] == "DaemonSet"]
    _assert_namespaces(rendered, "dtrtrust-system")


def _assert_namespaces(docs: list[Doc], namespace: str) -> None:
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in CLUSTER_SCOPED:
            assert doc["metadata"].get("namespace") is None, where
        elif doc["metadata"]["name"] == EVENTS_RBAC:
            assert doc["metadata"]["namespace"] == "default", where
            for rule in doc.get("rules") or []:
                assert (rule["resources"], rule["verbs"]) == (["events"], ["create"]), where
        else:
            assert doc["metadata"]["namespace"] == namespace, where
        for subject in doc.get("subjects") or []:
            assert subject["namespace"] == namespace, where


def test_crds_are_the_canonical_files_not_a_copy(rendered: list[Doc]) -> None:
    crd_sources = _crd_files()
    # Every *.yaml in crds/ is a CRD (`kubectl apply -f crds/` reads them all), and the
    # Kustomization lists every one of them (`kubectl apply -k crds/`, deploy/).
    assert sorted(crd_sources) == sorted((ROOT / "crds").glob("*.yaml")), (
        "crds/Kustomization must list every CRD file, and crds/ hold nothing else as *.yaml"
    )
    rendered_crds = {
        d["metadata"]["name"]: _without(d, "app.kubernetes.io/part-of")
        for d in rendered
        if d["kind"] == "CustomResourceDefinition"
    }
    canonical = {}
    for path in crd_sources:
        doc = yaml.safe_load(path.read_text())
        canonical[doc["metadata"]["name"]] = doc
    assert rendered_crds == canonical
    assert not list(DEPLOY.rglob("*crd*")), "deploy/ must refer to crds/, not copy it"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_validates_against_the_kubernetes_schema(
    rendered: list[Doc], version: str
) -> None:
    errors = []
    for doc in rendered:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_a_broken_object_fails_the_schema_validation(rendered: list[Doc]) -> None:
    """The check above can fail: an unknown field under strict validation is caught."""
    deployment = yaml.safe_load(yaml.safe_dump(find(rendered, "Deployment", "dtrtrust-operator")))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_operator_deployment_is_one_replica_recreated_on_upgrade(rendered: list[Doc]) -> None:
    spec = find(rendered, "Deployment", "dtrtrust-operator")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "dtrtrust-operator"
    assert pod["automountServiceAccountToken"] is True


def test_operator_tolerates_the_startup_taint_its_agents_remove(rendered: list[Doc]) -> None:
    """Nodes registered with the startup taint wait for their agent, which waits for the
    operator: an operator that cannot schedule on tainted nodes would deadlock the cluster."""
    pod = find(rendered, "Deployment", "dtrtrust-operator")["spec"]["template"]["spec"]
    assert {"key": NOT_READY_TAINT, "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


def test_operator_pod_meets_the_restricted_pod_security_standard(rendered: list[Doc]) -> None:
    pod = find(rendered, "Deployment", "dtrtrust-operator")["spec"]["template"]["spec"]
    container = operator_container(rendered)
    sc = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host_namespace)
    assert all("hostPath" not in v for v in pod.get("volumes") or [])


def test_operator_runs_as_the_uid_the_dockerfile_creates(rendered: list[Doc]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER\s+(\d+):(\d+)\s*$", dockerfile, re.MULTILINE)
    assert user, "the Dockerfile's last stage must set USER uid:gid numerically"
    uid, gid = (int(x) for x in user[-1])
    assert uid >= 10000, "a high UID cannot collide with a host user"
    pod = find(rendered, "Deployment", "dtrtrust-operator")["spec"]["template"]["spec"]
    for context in (pod["securityContext"], operator_container(rendered)["securityContext"]):
        assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)


def test_operator_probes_kopf_health_and_names_the_metrics_port(rendered: list[Doc]) -> None:
    container = operator_container(rendered)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "healthz": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert env_value(container, "DTRTRUST_METRICS_PORT") == "8080"
    assert container["args"] == ["operator"]
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    service = find(rendered, "Service", "dtrtrust-operator-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    labels = find(rendered, "Deployment", "dtrtrust-operator")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_operators_tmp_where_the_probe_key_passes_is_memory_backed(
    rendered: list[Doc],
) -> None:
    container = operator_container(rendered)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    pod = find(rendered, "Deployment", "dtrtrust-operator")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])
    assert volume["emptyDir"]["medium"] == "Memory"


def test_operator_takes_its_namespace_from_its_own_pod(rendered: list[Doc]) -> None:
    value = env_value(operator_container(rendered), "DTRTRUST_NAMESPACE")
    assert value == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_image_is_tagged_with_the_package_version_and_runs_the_agent_too(
    rendered: list[Doc],
) -> None:
    container = operator_container(rendered)
    assert container["image"] == BASE_IMAGE
    assert env_value(container, "DTRTRUST_AGENT_IMAGE") == container["image"]


def test_image_component_moves_operator_and_agent_to_the_private_image(
    with_components: Callable[..., list[Doc]],
) -> None:
    container = operator_container(with_components("image"))
    assert container["image"].startswith("registry.corp.example/platform/dtrtrust@sha256:")
    assert env_value(container, "DTRTRUST_AGENT_IMAGE") == container["image"]


def test_namespace_component_moves_every_object_and_binding(
    with_components: Callable[..., list[Doc]],
) -> None:
    docs = with_components("namespace")
    assert find(docs, "Namespace", "platform-trust")
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"] == ["platform-trust"]
    _assert_namespaces(docs, "platform-trust")
    # Nothing else names the old namespace, apart from the CRDs' documentation.
    leftovers = [
        f"{d['kind']}/{d['metadata']['name']}"
        for d in docs
        if d["kind"] != "CustomResourceDefinition" and "dtrtrust-system" in yaml.safe_dump(d)
    ]
    assert not leftovers


def test_namespace_admits_privileged_pods_only_for_the_agent_and_warns_below_restricted(
    rendered: list[Doc],
) -> None:
    labels = find(rendered, "Namespace", "dtrtrust-system")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    source = (DEPLOY / "namespace.yaml").read_text()
    assert "hostPath" in source, "say why the namespace must be privileged"


def _wave(doc: Doc) -> int:
    annotations = doc["metadata"].get("annotations") or {}
    return int(annotations.get("argocd.argoproj.io/sync-wave", "0"))


def test_argo_cd_sync_waves_order_crds_namespace_rbac_then_operator(
    rendered: list[Doc], kustomize: Callable[[Path], list[Doc]]
) -> None:
    waves: dict[str, set[int]] = {}
    for doc in rendered:
        waves.setdefault(doc["kind"], set()).add(_wave(doc))
    rbac = {"ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
    crd = max(waves["CustomResourceDefinition"])
    namespace = max(waves["Namespace"])
    rbac_waves = set().union(*(waves[k] for k in rbac))
    operator = min(waves["Deployment"])
    assert crd < namespace < min(rbac_waves)
    assert max(rbac_waves) < operator
    trusts = [d for d in kustomize(DEPLOY / "overlays" / "trust") if d["kind"] == "DTRTrust"]
    assert trusts
    for trust in trusts:
        assert _wave(trust) > operator
        options = trust["metadata"]["annotations"]["argocd.argoproj.io/sync-options"]
        assert "SkipDryRunOnMissingResource=true" in options


def test_trust_overlay_patches_targets_and_stays_valid_for_the_crd(
    kustomize: Callable[[Path], list[Doc]],
) -> None:
    crd = yaml.safe_load((ROOT / "crds" / "dtrtrust.io_dtrtrusts.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    [trust] = kustomize(DEPLOY / "overlays" / "trust")
    jsonschema.Draft7Validator(schema).validate(trust)
    assert trust["spec"]["targets"] == ["containerd", "containers"]
    source = yaml.safe_load((DEPLOY / "overlays" / "trust" / "dtrtrust.yaml").read_text())
    assert source["spec"]["targets"] == ["docker"], "the patch, not the base CR, sets targets"


# --- RBAC ---------------------------------------------------------------------------

RBAC_FILES = ("rbac-operator.yaml", "rbac-agent.yaml")
DANGEROUS_VERBS = {"*", "escalate", "bind", "impersonate", "deletecollection"}


@pytest.mark.parametrize("name", RBAC_FILES)
def test_every_rbac_rule_says_why_it_exists(name: str) -> None:
    """A comment between the previous rule (or the object's start) and each rule."""
    lines = (DEPLOY / name).read_text().splitlines()
    uncommented, commented, rules = [], False, 0
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            commented = True
        elif stripped.startswith("- apiGroups:"):
            rules += 1
            if not commented:
                uncommented.append(f"line {number}: {stripped}")
            commented = False
        elif stripped == "---":
            commented = False
    assert rules
    assert not uncommented


def test_rbac_grants_no_wildcards_no_escalation_and_no_secrets_cluster_wide(
    rendered: list[Doc],
) -> None:
    problems = []
    for doc in rendered:
        if doc["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in doc.get("rules") or []:
            where = f"{doc['kind']}/{doc['metadata']['name']}: {rule}"
            if "*" in rule.get("resources", []) or "*" in rule.get("apiGroups", []):
                problems.append(f"wildcard: {where}")
            if DANGEROUS_VERBS & set(rule.get("verbs", [])):
                problems.append(f"dangerous verb: {where}")
            if doc["kind"] == "ClusterRole" and "secrets" in rule.get("resources", []):
                problems.append(f"Secrets cluster-wide: {where}")
            if "delete" in rule.get("verbs", []) and "secrets" in rule.get("resources", []):
                problems.append(f"deletes Secrets (owner references do): {where}")
    assert not problems, "\n".join(problems)


def test_agent_can_write_nothing_but_its_per_node_report_and_patch_nodes(
    rendered: list[Doc],
) -> None:
    writes = {"create", "update", "patch", "delete", "deletecollection"}
    written = {
        (group, resource, verb)
        for doc in rendered
        if doc["kind"] in ("Role", "ClusterRole") and doc["metadata"]["name"] == "dtrtrust-agent"
        for rule in doc.get("rules") or []
        for verb in writes & set(rule["verbs"])
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert {(g, r) for g, r, _ in written} == {("dtrtrust.io", "dtrtrustnodes"), ("", "nodes")}
    # Nodes: patch only (the startup taint), never update or delete.
    assert {v for g, r, v in written if r == "nodes"} == {"patch"}
