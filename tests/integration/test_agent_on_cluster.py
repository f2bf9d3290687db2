"""The node agent on a real API server: Node objects made by the test, one ``dtrtrust agent``
process per fake node (its own host root under tmp_path), and the operator as a process, each
under exactly its RBAC from deploy/. What a cluster admin relies on: files appear, follow the
spec, go away (or stay with Retain), are repaired, and status.nodes counts them."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import certfactory
from operatorproc import OperatorProcess, terminate

pytestmark = pytest.mark.kube

GROUP, VERSION, PLURAL = "dtrtrust.io", "v1alpha1", "dtrtrusts"
NS = "dtrtrust-system"
ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 30.0
REGISTRY = "dtr.agent-test.example:4443"

CA = certfactory.make_ca("dtrtrust agent test root")


@dataclass
class AgentProcess:
    node: str
    host_root: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        self.proc = None


@pytest.fixture(scope="module")
def agent_kubeconfig(dtrtrust_operator: OperatorProcess, service_account_kubeconfig: Any) -> Path:
    path: Path = service_account_kubeconfig(NS, "dtrtrust-agent")
    return path


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture
def core(kube_admin: Any) -> client.CoreV1Api:
    return client.CoreV1Api(kube_admin)


@pytest.fixture
def custom(kube_admin: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_admin)


@pytest.fixture
def nodes(core: client.CoreV1Api, run_id: str) -> Iterator[Callable[..., str]]:
    """make(suffix, **labels) -> node name; every node carries kubernetes.io/os=linux and
    this test's run label; all are deleted afterwards (so other tests count none)."""
    made: list[str] = []

    def make(suffix: str, **labels: str) -> str:
        name = f"n-{run_id}-{suffix}"
        all_labels = {"kubernetes.io/os": "linux", "dtrtrust-test": run_id, **labels}
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name, labels=all_labels)))
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            core.delete_node(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def agents(agent_kubeconfig: Path, tmp_path: Path) -> Iterator[Callable[[str], AgentProcess]]:
    """start(node) -> a running agent for that node with host root tmp_path/<node>. At the
    end every agent is stopped by PID and its log must hold no RBAC denial."""
    started: dict[str, AgentProcess] = {}

    def start(node: str) -> AgentProcess:
        agent = started.get(node)
        if agent is None:
            root = tmp_path / node
            root.mkdir(exist_ok=True)
            agent = AgentProcess(node, root, tmp_path / f"{node}.log")
            started[node] = agent
        assert agent.proc is None, f"agent for {node} already runs"
        env = os.environ | {
            "KUBECONFIG": str(agent_kubeconfig),
            "DTRTRUST_NAMESPACE": NS,
            "DTRTRUST_AGENT_RESYNC_SECONDS": "2",
            "DTRTRUST_AGENT_BACKOFF_SECONDS": "0.5",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        out = agent.log.open("ab")
        agent.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dtrtrust.cli",
                "agent",
                "--node-name",
                node,
                "--host-root",
                str(agent.host_root),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        out.close()
        return agent

    yield start
    for agent in started.values():
        agent.stop()
    for agent in started.values():
        text = agent.log_text()
        # "403 Forbidden" as the API layer words it; a bare "403" also occurs in hashes.
        denied = [line for line in text.splitlines() if re.search(r"\b403\b|Forbidden", line)]
        assert denied == [], f"agent {agent.node} hit RBAC denials:\n" + "\n".join(denied[:20])
        assert "Traceback" not in text, f"agent {agent.node} crashed:\n{text[-3000:]}"


@pytest.fixture
def trusts(custom: client.CustomObjectsApi) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(name: str, **spec: Any) -> str:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DTRTrust",
            "metadata": {"name": name},
            "spec": {
                "registry": REGISTRY,
                "ca": {"pem": CA.cert_pem.decode()},
                # REGISTRY does not exist: neither the operator nor the agents can reach it.
                "verify": {"tls": False, "nodes": False},
                **spec,
            },
        }
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
        made.append(name)
        return name

    yield make
    for name in made:
        delete_trust(custom, name)


def delete_trust(custom: client.CustomObjectsApi, name: str) -> None:
    try:
        custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def patch_spec(custom: client.CustomObjectsApi, name: str, spec: dict[str, Any]) -> None:
    custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, {"spec": spec})


