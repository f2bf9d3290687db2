"""The harness itself: what the operator's integration tests rely on the real API server for.

Each test proves one behaviour of the API server as the harness runs it (CRD schema, status
subresource, owner-reference GC across scopes, RBAC with ServiceAccount tokens). They use a
small CRD of their own (group harness.dtrtrust.io) so they do not depend on the product's CRD;
the project's CRDs in crds/ get their own checks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubeharness
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.kube

GROUP, VERSION, PLURAL, KIND = (
    kubeharness.SELFTEST_GROUP,
    "v1",
    kubeharness.SELFTEST_PLURAL,
    "Gadget",
)
GC_DEADLINE = 60.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def as_dict(answer: object) -> dict[str, Any]:
    """CustomObjectsApi answers are typed ``object``; they are the decoded JSON object."""
    assert isinstance(answer, dict), type(answer)
    return answer


def gadget(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def gadget_crd(kube_cluster: Any) -> str:
    """The harness's self-test CRD, installed by the session fixture before the
    controller-manager started (so the GC watches it from the start)."""
    name = str(kubeharness.SELFTEST_CRD["metadata"]["name"])
    assert name in kube_cluster.crds
    return name


@pytest.fixture
def objects(kube_admin: Any, gadget_crd: str) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_admin)


def condition(crd: Any, kind: str) -> str | None:
    for c in (crd.status.conditions if crd.status else None) or []:
        if c.type == kind:
            return str(c.status)
    return None


# --- CRDs ------------------------------------------------------------------------------


def test_applied_crd_becomes_established_and_its_objects_are_served(
    kube_admin: Any, objects: client.CustomObjectsApi, gadget_crd: str
) -> None:
    crd = client.ApiextensionsV1Api(kube_admin).read_custom_resource_definition(gadget_crd)
    assert condition(crd, "Established") == "True"
    assert condition(crd, "NamesAccepted") == "True"
    name = unique("served")
    objects.create_cluster_custom_object(GROUP, VERSION, PLURAL, gadget(name, {"registry": "a.b"}))
    try:
        listed = as_dict(objects.list_cluster_custom_object(GROUP, VERSION, PLURAL))
        assert name in [item["metadata"]["name"] for item in listed["items"]]
    finally:
        objects.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


PROJECT_CRD_FILES = kubeharness.crd_files(kubeharness.PROJECT_ROOT / "crds")


@pytest.mark.parametrize(
    "crd_file",
    PROJECT_CRD_FILES
    or [pytest.param(None, marks=pytest.mark.skip(reason="crds/ holds no CRD yet"))],
    ids=lambda p: p.name if isinstance(p, Path) else "none",
)
def test_every_project_crd_is_installed_and_established(
    kube_admin: Any, kube_cluster: Any, crd_file: Path
) -> None:
    api = client.ApiextensionsV1Api(kube_admin)
    names = kubeharness.crd_names([crd_file])
    assert names, f"{crd_file} holds no CustomResourceDefinition"
    for name in names:
        assert name in kube_cluster.crds
        assert condition(api.read_custom_resource_definition(name), "Established") == "True"


# --- schema validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"registry": "DTR.example.com"}, "spec.registry"),
        ({"registry": "dtr.example.com/path"}, "spec.registry"),
        ({"registry": "dtr.example.com", "deletionPolicy": "Sometimes"}, "spec.deletionPolicy"),
        ({}, "spec.registry"),
    ],
    ids=["uppercase-registry", "registry-with-path", "unknown-enum-value", "missing-registry"],
)
def test_object_violating_the_crd_schema_is_rejected_naming_the_field(
    objects: client.CustomObjectsApi, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiException) as caught:
        objects.create_cluster_custom_object(GROUP, VERSION, PLURAL, gadget(unique("bad"), spec))
    assert caught.value.status == 422
    assert field in str(caught.value.body)


def test_valid_object_passes_the_same_schema(objects: client.CustomObjectsApi) -> None:
    name = unique("good")
    spec = {"registry": "dtr.example.com:4443", "deletionPolicy": "Retain"}
    created = as_dict(
        objects.create_cluster_custom_object(GROUP, VERSION, PLURAL, gadget(name, spec))
    )
    objects.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    assert created["spec"] == spec


def _project_dtrtrust_crd() -> dict[str, Any] | None:
    for path in PROJECT_CRD_FILES:
        for doc in yaml.safe_load_all(path.read_text()):
            if (
                doc
                and doc.get("kind") == "CustomResourceDefinition"
                and doc["spec"]["names"]["kind"] == "DTRTrust"
            ):
                return dict(doc)
    return None


def test_dtrtrust_with_uppercase_registry_is_rejected_by_the_project_crd(
    kube_admin: Any, kube_cluster: Any
) -> None:
    crd = _project_dtrtrust_crd()
    if crd is None:
        pytest.skip("crds/ has no DTRTrust CRD yet")
    version = next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))
    body = {
        "apiVersion": f"dtrtrust.io/{version}",
        "kind": "DTRTrust",
        "metadata": {"name": unique("upper")},
        "spec": {"registry": "DTR.Example.com:4443", "ca": {"pem": "x"}},
    }
    with pytest.raises(ApiException) as caught:
        client.CustomObjectsApi(kube_admin).create_cluster_custom_object(
            "dtrtrust.io", version, "dtrtrusts", body
        )
    assert caught.value.status == 422
    assert "spec.registry" in str(caught.value.body)


# --- status subresource ----------------------------------------------------------------


def test_status_patch_keeps_generation_and_spec_patch_bumps_it(
    objects: client.CustomObjectsApi,
) -> None:
    name = unique("gen")
    created = as_dict(
        objects.create_cluster_custom_object(
            GROUP, VERSION, PLURAL, gadget(name, {"registry": "a.example"})
        )
    )
    try:
        generation = created["metadata"]["generation"]
        after_status = as_dict(
            objects.patch_cluster_custom_object_status(
                GROUP, VERSION, PLURAL, name, {"status": {"observedGeneration": generation}}
            )
        )
        assert after_status["status"] == {"observedGeneration": generation}
        assert after_status["metadata"]["generation"] == generation

        # The main resource ignores status, and the status subresource ignores spec.
        ignored = as_dict(
            objects.patch_cluster_custom_object(
                GROUP, VERSION, PLURAL, name, {"status": {"observedGeneration": 99}}
            )
        )
        assert ignored["status"] == {"observedGeneration": generation}

        after_spec = as_dict(
            objects.patch_cluster_custom_object(
                GROUP, VERSION, PLURAL, name, {"spec": {"registry": "b.example"}}
            )
        )
        assert after_spec["metadata"]["generation"] == generation + 1
    finally:
        objects.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


# --- garbage collection ----------------------------------------------------------------


def _secret_owned_by(owner: dict[str, Any], name: str) -> client.V1Secret:
    reference = client.V1OwnerReference(
        api_version=owner["apiVersion"],
        kind=owner["kind"],
        name=owner["metadata"]["name"],
        uid=owner["metadata"]["uid"],
    )
    return client.V1Secret(
        metadata=client.V1ObjectMeta(name=name, owner_references=[reference]),
        string_data={"ca.crt": "not a secret"},
    )


def _secret_exists(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_namespaced_secret_owned_by_cluster_scoped_object_is_collected_when_owner_goes(
    kube_admin: Any, objects: client.CustomObjectsApi, kube_namespace: str
) -> None:
    core = client.CoreV1Api(kube_admin)
    doomed = as_dict(
        objects.create_cluster_custom_object(
            GROUP, VERSION, PLURAL, gadget(unique("owner"), {"registry": "a.example"})
        )
    )
    kept = as_dict(
        objects.create_cluster_custom_object(
            GROUP, VERSION, PLURAL, gadget(unique("owner"), {"registry": "a.example"})
        )
    )
    try:
        core.create_namespaced_secret(kube_namespace, _secret_owned_by(doomed, "doomed"))
        core.create_namespaced_secret(kube_namespace, _secret_owned_by(kept, "kept"))

        objects.delete_cluster_custom_object(GROUP, VERSION, PLURAL, doomed["metadata"]["name"])
        deadline = time.monotonic() + GC_DEADLINE
        while _secret_exists(core, kube_namespace, "doomed"):
            assert time.monotonic() < deadline, f"owned Secret still there after {GC_DEADLINE}s"
            time.sleep(0.5)

        assert _secret_exists(core, kube_namespace, "kept"), "GC removed a Secret whose owner lives"
    finally:
        objects.delete_cluster_custom_object(GROUP, VERSION, PLURAL, kept["metadata"]["name"])


# --- RBAC ------------------------------------------------------------------------------


@pytest.fixture
def configmap_reader(
    kube_admin: Any,
    kube_namespace: str,
    apply_manifests: Callable[[Any], str],
    service_account_kubeconfig: Callable[[str, str], Path],
) -> Path:
    """A ServiceAccount in kube_namespace whose only grant is a Role to read ConfigMaps there."""
    ns = kube_namespace
    role_yaml = f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: configmap-reader, namespace: {ns}}}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: configmap-reader, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}}
subjects:
- {{kind: ServiceAccount, name: reader, namespace: {ns}}}
"""
    kubeconfig = service_account_kubeconfig(ns, "reader")
    apply_manifests(role_yaml)
    # Wait until the grant is in effect, so the 403s below are not an RBAC cache still empty.
    with kubeharness.api_client(kubeconfig) as as_reader:
        _wait_for_rbac(lambda: client.CoreV1Api(as_reader).list_namespaced_config_map(ns))
    return kubeconfig


