"""dtrtrust on a real node: kubelet, containerd's CRI, the image built from ./Dockerfile and
``kubectl apply -k``, the way an admin installs it (see conftest.py and nodeharness.py).

The tests run in file order and share one cluster: install, the operator and the agent
under their real securityContext and mounts, a DTRTrust Ready on 1/1 nodes, the files on
the node, a workload pulled by containerd with exactly those files, deletion taking them
away again, clean logs, and no traffic anywhere but loopback and the node's bridge.
"""

from __future__ import annotations

import json
import re
import stat
import time
from pathlib import Path
from typing import Any

import nodeharness
import pytest

from conftest import NAMESPACE, Node, Trust, timed

pytestmark = [pytest.mark.node, pytest.mark.slow, pytest.mark.timeout(600)]

#: Everything a container may hold at most: CapEff of a container without capabilities.
NO_CAPABILITIES = 0


def _proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _mounts(pid: int) -> dict[str, set[str]]:
    """mount point -> mount options, as the process sees them."""
    out: dict[str, set[str]] = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        cols = line.split()
        out[cols[4]] = set(cols[5].split(","))
    return out


def _container_pid(node: Node, container: str) -> int:
    """The host PID of the container's first process, found through containerd."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = node.cluster.container_pids(container)
        if pids:
            return min(pids)
        time.sleep(0.5)
    raise AssertionError(f"no running container {container!r} in the node's containerd")


def _assert_hardened(pid: int, uid: int) -> dict[str, str]:
    status = _proc_status(pid)
    assert status["Uid"].split() == [str(uid)] * 4, status["Uid"]
    assert int(status["CapEff"], 16) == NO_CAPABILITIES, status["CapEff"]
    assert int(status["CapPrm"], 16) == NO_CAPABILITIES, status["CapPrm"]
    assert int(status["CapBnd"], 16) == NO_CAPABILITIES, status["CapBnd"]
    assert status["NoNewPrivs"] == "1"  # allowPrivilegeEscalation: false
    assert status["Seccomp"] == "2"  # RuntimeDefault: a seccomp filter is in force
    assert "ro" in _mounts(pid)["/"], "the root file system is not read-only"
    return status


def _pod(node: Node, selector: str) -> dict[str, Any]:
    pods = node.kubectl_json("-n", NAMESPACE, "get", "pods", "-l", selector)["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    pod: dict[str, Any] = pods[0]
    return pod


def test_node_is_ready_on_containerd_with_its_address_on_the_harness_bridge(node: Node) -> None:
    info = node.kubectl_json("get", "node", nodeharness.NODE_NAME)
    conditions = {c["type"]: c["status"] for c in info["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    addresses = {a["type"]: a["address"] for a in info["status"]["addresses"]}
    assert addresses["InternalIP"] == node.cluster.network.node_ip
    assert info["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    endpoints = node.kubectl_json("-n", "default", "get", "endpoints", "kubernetes")
    (subset,) = endpoints["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == [node.cluster.network.node_ip]


def test_kubectl_apply_k_makes_the_operator_available_under_its_real_security_context(
    installed: Node,
) -> None:
    node = installed
    pod = _pod(node, "app.kubernetes.io/component=operator")
    (container,) = pod["status"]["containerStatuses"]
    assert container["ready"] is True
    assert container["restartCount"] == 0
    assert container["imageID"].endswith(node.project_digest)
    status = _assert_hardened(_container_pid(node, "operator"), 65532)
    assert status["Gid"].split() == ["65532"] * 4
    # Nothing but the emptyDir /tmp is writable (and the kubelet's own files).
    writable = {m for m, opts in _mounts(_container_pid(node, "operator")).items() if "rw" in opts}
    assert "/tmp" in writable
    assert not {m for m in writable if m.startswith(("/usr", "/opt", "/etc/ssl", "/src"))}


def test_operator_creates_the_agent_daemonset_whose_pod_runs_as_root_without_capabilities(
    installed: Node,
) -> None:
    node = installed
    started = time.monotonic()
    node.kubectl("-n", NAMESPACE, "rollout", "status", "daemonset/dtrtrust-agent", "--timeout=120s")
    timed("agent DaemonSet rolled out", started)
    daemonset = node.kubectl_json("-n", NAMESPACE, "get", "daemonset", "dtrtrust-agent")
    assert daemonset["status"]["numberReady"] == daemonset["status"]["desiredNumberScheduled"] == 1
    pod = _pod(node, "app.kubernetes.io/name=dtrtrust-agent")
    assert pod["spec"]["nodeName"] == nodeharness.NODE_NAME
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    _assert_hardened(_container_pid(node, "agent"), 0)


def test_agent_sees_exactly_its_host_paths_with_containerd_config_read_only(
    installed: Node,
) -> None:
    node = installed
    daemonset = node.kubectl_json("-n", NAMESPACE, "get", "daemonset", "dtrtrust-agent")
    spec = daemonset["spec"]["template"]["spec"]
    host_volumes = {v["name"] for v in spec["volumes"] if "hostPath" in v}
    (agent,) = spec["containers"]
    declared = {
        m["mountPath"]: ("ro" if m.get("readOnly") else "rw")
        for m in agent["volumeMounts"]
        if m["name"] in host_volumes
    }
    assert declared["/host/etc/containerd"] == "ro"
    assert declared["/host/etc/containerd/certs.d"] == "rw"
    # What the kubelet and runc really mounted under /host: exactly those, no more.
    mounts = _mounts(_container_pid(node, "agent"))
    seen = {
        m: ("ro" if "ro" in opts else "rw") for m, opts in mounts.items() if m.startswith("/host")
    }
    assert seen == declared


def test_operator_and_agent_reach_the_api_server_through_the_kubernetes_service(
    installed: Node,
) -> None:
    # No cluster DNS here: in-cluster clients (kopf, pykube-ng) take the Service's ClusterIP
    # from KUBERNETES_SERVICE_HOST, which the kubelet sets even with enableServiceLinks off;
    # kube-proxy's DNAT sends it to the API server on the node's bridge.
    node = installed
    service = f"{node.cluster.network.service_ip}:443"
    for container in ("operator", "agent"):
        pid = _container_pid(node, container)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"KUBERNETES_SERVICE_HOST={node.cluster.network.service_ip}".encode() in environ
        deadline = time.monotonic() + 30
        while service not in {peer for peer, _ in nodeharness.peers(pid)}:
            assert time.monotonic() < deadline, f"{container} holds no connection to {service}"
            time.sleep(0.5)


def test_namespace_carries_the_pod_security_labels_and_the_operator_meets_restricted(
    installed: Node,
) -> None:
    # Kubernetes 1.20 has no Pod Security admission, so the labels cannot be enforced
    # here; what they promise is checked on the pods the kubelet really runs instead.
    node = installed
    labels = node.kubectl_json("get", "namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    operator = _pod(node, "app.kubernetes.io/component=operator")
    assert _restricted_violations(operator["spec"]) == []
    agent = _pod(node, "app.kubernetes.io/name=dtrtrust-agent")
    # The agent is the namespace's reason for `privileged`: hostPath volumes and root,
    # and nothing else the restricted level forbids.
    assert _restricted_violations(agent["spec"]) == ["hostPath volumes", "runs as root"]


def _restricted_violations(spec: dict[str, Any]) -> list[str]:
    """The Pod Security ``restricted`` rules (v1.2x) this pod breaks."""
    found = []
    if any("hostPath" in v for v in spec.get("volumes", [])):
        found.append("hostPath volumes")
    if any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")):
        found.append("host namespaces")
    pod_sc = spec.get("securityContext", {})
    root = False
    for c in spec["containers"] + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            found.append("privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append("privilege escalation allowed")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get(
            "add"
        ):
            found.append("capabilities not dropped")
        seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            found.append("no seccomp profile")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if not non_root or user == 0:
            root = True
    if root:
        found.append("runs as root")
    return found


def test_dtrtrust_for_the_dtr_like_registry_becomes_ready_on_one_of_one_nodes(
    trust: Trust, installed: Node
) -> None:
    node = installed
    table = node.kubectl("get", "dtrtrust", trust.name)
    assert re.search(rf"{trust.name}\s+{re.escape(trust.address)}\s+True\s+1/1", table), table
    obj = node.kubectl_json("get", "dtrtrust", trust.name)
    conditions = {c["type"]: c for c in obj["status"]["conditions"]}
    for kind in ("CAAvailable", "BundleValid", "ClientCertificateValid", "RegistryVerified"):
        assert conditions[kind]["status"] == "True", conditions[kind]
    assert conditions["NodesSynced"]["status"] == "True", conditions["NodesSynced"]
    assert obj["status"]["nodes"]["desired"] == obj["status"]["nodes"]["synced"] == 1
    # describe works by singular name too (it did not, with a category named "dtrtrust").
    assert "RegistryVerified" in node.kubectl("describe", "dtrtrust", trust.name)


def test_agent_files_appear_on_the_node_where_its_containerd_reads_them(
    trust: Trust, installed: Node
) -> None:
    node = installed
    containerd_dir = node.cluster.node_path(f"/etc/containerd/certs.d/{trust.address}")
    docker_dir = node.cluster.node_path(f"/etc/docker/certs.d/{trust.address}")
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in containerd_dir.iterdir()}
    assert files == {
        "hosts.toml": 0o644,
        "ca.crt": 0o644,
        "client.cert": 0o644,
        "client.key": 0o600,
    }
    assert {p.name for p in docker_dir.iterdir()} == {"ca.crt", "client.cert", "client.key"}
    hosts = (containerd_dir / "hosts.toml").read_text()
    assert f'server = "https://{trust.address}"' in hosts
    assert (containerd_dir / "client.cert").read_bytes() == trust.stack.client_cert.read_bytes()
    # This is the directory the node's containerd was configured with.
    config = node.cluster.node_path("/etc/containerd/config.toml").read_text()
    assert 'config_path = "/etc/containerd/certs.d"' in config


def _workload(name: str, image: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                # No imagePullSecrets: the node's certs.d is the only credential.
                "containers": [{"name": "hello", "image": image, "imagePullPolicy": "Always"}],
                "terminationGracePeriodSeconds": 1,
                "automountServiceAccountToken": False,
            },
        }
    )


def _wait_pod(node: Node, name: str, accept: set[str], timeout: float = 90) -> dict[str, Any]:
    """Wait until the pod's phase or container waiting reason is in ``accept``."""
    deadline = time.monotonic() + timeout
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pod = node.kubectl_json("-n", "default", "get", "pod", name)
        status = pod.get("status", {})
        states = [s.get("state", {}) for s in status.get("containerStatuses", [])]
        reasons = {s.get("waiting", {}).get("reason") for s in states} - {None}
        if status.get("phase") in accept or reasons & accept:
            return pod
        time.sleep(0.5)
    raise AssertionError(f"pod {name} never reached {accept}: {json.dumps(pod.get('status'))}")