def eventually(check: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen within {deadline:.0f} s (last: {last!r})", pytrace=False)


def ready(custom: client.CustomObjectsApi, name: str, summary: str) -> dict[str, Any]:
    """Wait until Ready=True for the current generation with status.nodes.summary."""

    seen: list[Any] = []

    def check() -> dict[str, Any] | None:
        obj = dict(custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name))
        seen[:] = [obj.get("status")]
        status = obj.get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions") or []}
        if (
            status.get("observedGeneration") == obj["metadata"]["generation"]
            and conds.get("Ready", {}).get("status") == "True"
            and (status.get("nodes") or {}).get("summary") == summary
        ):
            return obj
        return None

    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        obj = check()
        if obj is not None:
            return obj
        time.sleep(0.1)
    pytest.fail(f"{name} not Ready with nodes {summary}; status: {seen}", pytrace=False)


def cert_dir(agent: AgentProcess, address: str = REGISTRY, target: str = "docker") -> Path:
    roots = {
        "docker": "etc/docker/certs.d",
        "containers": "etc/containers/certs.d",
        "containerd": "etc/containerd/certs.d",
    }
    return agent.host_root / roots[target] / address


def report(custom: client.CustomObjectsApi, node: str) -> dict[str, dict[str, str]]:
    try:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "dtrtrustnodes", node)
    except ApiException as exc:
        if exc.status == 404:
            return {}
        raise
    return {t["name"]: t for t in (obj.get("status") or {}).get("trusts") or []}


# --------------------------------------------------------------------------------- flows


def test_files_follow_the_trust_aliases_and_node_selector_and_go_with_the_trust(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    nodes: Callable[..., str],
    agents: Callable[[str], AgentProcess],
    trusts: Callable[..., str],
    run_id: str,
) -> None:
    n1, n2 = nodes("a", role="build"), nodes("b", role="build")
    a1, a2 = agents(n1), agents(n2)
    name = trusts(
        f"agent-flow-{run_id}",
        targets=["docker", "containers"],
        nodeSelector={"dtrtrust-test": run_id, "role": "build"},
    )
    obj = ready(custom, name, "2/2")
    assert obj["status"]["nodes"]["outOfSync"] == []
    for agent in (a1, a2):
        assert (cert_dir(agent) / "ca.crt").read_bytes() == CA.cert_pem
        assert (cert_dir(agent, target="containers") / "ca.crt").read_bytes() == CA.cert_pem
    content_hash = obj["status"]["bundle"]["sha256"]
    assert report(custom, n1)[name]["contentHash"] == content_hash
    assert report(custom, n1)[name]["state"] == "Synced"

    # An alias adds a directory on every node.
    patch_spec(custom, name, {"aliases": ["10.0.0.5:4443"]})
    for agent in (a1, a2):
        alias_ca = cert_dir(agent, "10.0.0.5:4443") / "ca.crt"
        eventually(alias_ca.exists, "alias dir")
    ready(custom, name, "2/2")

    # n2 stops matching the selector: its files go, the trust counts one node.
    core.patch_node(n2, {"metadata": {"labels": {"role": "web"}}})
    # The writer removes one directory after the other: wait for the last one too.
    eventually(
        lambda: not cert_dir(a2).exists() and not cert_dir(a2, "10.0.0.5:4443").exists(),
        f"files removed from {n2}",
    )
    ready(custom, name, "1/1")
    assert (cert_dir(a1) / "ca.crt").exists()

    # Deleting the trust (deletionPolicy Delete, the default) removes the files.
    delete_trust(custom, name)
    eventually(
        lambda: not cert_dir(a1).exists() and not cert_dir(a1, "10.0.0.5:4443").exists(),
        f"files removed from {n1}",
    )
    eventually(lambda: report(custom, n1).get(name, {}).get("state") == "Removed", "Removed")


