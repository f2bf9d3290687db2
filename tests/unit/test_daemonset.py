"""The agent DaemonSet builder and its drift check: pure, no API server."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dtrtrust.contract import SPEC_HASH_ANNOTATION
from dtrtrust.operator import daemonset
from dtrtrust.operator.daemonset import Settings, build, needs_update

ALLOWED_HOST_PATHS = {
    "/etc/docker/certs.d",
    "/etc/containers/certs.d",
    "/etc/containerd/certs.d",
    "/root/.docker/tls",
    "/etc/containerd",  # read-only, for config.toml
    "/etc/docker",  # read-only, for daemon.json
    "/etc/containers",  # read-only, for registries.conf(.d)
    "/var/lib/dtrtrust",  # ownership record and remembered policies
}


@pytest.fixture
def ds() -> dict[str, Any]:
    return build(Settings(namespace="ops", image="registry.example/dtrtrust:1.2"))


def pod(ds: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = ds["spec"]["template"]["spec"]
    return spec


def test_image_and_namespace_come_from_the_settings(ds: dict[str, Any]) -> None:
    assert ds["metadata"]["namespace"] == "ops"
    assert [c["image"] for c in pod(ds)["containers"]] == ["registry.example/dtrtrust:1.2"]


def test_image_is_read_from_the_environment() -> None:
    got = Settings.from_env("ns", {"DTRTRUST_AGENT_IMAGE": "r.example/agent@sha256:ab"})
    assert got.image == "r.example/agent@sha256:ab"
    assert Settings.from_env("ns", {}).image == daemonset.DEFAULT_IMAGE


@pytest.mark.parametrize("image", ["", "two words"])
def test_unusable_image_is_refused_naming_the_variable(image: str) -> None:
    with pytest.raises(ValueError, match="DTRTRUST_AGENT_IMAGE"):
        build(Settings(image=image))


def test_host_paths_are_only_the_trust_directories(ds: dict[str, Any]) -> None:
    volumes = pod(ds)["volumes"]
    assert all(set(v) == {"name", "hostPath"} for v in volumes)
    assert {v["hostPath"]["path"] for v in volumes} == ALLOWED_HOST_PATHS
    assert {v["hostPath"]["type"] for v in volumes} == {"DirectoryOrCreate"}


def test_mounts_mirror_the_host_layout_under_host(ds: dict[str, Any]) -> None:
    paths = {v["name"]: v["hostPath"]["path"] for v in pod(ds)["volumes"]}
    (container,) = pod(ds)["containers"]
    for mount in container["volumeMounts"]:
        host = paths[mount["name"]]
        assert mount["mountPath"] == "/host" + host
    read_only = {m["mountPath"] for m in container["volumeMounts"] if m.get("readOnly")}
    assert read_only == {"/host/etc/containerd", "/host/etc/docker", "/host/etc/containers"}
    assert container["command"][:4] == ["dtrtrust", "agent", "--host-root", "/host"]


def test_container_is_hardened(ds: dict[str, Any]) -> None:
    (container,) = pod(ds)["containers"]
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["privileged"] is False
    assert pod(ds)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod(ds).get("hostNetwork") in (None, False)
    assert pod(ds).get("hostPID") in (None, False)
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]


def test_runs_everywhere_as_node_critical_with_its_own_service_account(
    ds: dict[str, Any],
) -> None:
    spec = pod(ds)
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["serviceAccountName"] == "dtrtrust-agent"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_same_settings_give_the_same_object_and_hash() -> None:
    a, b = build(Settings()), build(Settings())
    assert a == b
    other = build(Settings(image="x.example/other:2"))
    hash_key = SPEC_HASH_ANNOTATION
    assert a["metadata"]["annotations"][hash_key] != other["metadata"]["annotations"][hash_key]


def live_from(desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns: our fields plus defaults and bookkeeping."""
    live = copy.deepcopy(desired)
    live["metadata"].update(resourceVersion="42", uid="u", generation=1)
    live["spec"]["revisionHistoryLimit"] = 10
    container = live["spec"]["template"]["spec"]["containers"][0]
    container.update(terminationMessagePath="/dev/termination-log")
    live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    live["status"] = {"numberReady": 3}
    return live


def test_live_object_with_only_server_defaults_needs_no_update(ds: dict[str, Any]) -> None:
    assert needs_update(ds, live_from(ds)) is None


def _edit_image(live: dict[str, Any]) -> None:
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "evil.example/x:1"


def _add_volume(live: dict[str, Any]) -> None:
    live["spec"]["template"]["spec"]["volumes"].append(
        {"name": "root", "hostPath": {"path": "/", "type": "Directory"}}
    )


def _drop_toleration(live: dict[str, Any]) -> None:
    live["spec"]["template"]["spec"]["tolerations"] = []


def _privileged(live: dict[str, Any]) -> None:
    live["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True


def _stale_hash(live: dict[str, Any]) -> None:
    live["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = "sha256:old"


def _label(live: dict[str, Any]) -> None:
    live["metadata"]["labels"]["app.kubernetes.io/name"] = "other"


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (_edit_image, "spec was edited"),
        (_add_volume, "spec was edited"),
        (_drop_toleration, "spec was edited"),
        (_privileged, "spec was edited"),
        (_stale_hash, "desired agent DaemonSet changed"),
        (_label, "labels were edited"),
    ],
)
def test_drift_in_the_live_daemonset_is_detected(ds: dict[str, Any], edit: Any, why: str) -> None:
    live = live_from(ds)
    edit(live)
    reason = needs_update(ds, live)
    assert reason is not None
    assert why in reason


def test_replace_body_carries_the_live_resource_version(ds: dict[str, Any]) -> None:
    body = daemonset.for_replace(ds, live_from(ds))
    assert body["metadata"]["resourceVersion"] == "42"
    assert "resourceVersion" not in ds["metadata"]