@pytest.fixture
def other_namespace(kube_admin: Any) -> Iterator[str]:
    core = client.CoreV1Api(kube_admin)
    name = unique("t-other")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def _wait_for_rbac(call: Callable[[], object], deadline: float = 10.0) -> None:
    """RBAC changes reach the authorizer's cache within moments: retry a 403 briefly."""
    end = time.monotonic() + deadline
    while True:
        try:
            call()
            return
        except ApiException as exc:
            if exc.status != 403 or time.monotonic() > end:
                raise
            time.sleep(0.2)


def test_service_account_gets_what_its_role_grants_and_403_for_everything_else(
    configmap_reader: Path, kube_namespace: str, other_namespace: str
) -> None:
    with kubeharness.api_client(configmap_reader) as as_reader:
        core = client.CoreV1Api(as_reader)
        assert core.list_namespaced_config_map(kube_namespace).items is not None

        forbidden: list[tuple[str, Callable[[], object]]] = [
            ("secrets in its namespace", lambda: core.list_namespaced_secret(kube_namespace)),
            ("configmaps elsewhere", lambda: core.list_namespaced_config_map(other_namespace)),
            ("configmaps cluster-wide", lambda: core.list_config_map_for_all_namespaces()),
            (
                "writing configmaps",
                lambda: core.create_namespaced_config_map(
                    kube_namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="nope"))
                ),
            ),
        ]
        for what, call in forbidden:
            with pytest.raises(ApiException) as caught:
                call()
            assert caught.value.status == 403, what