def test_retain_keeps_the_files_after_the_trust_is_deleted(
    custom: client.CustomObjectsApi,
    nodes: Callable[..., str],
    agents: Callable[[str], AgentProcess],
    trusts: Callable[..., str],
    run_id: str,
) -> None:
    node = nodes("r")
    agent = agents(node)
    name = trusts(
        f"agent-retain-{run_id}",
        nodeSelector={"dtrtrust-test": run_id},
        deletionPolicy="Retain",
    )
    ready(custom, name, "1/1")
    delete_trust(custom, name)
    eventually(lambda: report(custom, node).get(name, {}).get("state") == "Retained", "Retained")
    assert (cert_dir(agent) / "ca.crt").read_bytes() == CA.cert_pem


def test_trust_deleted_while_the_agent_was_down_is_cleaned_when_it_starts(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    nodes: Callable[..., str],
    agents: Callable[[str], AgentProcess],
    trusts: Callable[..., str],
    run_id: str,
) -> None:
    node = nodes("d")
    agent = agents(node)
    name = trusts(f"agent-down-{run_id}", nodeSelector={"dtrtrust-test": run_id})
    ready(custom, name, "1/1")
    agent.stop()
    delete_trust(custom, name)

    def secret_gone() -> bool:
        try:
            core.read_namespaced_secret(f"dtrtrust-{name}", NS)
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    eventually(secret_gone, "bundle Secret garbage-collected", deadline=60)
    assert (cert_dir(agent) / "ca.crt").exists()  # nobody touched the node meanwhile
    agents(node)
    eventually(lambda: not cert_dir(agent).exists(), "files removed after restart")


def test_foreign_file_is_restored_when_the_trust_goes_and_drift_is_repaired(
    custom: client.CustomObjectsApi,
    nodes: Callable[..., str],
    agents: Callable[[str], AgentProcess],
    trusts: Callable[..., str],
    run_id: str,
) -> None:
    node = nodes("f")
    agent = agents(node)
    foreign = b"-----BEGIN CERTIFICATE-----\nput there by hand\n-----END CERTIFICATE-----\n"
    cert_dir(agent).mkdir(parents=True)
    (cert_dir(agent) / "ca.crt").write_bytes(foreign)
    name = trusts(f"agent-foreign-{run_id}", nodeSelector={"dtrtrust-test": run_id})
    ready(custom, name, "1/1")
    assert (cert_dir(agent) / "ca.crt").read_bytes() == CA.cert_pem

    # A hand-deleted file is back within a resync period (2 s for the test agents).
    (cert_dir(agent) / "ca.crt").unlink()
    eventually(lambda: (cert_dir(agent) / "ca.crt").exists(), "ca.crt restored", deadline=10)
    assert (cert_dir(agent) / "ca.crt").read_bytes() == CA.cert_pem

    delete_trust(custom, name)
    eventually(
        lambda: (cert_dir(agent) / "ca.crt").read_bytes() == foreign, "foreign ca.crt restored"
    )


def test_containerd_without_config_path_makes_nodes_synced_not_effective(
    custom: client.CustomObjectsApi,
    nodes: Callable[..., str],
    agents: Callable[[str], AgentProcess],
    trusts: Callable[..., str],
    tmp_path: Path,
    run_id: str,
) -> None:
    node = nodes("c")
    config = tmp_path / node / "etc" / "containerd" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n')
    agents(node)
    name = trusts(
        f"agent-ctrd-{run_id}", targets=["containerd"], nodeSelector={"dtrtrust-test": run_id}
    )

    def not_effective() -> dict[str, Any] | None:
        obj = dict(custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name))
        conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        synced = conds.get("NodesSynced", {})
        return synced if synced.get("reason") == "NotEffective" else None

    cond = eventually(not_effective, "NodesSynced NotEffective")
    assert node in cond["message"]
    assert "config_path" in cond["message"]

    # The admin fixes containerd's config: the next resync makes the trust Ready.
    config.write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
        'config_path = "/etc/containerd/certs.d"\n'
    )
    ready(custom, name, "1/1")