def test_workload_from_the_registry_starts_through_cri_with_no_image_pull_secret(
    trust: Trust, installed: Node
) -> None:
    node = installed
    image = f"{trust.address}/{node.images.workload_repository}:{node.images.workload_tag}"
    started = time.monotonic()
    node.kubectl("apply", "-f", "-", input_text=_workload("hello-pulled", image))
    pod = _wait_pod(node, "hello-pulled", {"Running", "ErrImagePull", "ImagePullBackOff"})
    events = node.kubectl(
        "-n", "default", "get", "events", "--field-selector=involvedObject.name=hello-pulled"
    )
    assert pod["status"]["phase"] == "Running", events
    timed("workload pod: created -> Running (pulled via CRI)", started)
    assert "Successfully pulled image" in events
    logs = node.kubectl("-n", "default", "logs", "hello-pulled")
    assert logs == node.images.workload_content.decode()
    node.kubectl("-n", "default", "delete", "pod", "hello-pulled", "--wait=true")


def test_deleting_the_dtrtrust_removes_the_files_and_a_new_pod_can_no_longer_pull(
    trust: Trust, installed: Node
) -> None:
    node = installed
    containerd_dir = node.cluster.node_path(f"/etc/containerd/certs.d/{trust.address}")
    docker_dir = node.cluster.node_path(f"/etc/docker/certs.d/{trust.address}")
    assert containerd_dir.is_dir()
    started = time.monotonic()
    node.kubectl("delete", "dtrtrust", trust.name)
    deadline = time.monotonic() + 90  # the garbage collector deletes the bundle Secret
    while time.monotonic() < deadline and (containerd_dir.exists() or docker_dir.exists()):
        time.sleep(0.5)
    assert not containerd_dir.exists()
    assert not docker_dir.exists()
    timed("DTRTrust deleted -> node files gone", started)
    # The image must really be fetched again: take it out of the node's content store.
    image = f"{trust.address}/{node.images.workload_repository}:{node.images.workload_tag}"
    node.cluster.ctr("images", "rm", image, check=False)
    node.kubectl("apply", "-f", "-", input_text=_workload("hello-refused", image))
    pod = _wait_pod(node, "hello-refused", {"Running", "ErrImagePull", "ImagePullBackOff"})
    assert pod["status"]["phase"] != "Running"
    events = node.kubectl(
        "-n", "default", "get", "events", "--field-selector=involvedObject.name=hello-refused"
    )
    assert "certificate signed by unknown authority" in events, events
    node.kubectl("-n", "default", "delete", "pod", "hello-refused", "--wait=false")


_ERROR_LINE = re.compile(r"\[(ERROR|CRITICAL)\s*\]|^(ERROR|CRITICAL)\b|Traceback", re.MULTILINE)


def test_operator_and_agent_logs_show_no_error(installed: Node) -> None:
    node = installed
    for target in ("deployment/dtrtrust-operator", "daemonset/dtrtrust-agent"):
        logs = node.kubectl("-n", NAMESPACE, "logs", target, "--tail=-1")
        assert logs.strip(), f"{target} logged nothing"
        errors = [line for line in logs.splitlines() if _ERROR_LINE.search(line)]
        assert errors == [], f"{target}:\n" + "\n".join(errors)


def test_kubelet_skips_cloud_metadata_and_the_node_talks_only_to_loopback_and_its_bridge(
    node: Node,
) -> None:
    kubelet = next(c for c in node.cluster.components if c.name == "kubelet")
    assert kubelet.pid is not None
    environ = Path(f"/proc/{kubelet.pid}/environ").read_bytes().split(b"\0")
    assert b"AWS_EC2_METADATA_DISABLED=true" in environ
    node.egress.sample()
    assert node.egress.seen == {}, f"peers outside loopback and the bridge: {node.egress.seen}"