@pytest.mark.parametrize(
    ("verb", "resource", "where", "expected"),
    [
        ("list", "configmaps", "own", "yes"),
        ("get", "secrets", "own", "no"),
        ("list", "configmaps", "other", "no"),
    ],
)
def test_kubectl_auth_can_i_as_service_account_matches_its_role(
    configmap_reader: Path,
    kube_namespace: str,
    other_namespace: str,
    verb: str,
    resource: str,
    where: str,
    expected: str,
) -> None:
    namespace = kube_namespace if where == "own" else other_namespace
    argv = ["auth", "can-i", verb, resource, "-n", namespace]
    assert kubeharness.kubectl(configmap_reader, *argv, check=False).strip() == expected


# --- the harness's own failure path ----------------------------------------------------


def test_an_apiserver_that_exits_fails_the_start_with_its_log_tail_and_stops_etcd(
    tmp_path: Path,
) -> None:
    try:
        real = kubeharness.find_binaries()
    except kubeharness.HarnessUnavailable as exc:
        pytest.skip(str(exc))
    fake = tmp_path / "kube-apiserver"
    fake.write_text("#!/bin/sh\necho 'Error: unknown flag: --made-up' >&2\nexit 3\n")
    fake.chmod(0o755)
    binaries = kubeharness.KubeBinaries(fake, real.controller_manager, real.etcd)
    cluster = kubeharness.LocalCluster(tmp_path / "run", binaries)

    with pytest.raises(kubeharness.HarnessError) as caught:
        cluster.start(timeout=30)

    message = str(caught.value)
    assert "kube-apiserver exited before it was ready (exited with code 3)" in message
    assert "unknown flag: --made-up" in message
    assert not (tmp_path / "run" / "cluster.json").exists()
    assert _processes_mentioning(str(tmp_path / "run")) == [], "etcd was left running"


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(proc.name))
    return pids