def test_operator_keeps_the_agent_daemonset_in_place_and_repairs_drift(
    kube_admin: Any, dtrtrust_operator: OperatorProcess
) -> None:
    apps = client.AppsV1Api(kube_admin)
    ds = eventually(lambda: _daemonset(apps), "agent DaemonSet created")
    container = ds.spec.template.spec.containers[0]
    assert container.security_context.read_only_root_filesystem is True
    container.image = "evil.example/agent:1"
    apps.replace_namespaced_daemon_set("dtrtrust-agent", NS, ds)

    def repaired() -> bool:
        live = _daemonset(apps)
        return live is not None and live.spec.template.spec.containers[0].image != (
            "evil.example/agent:1"
        )

    eventually(repaired, "DaemonSet image repaired at the operator's resync", deadline=20)


def _daemonset(apps: client.AppsV1Api) -> Any:
    try:
        return apps.read_namespaced_daemon_set("dtrtrust-agent", NS)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


@pytest.mark.registry
def test_skopeo_pulls_from_the_dtr_like_registry_with_the_files_the_agent_wrote(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    nodes: Callable[..., str],
    agents: Callable[[str], AgentProcess],
    trusts: Callable[..., str],
    run_id: str,
    dtr_stack: Any,
    skopeo: Any,
    tmp_path: Path,
) -> None:
    from e2e.helpers import skopeo_pull

    secret_name = f"client-{run_id}"
    core.create_namespaced_secret(
        NS,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=secret_name),
            type="kubernetes.io/tls",
            data={
                "tls.crt": base64.b64encode(dtr_stack.client_cert.read_bytes()).decode(),
                "tls.key": base64.b64encode(dtr_stack.client_key.read_bytes()).decode(),
            },
        ),
    )
    try:
        node = nodes("p")
        agent = agents(node)
        name = trusts(
            f"agent-pull-{run_id}",
            registry=dtr_stack.address,
            ca={"fetch": {"pinnedSHA256": [dtr_stack.root_sha256]}},
            verify={"tls": True, "clientAuth": True},
            clientCertificate={"secretRef": {"name": secret_name}},
            targets=["containers"],
            nodeSelector={"dtrtrust-test": run_id},
        )
        ready(custom, name, "1/1")
        files = cert_dir(agent, dtr_stack.address, "containers")
        assert sorted(p.name for p in files.iterdir()) == ["ca.crt", "client.cert", "client.key"]
        work = tmp_path / "pull"
        work.mkdir()
        result, layer = skopeo_pull(skopeo, files, dtr_stack.image_ref(), work)
        assert result.returncode == 0, result.stderr
        assert layer
    finally:
        core.delete_namespaced_secret(secret_name, NS)


# ------------------------------------------------------------------- the startup taint

TAINT = {"key": "dtrtrust.io/not-ready", "effect": "NoSchedule"}
OTHER_TAINT = {"key": "example.com/maintenance", "value": "yes", "effect": "NoSchedule"}


def taint_keys(core: client.CoreV1Api, node: str) -> list[str]:
    return [t.key for t in core.read_node(node).spec.taints or []]


def test_startup_taint_is_removed_only_once_the_trust_is_in_place_and_effective(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    nodes: Callable[..., str],
    agents: Callable[[str], AgentProcess],
    trusts: Callable[..., str],
    tmp_path: Path,
    run_id: str,
) -> None:
    node = nodes("t")
    core.patch_node(node, {"spec": {"taints": [TAINT, OTHER_TAINT]}})
    config = tmp_path / node / "etc" / "containerd" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n')
    name = trusts(
        f"agent-taint-{run_id}", targets=["containerd"], nodeSelector={"dtrtrust-test": run_id}
    )
    agent = agents(node)

    # Written but not effective (no config_path): the report says so, and the agent
    # decided about the taint before it published that report, so the taint must stay.
    eventually(
        lambda: report(custom, node).get(name, {}).get("state") == "NotEffective",
        "NotEffective reported",
    )
    assert (cert_dir(agent, target="containerd") / "hosts.toml").is_file()
    assert TAINT["key"] in taint_keys(core, node)

    config.write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
        'config_path = "/etc/containerd/certs.d"\n'
    )
    eventually(lambda: TAINT["key"] not in taint_keys(core, node), "startup taint removed")
    # The agent removes the taint right after the sync that made the trust effective and
    # publishes that report just after.
    eventually(lambda: report(custom, node)[name]["state"] == "Synced", "Synced reported")
    assert (cert_dir(agent, target="containerd") / "ca.crt").is_file()
    taints = core.read_node(node).spec.taints or []
    assert [(t.key, t.value, t.effect) for t in taints if t.key == OTHER_TAINT["key"]] == [
        (OTHER_TAINT["key"], "yes", "NoSchedule")
    ]


def test_taint_patch_with_stale_taints_changes_nothing(
    core: client.CoreV1Api, nodes: Callable[..., str], agent_kubeconfig: Path
) -> None:
    import pykube

    from dtrtrust.kube.node import Conflict, NodeApi

    node = nodes("s")
    core.patch_node(node, {"spec": {"taints": [TAINT]}})
    api = NodeApi(NS, node, pykube.KubeConfig.from_file(str(agent_kubeconfig)))
    seen, _rv = api.list_node()
    assert seen is not None
    stale = list(seen["spec"]["taints"])
    # Another controller adds a taint after the agent read the Node.
    core.patch_node(node, {"spec": {"taints": [TAINT, OTHER_TAINT]}})
    with pytest.raises(Conflict):
        api.remove_taint(stale, TAINT["key"])
    assert taint_keys(core, node) == [TAINT["key"], OTHER_TAINT["key"]]
    fresh, _rv = api.list_node()
    assert fresh is not None
    api.remove_taint(list(fresh["spec"]["taints"]), TAINT["key"])
    assert taint_keys(core, node) == [OTHER_TAINT["key"]]


# ------------------------------------------------------------------------- lifecycle


def test_deleted_node_object_touches_no_files_and_a_deleted_report_comes_back(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    nodes: Callable[..., str],
    agents: Callable[[str], AgentProcess],
    trusts: Callable[..., str],
    run_id: str,
) -> None:
    node = nodes("d")
    agent = agents(node)
    name = trusts(f"agent-life-{run_id}", nodeSelector={"dtrtrust-test": run_id})
    eventually(lambda: (cert_dir(agent) / "ca.crt").is_file(), "files written")
    eventually(lambda: report(custom, node).get(name), "report written")

    # Someone deletes the report: the next resync writes it again.
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, "dtrtrustnodes", node)
    eventually(lambda: report(custom, node).get(name), "report written again")

    # The Node object goes away (as in a cloud provider's replace): unknown, not empty.
    core.delete_node(node)
    eventually(lambda: "does not exist" in agent.log_text(), "the agent saw the Node go")
    eventually(lambda: agent.log_text().count("touching no files") >= 1, "the agent held")
    assert (cert_dir(agent) / "ca.crt").is_file()
    assert "removed" not in agent.log_text().split("does not exist", 1)[1]


def test_a_node_that_cannot_reach_the_registry_is_nodes_verified_unreachable(
    custom: client.CustomObjectsApi,
    nodes: Callable[..., str],
    agents: Callable[[str], AgentProcess],
    trusts: Callable[..., str],
    run_id: str,
) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: the node's probe cannot connect
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    node = nodes("u")
    agents(node)
    name = trusts(
        f"agent-probe-{run_id}",
        registry=closed,
        targets=["containers"],
        verify={"tls": False, "nodes": True},
        nodeSelector={"dtrtrust-test": run_id},
    )

    def unreachable() -> dict[str, Any] | None:
        obj = dict(custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name))
        conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        cond = conds.get("NodesVerified", {})
        return (
            {**cond, "ready": conds.get("Ready")} if cond.get("reason") == "Unreachable" else None
        )

    cond = eventually(unreachable, "NodesVerified Unreachable")
    assert cond["status"] == "False"
    assert node in cond["message"]
    assert cond["ready"]["status"] == "False"  # never "fine"
    entry: dict[str, Any] = report(custom, node)[name]  # the probe is a nested object
    assert (entry["probe"]["reachable"], entry["probe"]["tlsVerified"]) == (False, False)
    assert report(custom, node)[name]["state"] == "Synced"  # the files are in place


# ------------------------------------------- tampered and deleted bundle Secrets
# The agent installs only what the operator published and removes files only when the
# trust is really gone. The operator may repair the Secret at any moment, so what the
# agent did is read from its log (every write and removal is logged), never from timing.


def _secret_data(core: client.CoreV1Api, name: str) -> dict[str, str] | None:
    try:
        return dict(core.read_namespaced_secret(f"dtrtrust-{name}", NS).data or {})
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _file_state(agent: AgentProcess) -> tuple[bytes, int, int]:
    path = cert_dir(agent) / "ca.crt"
    st = path.stat()
    return path.read_bytes(), st.st_ino, st.st_mtime_ns


def test_a_hand_edited_bundle_secret_is_refused_and_the_node_keeps_its_files(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    nodes: Callable[..., str],
    agents: Callable[[str], AgentProcess],
    trusts: Callable[..., str],
    run_id: str,
) -> None:
    node = nodes("t")
    agent = agents(node)
    name = trusts(f"agent-tamper-{run_id}", nodeSelector={"dtrtrust-test": run_id})
    ready(custom, name, "1/1")
    before = _file_state(agent)
    assert before[0] == CA.cert_pem

    garbage = base64.b64encode(b"garbage, not a certificate\n").decode()
    core.patch_namespaced_secret(f"dtrtrust-{name}", NS, {"data": {"ca.crt": garbage}})

    # The operator may repair the Secret before the agent reconciles the edit; then there
    # is nothing to refuse, but nothing may have been written either.
    eventually(
        lambda: (
            "does not match its dtrtrust.io/content-hash" in agent.log_text()
            or (_secret_data(core, name) or {}).get("ca.crt") != garbage
        ),
        "the agent refusing the edited Secret",
    )
    assert _file_state(agent) == before
    writes = [
        line
        for line in agent.log_text().splitlines()
        if f"trust {name} (" in line and "wrote" in line
    ]
    assert len(writes) == 1, writes  # the first sync only; the garbage was never written


def test_a_deleted_bundle_secret_of_an_existing_trust_removes_nothing(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    nodes: Callable[..., str],
    agents: Callable[[str], AgentProcess],
    trusts: Callable[..., str],
    run_id: str,
) -> None:
    node = nodes("s")
    agent = agents(node)
    name = trusts(f"agent-nosecret-{run_id}", nodeSelector={"dtrtrust-test": run_id})
    ready(custom, name, "1/1")
    before = _file_state(agent)

    core.delete_namespaced_secret(f"dtrtrust-{name}", NS)

    # The operator may publish it again before the agent reconciles the deletion.
    eventually(
        lambda: (
            f"missing while DTRTrust {name} exists" in agent.log_text()
            or _secret_data(core, name) is not None
        ),
        "the agent noticing the missing Secret",
    )
    assert _file_state(agent) == before
    assert f"trust {name}: the trust is gone" not in agent.log_text()

    # Only the trust's own deletion removes the files.
    delete_trust(custom, name)
    eventually(lambda: not cert_dir(agent).exists(), f"files removed from {node}")
