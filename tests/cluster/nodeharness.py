"""A real single-node Kubernetes cluster on this machine: the control plane of
``kubeharness.LocalCluster`` plus kube-scheduler, a kubelet on containerd's CRI (runc, the
bridge CNI) and kube-proxy in iptables mode. Used by tests/cluster, ``make kube-up`` and
``make demo-cluster``.

    cluster = NodeCluster(run_dir, kubeharness.find_binaries(), images)
    cluster.start()          # ~30-60 s; raises HarnessError with the log tail on failure
    ...                      # kubectl --kubeconfig cluster.kubeconfig apply -k ...
    cluster.stop()           # or stop_from_state(run_dir) from another process

Where everything is (see ARCHITECTURE.md, "The real-node tier"):

* **Addresses.** The harness creates the bridge ``dtrtrust0`` with 10.213.0.1/24 (a private,
  RFC 1918 range picked for this harness alone; the start refuses if the machine already
  routes it). That address is the node's IP, the API server's bind and advertise address
  (kubelet refuses a loopback node IP, and pods reach the API server through the
  ``kubernetes`` Service, whose endpoint it is) and the DTR-like registry's. Pods get
  10.213.0.10-250 on the bridge, with a route to the Service range 10.213.1.0/24 and
  nothing else: no default route, so a pod can dial only the bridge and Services. That
  range is "unreachable" in the host's routing table and forwarded packets from the pods to
  anywhere else are dropped, so nothing leaves the machine before kube-proxy's DNAT rules
  exist either. Every other port (etcd, controller-manager, scheduler, kube-proxy, kubelet
  health, containerd's streaming server) is on 127.0.0.1.
* **The node's own directories.** kubelet and containerd run in a private mount namespace
  in which the node's ``/etc/containerd``, ``/etc/docker``, ``/etc/containers``,
  ``/root/.docker``, ``/var/lib``, ``/var/log`` and ``/run/containerd`` are directories of
  the run dir (``node-root/``) bind-mounted over the host's. So the agent's hostPath volumes
  (``/etc/containerd/certs.d`` ...) and containerd's ``config_path`` meet in the run dir,
  containerd runs with its default paths and ``/etc/containerd/config.toml`` (which the
  agent reads), and the host's own files are never touched. Mount points that the host
  lacks (``/run/containerd``, ``/root/.docker``) are created empty and removed again.
* **Cleanup.** ``stop`` ends exactly what ``start`` started, by PID (recorded in
  ``run_dir/node.json``): the components, then the containers (the processes in the
  kubelet's ``kubepods`` cgroups) and containerd's shims (the processes in the node's mount
  namespace), then the namespace itself, which takes every mount and pod network namespace
  with it. It removes the iptables rules and chains that were not there before the start
  (kube-proxy's, kubelet's, the harness's own), the route, the bridge and the empty
  cgroups, and puts back the sysctls that kubelet and kube-proxy change.

Two settings this machine needs (measured, see issue 11): containerd's CRI runs with
``restrict_oom_score_adj = true`` (the VM withholds CAP_SYS_RESOURCE even from root, so runc
could not set the pause container's oom_score_adj), and kubelet with
``AWS_EC2_METADATA_DISABLED=true`` (its built-in AWS credential provider dials the cloud
metadata address at start-up otherwise). ``EgressWatch`` checks that no process of the node
ever holds a socket to an address other than loopback, the bridge and the Service range.

There is no cluster DNS (Debian ships no CoreDNS): in-cluster clients find the API server
through ``KUBERNETES_SERVICE_HOST``/``_PORT``, which kopf and pykube-ng honour, and pods get
a resolv.conf naming only 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubeharness
import yaml
from kubeharness import Component, HarnessError, HarnessUnavailable, LocalCluster

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NODE_NAME = "dtrtrust-node"
#: Where the one node cluster of this machine records its run dir (one bridge, one node).
ACTIVE_FILE = Path("/run/dtrtrust-node-cluster.json")
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback")
NODE_CONTROLLERS = (
    kubeharness.CONTROLLERS
    + ",deployment,replicaset,endpoint,endpointslice,endpointslicemirroring,nodelifecycle,podgc"
)
#: The sysctls kubelet (kernel tunables) and kube-proxy (route_localnet) may change, plus
#: forwarding, which the harness never turns on: put back as they were on stop.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
#: The node's private directories, bind-mounted from the run dir in its mount namespace:
#: where the agent's hostPath volumes, containerd and kubelet keep their files.
NODE_DIRS = (
    "/etc/containerd",
    "/etc/docker",
    "/etc/containers",
    "/root/.docker",
    "/var/lib",
    "/var/log",
    "/run/containerd",
)
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
TOOLS = ("ip", "iptables", "iptables-save", "ip6tables-save", "nsenter", "unshare", "mount")


@dataclass(frozen=True)
class NodeNetwork:
    """The bridge and address ranges the harness creates and owns."""

    bridge: str = "dtrtrust0"
    # 10.213.0.0/16 is private (RFC 1918) and used by nothing else here: the harness
    # creates the bridge with the first address and checks that no route covers the
    # ranges before it does.
    pod_cidr: str = "10.213.0.0/24"
    service_cidr: str = "10.213.1.0/24"

    @property
    def node_ip(self) -> str:
        return str(ipaddress.ip_network(self.pod_cidr).network_address + 1)

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.pod_cidr).prefixlen

    @property
    def service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr).network_address + 1)

    def allowed(self, address: str) -> bool:
        """Whether a node process may talk to ``address``."""
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return (
            ip.is_loopback
            or ip.is_unspecified
            or ip in ipaddress.ip_network(self.pod_cidr)
            or ip in ipaddress.ip_network(self.service_cidr)
        )


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    kube_proxy: Path
    scheduler: Path
    containerd: Path
    ctr: Path
    runc: Path


def find_node_binaries(kube: kubeharness.KubeBinaries) -> NodeBinaries:
    """kubelet, kube-proxy and kube-scheduler beside the API server (hack/kube/build.sh
    builds all five), containerd, ctr and runc from Debian."""
    bin_dir = kube.apiserver.parent
    missing = [b for b in ("kubelet", "kube-proxy", "kube-scheduler") if not _exe(bin_dir / b)]
    if missing:
        raise HarnessUnavailable(
            f"{', '.join(missing)} not built in {bin_dir}: run `make kube-binaries`"
        )
    found = {name: _which(name) for name in ("containerd", "ctr", "runc", *TOOLS)}
    absent = [n for n, p in found.items() if p is None]
    absent += [f"{CNI_BIN_DIR}/{p}" for p in CNI_PLUGINS if not _exe(CNI_BIN_DIR / p)]
    if absent:
        raise HarnessUnavailable(
            f"missing {', '.join(absent)}: run `make node-deps` "
            "(hack/install-system-deps.sh --node)"
        )
    return NodeBinaries(
        kubelet=bin_dir / "kubelet",
        kube_proxy=bin_dir / "kube-proxy",
        scheduler=bin_dir / "kube-scheduler",
        containerd=Path(str(found["containerd"])),
        ctr=Path(str(found["ctr"])),
        runc=Path(str(found["runc"])),
    )


def _exe(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 60) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout}")
    return done.stdout


# --- state: everything stop needs, on disk ------------------------------------------------


@dataclass
class NodeState:
    run_dir: str
    network: dict[str, str]
    bridge_created: bool = False
    route_added: bool = False
    forward_rule: bool = False
    iptables_before: dict[str, str] = field(default_factory=dict)
    sysctls_before: dict[str, str] = field(default_factory=dict)
    mountpoints_created: list[str] = field(default_factory=list)
    holder: dict[str, Any] = field(default_factory=dict)
    processes: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> NodeState:
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=2) + "\n")
        tmp.rename(path)


# --- the cluster --------------------------------------------------------------------------


class NodeCluster:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet and
    kube-proxy under ``run_dir``: one Linux node named ``dtrtrust-node``."""

    def __init__(
        self,
        run_dir: Path,
        kube: kubeharness.KubeBinaries,
        *,
        pause_image: str,
        import_archives: Sequence[Path] = (),
        network: NodeNetwork | None = None,
    ) -> None:
        self.run_dir = run_dir.resolve()
        self.kube = kube
        self.binaries = find_node_binaries(kube)
        self.pause_image = pause_image
        self.import_archives = list(import_archives)
        self.network = network or NodeNetwork()
        self.node_root = self.run_dir / "node-root"
        self.logs = self.run_dir / "logs"
        self.components: list[Component] = []
        self.timings: dict[str, float] = {}
        self.control_plane = LocalCluster(
            self.run_dir / "control-plane",
            kube,
            options=kubeharness.ControlPlaneOptions(
                address=self.network.node_ip,
                service_cidr=self.network.service_cidr,
                authorization_mode="Node,RBAC",
                admission_args=("--enable-admission-plugins=NodeRestriction",),
                endpoint_reconciler="lease",
                controllers=NODE_CONTROLLERS,
                apiserver_args=self._apiserver_args,
            ),
        )
        self.state = NodeState(
            run_dir=str(self.run_dir),
            network={
                "bridge": self.network.bridge,
                "pod_cidr": self.network.pod_cidr,
                "service_cidr": self.network.service_cidr,
            },
        )

    # -- paths and clients

    @property
    def state_file(self) -> Path:
        return self.run_dir / "node.json"

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def server(self) -> str:
        return self.control_plane.server

    @property
    def containerd_socket(self) -> Path:
        """containerd's socket as the host sees it (the node sees /run/containerd/...)."""
        return self.node_root / CONTAINERD_SOCKET.lstrip("/")

    def node_path(self, path: str) -> Path:
        """Where the node's ``path`` (under one of its private directories) is on the host."""
        for node_dir in NODE_DIRS:
            if path == node_dir or path.startswith(node_dir + "/"):
                return self.node_root / path.lstrip("/")
        raise ValueError(f"{path} is not one of the node's private directories")

    def ctr(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        """``ctr -n k8s.io`` against the node's containerd."""
        argv = [str(self.binaries.ctr), "--address", str(self.containerd_socket)]
        return _run([*argv, "-n", "k8s.io", *args], timeout=timeout, check=check)

    def import_image(self, archive: Path, *, timeout: float = 300) -> tuple[str, str]:
        """``ctr images import`` an OCI archive into the CRI's namespace, and name it by
        digest too (``repo@sha256:...``): the CRI resolves a reference by digest only through
        such a name, which a pull records but an import does not. Returns (name, digest)."""
        name, digest = archive_image(archive)
        self.ctr("images", "import", str(archive), timeout=timeout)
        repository = name.rpartition(":")[0] if ":" in name.rpartition("/")[2] else name
        self.ctr("images", "tag", "--force", name, f"{repository}@{digest}")
        return name, digest

    def _save(self) -> None:
        self.state.processes = [
            {"name": c.name, "pid": c.pid, "exe": _exe_of(c)} for c in self.components
        ]
        self.state.save(self.state_file)

    # -- start

    def start(self, *, timeout: float = 240.0, tie_to_parent: bool = True) -> None:
        """Start the node and wait until it is Ready and kube-proxy routes the ``kubernetes``
        Service. Stops whatever it started if anything fails."""
        if os.geteuid() != 0:
            raise HarnessUnavailable("the real-node cluster needs root (bridge, iptables, mounts)")
        _claim_machine(self.run_dir)
        try:
            self._start(timeout, tie_to_parent)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float, tie_to_parent: bool) -> None:
        deadline = time.monotonic() + timeout

        def remaining() -> float:
            return max(deadline - time.monotonic(), 1.0)

        began = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._snapshot_host()
        self._setup_network()
        self._setup_namespace(tie_to_parent)
        self.timings["network+namespace"] = time.monotonic() - began

        t = time.monotonic()
        self.control_plane.start(timeout=remaining(), tie_to_parent=tie_to_parent)
        self.state.processes = []  # control-plane PIDs are in its own cluster.json
        self.timings["control plane"] = time.monotonic() - t

        t = time.monotonic()
        pki = self.control_plane.pki
        self._write_cni_config()
        self._start_containerd(tie_to_parent, remaining())
        for archive in self.import_archives:
            self.import_image(archive, timeout=remaining())
        self.timings["containerd+images"] = time.monotonic() - t

        t = time.monotonic()
        self._start_kubelet(pki, tie_to_parent)
        self._start_kube_proxy(pki, tie_to_parent)
        self._start_scheduler(pki, tie_to_parent)
        self._wait_node_ready(remaining())
        self._wait_service_routed(remaining())
        kubeharness.wait_until(
            lambda: https_ok(f"https://127.0.0.1:{self.scheduler_port}/healthz"),
            self._component("kube-scheduler"),
            "healthy",
            remaining(),
        )
        self.timings["node ready"] = time.monotonic() - t
        self.timings["total"] = time.monotonic() - began

    def _apiserver_args(self, pki: kubeharness.Pki) -> list[str]:
        crt, key = kubeharness.issue_client_cert(
            pki, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"
        )
        return [
            f"--kubelet-client-certificate={crt}",
            f"--kubelet-client-key={key}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _snapshot_host(self) -> None:
        for tool in ("iptables", "ip6tables"):
            self.state.iptables_before[tool] = _run([f"{tool}-save"])
        for name in SYSCTLS:
            with contextlib.suppress(OSError):
                self.state.sysctls_before[name] = Path("/proc/sys", name).read_text().strip()
        self.state.save(self.state_file)

    def _setup_network(self) -> None:
        net = self.network
        routes = _run(["ip", "-4", "route", "show", "table", "all"])
        for cidr in (net.pod_cidr, net.service_cidr):
            mine = ipaddress.ip_network(cidr)
            for line in routes.splitlines():
                dst = line.split()[0] if line.split() else ""
                if dst in ("default", "broadcast", "local", "unreachable", "multicast"):
                    dst = line.split()[1] if len(line.split()) > 1 else ""
                with contextlib.suppress(ValueError):
                    if (
                        dst
                        and dst != "default"
                        and ipaddress.ip_network(dst, strict=False).overlaps(mine)
                    ):
                        raise HarnessError(
                            f"{cidr} is already routed on this machine ({line.strip()}); the "
                            "node tier needs it to itself"
                        )
        _run(["ip", "link", "add", net.bridge, "type", "bridge"])
        self.state.bridge_created = True
        self.state.save(self.state_file)
        _run(["ip", "addr", "add", f"{net.node_ip}/{net.prefix}", "dev", net.bridge])
        _run(["ip", "link", "set", net.bridge, "up"])
        # ClusterIPs exist only as kube-proxy's DNAT rules; a packet to one that no rule
        # catches must not follow the default route off the machine.
        _run(["ip", "route", "add", "unreachable", net.service_cidr])
        self.state.route_added = True
        self.state.save(self.state_file)
        # Pods never need forwarding (their traffic ends on this host): drop any attempt.
        _run(["iptables", "-N", "DTRTRUST-NODE"])
        _run(["iptables", "-I", "FORWARD", "1", "-j", "DTRTRUST-NODE"])
        self.state.forward_rule = True
        self.state.save(self.state_file)
        _run(
            [
                "iptables",
                "-A",
                "DTRTRUST-NODE",
                "-s",
                net.pod_cidr,
                "!",
                "-d",
                net.pod_cidr,
                "-m",
                "comment",
                "--comment",
                "dtrtrust node tier: pods talk only to the bridge and Services",
                "-j",
                "DROP",
            ]
        )

    def _setup_namespace(self, tie_to_parent: bool) -> None:
        for node_dir in NODE_DIRS:
            host = Path(node_dir)
            if not host.is_dir():  # a mount point the host lacks: created empty, removed on stop
                host.mkdir(parents=True)
                self.state.mountpoints_created.append(node_dir)
                self.state.save(self.state_file)
            (self.node_root / node_dir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        unshare = str(_which("unshare"))
        sleep = str(_which("sleep"))
        holder = Component(
            "node-namespace",
            [unshare, "--mount", "--propagation", "private", "--", sleep, "infinity"],
            self.logs / "node-namespace.log",
        )
        holder.start(tie_to_parent=tie_to_parent)
        assert holder.proc is not None
        own_ns = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 10
        ns = own_ns
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                ns = os.readlink(f"/proc/{holder.proc.pid}/ns/mnt")
                exe = os.readlink(f"/proc/{holder.proc.pid}/exe")
                if ns != own_ns and Path(exe).resolve() == Path(sleep).resolve():
                    break
            time.sleep(0.02)
        else:
            raise holder.failure("did not enter its own mount namespace")
        self.state.holder = {"pid": holder.proc.pid, "exe": sleep, "mnt_ns": ns}
        self.state.save(self.state_file)
        self.holder = holder
        for node_dir in NODE_DIRS:
            self._in_node(["mount", "--bind", str(self.node_root / node_dir.lstrip("/")), node_dir])

    def _in_node(self, argv: Sequence[str]) -> str:
        return _run([str(_which("nsenter")), "-t", str(self.holder_pid), "-m", "--", *argv])

    @property
    def holder_pid(self) -> int:
        return int(self.state.holder["pid"])

    def _node_component(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Component:
        """A component that runs in the node's mount namespace (nsenter execs it: the PID is
        the binary's own)."""
        nsenter = [str(_which("nsenter")), "-t", str(self.holder_pid), "-m", "--"]
        return Component(name, [*nsenter, *argv], self.logs / f"{name}.log", env=env)

    def _write_cni_config(self) -> None:
        net = self.network
        first = ipaddress.ip_network(net.pod_cidr).network_address
        conf = {
            "cniVersion": "0.4.0",
            "name": "dtrtrust-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": net.bridge,
                    # The harness gave the bridge its address; no gateway route, no
                    # masquerading and no forwarding: pods reach only the bridge and the
                    # Service range (routed to the node's address, where kube-proxy's DNAT
                    # sends it to the API server).
                    "isGateway": False,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(self.run_dir / "cni" / "ipam"),
                        "ranges": [
                            [
                                {
                                    "subnet": net.pod_cidr,
                                    "rangeStart": str(first + 10),
                                    "rangeEnd": str(first + 250),
                                    "gateway": net.node_ip,
                                }
                            ]
                        ],
                        "routes": [{"dst": net.service_cidr, "gw": net.node_ip}],
                    },
                }
            ],
        }
        conf_dir = self.run_dir / "cni" / "net.d"
        conf_dir.mkdir(parents=True, exist_ok=True)
        (conf_dir / "10-dtrtrust-node.conflist").write_text(json.dumps(conf, indent=2) + "\n")

    def containerd_config(self) -> str:
        """The node's /etc/containerd/config.toml (TOML by hand: a handful of fixed keys)."""
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""# The dtrtrust node tier's containerd (tests/cluster/nodeharness.py).
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[ttrpc]
  address = "{CONTAINERD_SOCKET}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"

[{cri}]
  sandbox_image = "{self.pause_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # This VM withholds CAP_SYS_RESOURCE even from root: without this, runc fails to give
  # the pause container its oom_score_adj and every sandbox fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # Pod network namespaces under /run/containerd, which is the node's own.
  netns_mounts_under_state_dir = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{self.binaries.runc}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{self.run_dir / "cni" / "net.d"}"
  max_conf_num = 1

# Where dtrtrust's agent writes hosts.toml and the certificates (its hostPath volume).
[{cri}.registry]
  config_path = "/etc/containerd/certs.d"
"""

    def _start_containerd(self, tie_to_parent: bool, timeout: float) -> None:
        config = self.node_path("/etc/containerd/config.toml")
        config.write_text(self.containerd_config())
        containerd = self._node_component(
            "containerd",
            [str(self.binaries.containerd), "--config", "/etc/containerd/config.toml"],
            {},
        )
        self.components.append(containerd)
        containerd.start(tie_to_parent=tie_to_parent)
        self._save()

        def ready() -> bool:
            if not self.containerd_socket.exists():
                return False
            done = subprocess.run(
                [str(self.binaries.ctr), "--address", str(self.containerd_socket), "version"],
                capture_output=True,
                timeout=5,
                check=False,
            )
            return done.returncode == 0

        kubeharness.wait_until(ready, containerd, "serving", timeout)

    def _kubeconfig_for(self, stem: str, cn: str, org: str | None) -> Path:
        pki = self.control_plane.pki
        crt, key = kubeharness.issue_client_cert(pki, stem, cn, org)
        return kubeharness.write_kubeconfig(
            self.run_dir / f"{stem}.kubeconfig",
            kubeharness.kubeconfig_document(
                self.server,
                {
                    "client-certificate-data": kubeharness._b64(crt),
                    "client-key-data": kubeharness._b64(key),
                },
                ca_data=kubeharness._b64(pki.ca_crt),
            ),
        )

    def _start_kubelet(self, pki: kubeharness.Pki, tie_to_parent: bool) -> None:
        kubeconfig = self._kubeconfig_for("kubelet", f"system:node:{NODE_NAME}", "system:nodes")
        self.kubelet_port, self.kubelet_healthz = kubeharness.free_port(), kubeharness.free_port()
        resolv = self.run_dir / "resolv.conf"
        resolv.write_text(
            "# No cluster DNS here (Debian ships no CoreDNS): pods find the API server by\n"
            "# KUBERNETES_SERVICE_HOST, and name lookups go nowhere off the machine.\n"
            "nameserver 127.0.0.1\n"
        )
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.network.node_ip,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.kubelet_healthz,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.ca_crt)},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "resolvConf": str(resolv),
            "rotateCertificates": False,
            "serializeImagePulls": False,
            # A test node on a shared disk: evict nothing, collect no images.
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "nodeStatusUpdateFrequency": "4s",
            "volumeStatsAggPeriod": "0s",
        }
        config_file = self.run_dir / "kubelet-config.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        kubelet = self._node_component(
            "kubelet",
            [
                str(self.binaries.kubelet),
                f"--config={config_file}",
                f"--kubeconfig={kubeconfig}",
                "--container-runtime=remote",
                f"--container-runtime-endpoint=unix://{CONTAINERD_SOCKET}",
                f"--node-ip={self.network.node_ip}",
                f"--hostname-override={NODE_NAME}",
                "--root-dir=/var/lib/kubelet",
                f"--cert-dir={self.run_dir / 'kubelet-pki'}",
                f"--pod-infra-container-image={self.pause_image}",
                "--v=2",
            ],
            # kubelet 1.20's in-tree AWS credential provider dials the cloud metadata
            # address at start-up unless told not to.
            {"AWS_EC2_METADATA_DISABLED": "true"},
        )
        self.components.append(kubelet)
        kubelet.start(tie_to_parent=tie_to_parent)
        self._save()

    def _start_kube_proxy(self, pki: kubeharness.Pki, tie_to_parent: bool) -> None:
        kubeconfig = self._kubeconfig_for("kube-proxy", "system:kube-proxy", None)
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "bindAddress": self.network.node_ip,
            "clusterCIDR": self.network.pod_cidr,
            "hostnameOverride": NODE_NAME,
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "healthzBindAddress": f"127.0.0.1:{kubeharness.free_port()}",
            "metricsBindAddress": f"127.0.0.1:{kubeharness.free_port()}",
            "nodePortAddresses": [f"{self.network.node_ip}/32"],
            # Leave the host's conntrack sysctls alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        config_file = self.run_dir / "kube-proxy-config.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        proxy = Component(
            "kube-proxy",
            [str(self.binaries.kube_proxy), f"--config={config_file}", "--v=2"],
            self.logs / "kube-proxy.log",
        )
        self.components.append(proxy)
        proxy.start(tie_to_parent=tie_to_parent)
        self._save()

    def _start_scheduler(self, pki: kubeharness.Pki, tie_to_parent: bool) -> None:
        kubeconfig = self._kubeconfig_for("kube-scheduler", "system:kube-scheduler", None)
        self.scheduler_port = kubeharness.free_port()
        scheduler = Component(
            "kube-scheduler",
            [
                str(self.binaries.scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.scheduler_port}",
                "--port=0",
                "--leader-elect=false",
                f"--cert-dir={self.run_dir / 'scheduler-certs'}",
                "--v=1",
            ],
            self.logs / "kube-scheduler.log",
        )
        self.components.append(scheduler)
        scheduler.start(tie_to_parent=tie_to_parent)
        self._save()

    def _component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def _wait_node_ready(self, timeout: float) -> None:
        kubelet = self._component("kubelet")

        def ready() -> bool:
            for c in self.components:
                if c.proc is not None and c.proc.poll() is not None:
                    raise c.failure("exited while the node was starting")
            out = kubeharness.kubectl(
                self.kubeconfig, "get", "node", NODE_NAME, "-o", "json", check=False
            )
            if not out:
                return False
            conditions = json.loads(out).get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        kubeharness.wait_until(ready, kubelet, f"Ready as node {NODE_NAME}", timeout)

    def _wait_service_routed(self, timeout: float) -> None:
        proxy = self._component("kube-proxy")
        wanted = f"-d {self.network.service_ip}/32"

        def routed() -> bool:
            return wanted in _run(["iptables-save", "-t", "nat"], check=False)

        kubeharness.wait_until(routed, proxy, "routing the kubernetes Service", timeout)

    # -- stop

    def stop(self) -> list[str]:
        """Stop everything, newest first, and undo the host changes (see the module doc)."""
        stopped = [c.name for c in reversed(self.components) if c.pid]
        for component in reversed(self.components):
            if component.proc is not None and component.proc.poll() is None:
                kubeharness.stop_pid(component.proc.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    component.proc.wait(timeout=5)
        self.components = []
        self._save()
        stopped += stop_from_state(self.run_dir)
        return stopped

    # -- what the tests look at

    def container_pids(self, name_prefix: str) -> list[int]:
        """Host PIDs of the running containers whose Kubernetes container name is
        ``name_prefix``: containerd's task list, filtered by the CRI labels."""
        out = self.ctr("containers", "list", "--quiet")
        pids: list[int] = []
        for cid in out.split():
            info = json.loads(self.ctr("containers", "info", cid, check=False) or "{}")
            labels = info.get("Labels", {})
            if labels.get("io.kubernetes.container.name") != name_prefix:
                continue
            task = self.ctr("tasks", "ps", cid, check=False).splitlines()[1:]
            pids.extend(int(line.split()[0]) for line in task if line.split())
        return pids


def archive_image(archive: Path) -> tuple[str, str]:
    """(name, manifest digest) of the one image in an OCI archive."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise HarnessError(f"{archive} has no index.json")
        manifest = json.load(member)["manifests"][0]
    annotations = manifest.get("annotations", {})
    name = annotations.get("io.containerd.image.name") or annotations.get(
        "org.opencontainers.image.ref.name", ""
    )
    if "/" not in name:
        raise HarnessError(f"{archive}: no full image name in its index.json")
    return str(name), str(manifest["digest"])


def _exe_of(component: Component) -> str:
    """The binary a component runs (the one nsenter execs, for node components)."""
    argv = component.argv
    if "--" in argv and Path(argv[0]).name == "nsenter":
        return argv[argv.index("--") + 1]
    return argv[0]


def install_kustomization(directory: Path, image: str, digest: str) -> Path:
    """What an admin writes: a kustomization of their own that uses ``deploy/`` and a copy of
    ``deploy/overlays/image`` with their image (here: the one built from ./Dockerfile)."""
    component = yaml.safe_load(
        (PROJECT_ROOT / "deploy/overlays/image/kustomization.yaml").read_text()
    )
    (entry,) = component["images"]
    entry["newName"] = image
    entry["digest"] = digest
    (directory / "image").mkdir(parents=True, exist_ok=True)
    (directory / "image/kustomization.yaml").write_text(yaml.safe_dump(component))
    install = directory / "install"
    install.mkdir(exist_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes relative paths only.
        "resources": [os.path.relpath(PROJECT_ROOT / "deploy", install)],
        "components": ["../image"],
    }
    (install / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return install


# --- one node cluster per machine ---------------------------------------------------------


def _claim_machine(run_dir: Path) -> None:
    """Record ``run_dir`` as this machine's node cluster; clean up after a previous one whose
    processes are gone (a killed test run), refuse while one still runs."""
    if ACTIVE_FILE.exists():
        with contextlib.suppress(ValueError, OSError):
            previous = Path(json.loads(ACTIVE_FILE.read_text())["run_dir"])
            if previous != run_dir and (previous / "node.json").exists():
                state = NodeState.load(previous / "node.json")
                if _holder_alive(state):
                    raise HarnessError(
                        f"a node cluster is already running from {previous}: stop it with "
                        f"`.venv/bin/python hack/kube/cluster.py stop --run-dir {previous}`"
                    )
                stop_from_state(previous)
    ACTIVE_FILE.write_text(json.dumps({"run_dir": str(run_dir)}) + "\n")


def _holder_alive(state: NodeState) -> bool:
    pid = state.holder.get("pid")
    if not pid:
        return False
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt") == state.holder.get("mnt_ns")
    except OSError:
        return False


# --- stop from the state file -------------------------------------------------------------


def stop_from_state(run_dir: Path) -> list[str]:
    """Stop a node cluster recorded in ``run_dir/node.json`` (by this process or another)
    and undo what its start changed on the host. Safe to call twice."""
    state_file = run_dir / "node.json"
    if not state_file.exists():
        return kubeharness.stop_from_state(run_dir / "control-plane")
    state = NodeState.load(state_file)
    stopped: list[str] = []
    for proc in reversed(state.processes):
        if _stop_recorded(proc):
            stopped.append(f"{proc['name']} (pid {proc['pid']})")
    # The containers: every process in the kubelet's cgroups (nothing else uses them).
    killed = _kill_all(_pids_in_kubepods())
    if killed:
        stopped.append(f"{killed} container processes")
    # containerd's shims and anything else left in the node's mount namespace, then the
    # namespace itself: its end releases every mount and pod network namespace in it.
    ns = state.holder.get("mnt_ns")
    if ns:
        holder = int(state.holder["pid"])
        left = [p for p in _pids_in_mount_ns(str(ns)) if p != holder]
        if _kill_all(left):
            stopped.append(f"{len(left)} processes of the node's mount namespace")
        if _holder_alive(state):
            kubeharness.stop_pid(holder, grace=2)
            stopped.append(f"node-namespace (pid {holder})")
    stopped += kubeharness.stop_from_state(run_dir / "control-plane")
    _remove_kubepods_cgroups()
    _restore_iptables(state.iptables_before)
    net = state.network
    if state.route_added:
        _run(["ip", "route", "del", "unreachable", net["service_cidr"]], check=False)
    if state.bridge_created:
        _run(["ip", "link", "del", net["bridge"]], check=False)
    for name, value in state.sysctls_before.items():
        with contextlib.suppress(OSError):
            path = Path("/proc/sys", name)
            if path.read_text().strip() != value:
                path.write_text(value + "\n")
    for mountpoint in reversed(state.mountpoints_created):
        with contextlib.suppress(OSError):
            Path(mountpoint).rmdir()
    state_file.unlink()
    with contextlib.suppress(OSError, ValueError):
        if Path(json.loads(ACTIVE_FILE.read_text())["run_dir"]) == run_dir.resolve():
            ACTIVE_FILE.unlink()
    return stopped


def _stop_recorded(proc: dict[str, Any]) -> bool:
    pid = proc.get("pid")
    if not pid:
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    if Path(exe).resolve() != Path(proc["exe"]).resolve():
        return False  # the PID was reused: not ours
    kubeharness.stop_pid(int(pid))
    return True


def _pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _pids_in_kubepods() -> list[int]:
    found = []
    for pid in _pids():
        with contextlib.suppress(OSError):
            if "/kubepods" in Path(f"/proc/{pid}/cgroup").read_text():
                found.append(pid)
    return found


def _pids_in_mount_ns(ns: str) -> list[int]:
    found = []
    for pid in _pids():
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/ns/mnt") == ns:
                found.append(pid)
    return found


def _kill_all(pids: Sequence[int]) -> int:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    for pid in pids:
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if _zombie(pid):
                break
            time.sleep(0.02)
    return len(pids)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def _remove_kubepods_cgroups() -> None:
    """The kubelet's cgroups (``kubepods`` in every hierarchy), deepest first, once empty."""
    root = Path("/sys/fs/cgroup")
    tops = [*root.glob("kubepods*"), *root.glob("*/kubepods*")]
    for top in tops:
        if not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)  # a process that just died may still be listed


def _restore_iptables(before: dict[str, str]) -> None:
    """Remove the rules and chains that were not there when the node started (kube-proxy's,
    kubelet's, the harness's), in every table; keep everything that was."""
    for tool, saved in before.items():
        now = _run([f"{tool}-save"], check=False)
        old_tables, new_tables = _parse_save(saved), _parse_save(now)
        for table, (chains, rules) in new_tables.items():
            old_chains, old_rules = old_tables.get(table, (set(), []))
            added_chains = chains - old_chains
            remaining = list(old_rules)
            for rule in rules:
                if rule in remaining:
                    remaining.remove(rule)
                    continue
                chain = rule[1]
                if chain in added_chains:
                    continue  # flushed below
                _run([tool, "-t", table, "-D", *rule[1:]], check=False)
            for chain in added_chains:
                _run([tool, "-t", table, "-F", chain], check=False)
            for chain in added_chains:
                _run([tool, "-t", table, "-X", chain], check=False)


def _parse_save(text: str) -> dict[str, tuple[set[str], list[list[str]]]]:
    tables: dict[str, tuple[set[str], list[list[str]]]] = {}
    current: tuple[set[str], list[list[str]]] | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            current = (set(), [])
            tables[line[1:].strip()] = current
        elif current is None:
            continue
        elif line.startswith(":"):
            current[0].add(line[1:].split()[0])
        elif line.startswith("-A "):
            current[1].append(shlex.split(line))
    return tables


# --- egress: which addresses the node's processes talk to ---------------------------------


class EgressWatch:
    """Samples, every ``interval`` seconds, the sockets of every process of the node (its
    components, its mount namespace, its containers) and records any peer address outside
    loopback, the bridge and the Service range. A sample sees connections that live at least
    that long: a dial that waits for a peer that is not there (the cloud metadata address,
    a DNS server) lasts seconds."""

    def __init__(
        self, network: NodeNetwork, pids: Callable[[], Sequence[int]], interval: float = 0.25
    ):
        self.network = network
        self.pids = pids
        self.interval = interval
        self.seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="egress-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.sample()

    def sample(self) -> None:
        for pid in self.pids():
            inodes = _socket_inodes(pid)
            if not inodes:
                continue
            for peer, inode in peers(pid):
                if inode in inodes and not self.network.allowed(peer.rsplit(":", 1)[0]):
                    self.seen.setdefault(peer, _comm(pid))


def _socket_inodes(pid: int) -> set[str]:
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    found.add(target[8:-1])
    return found


def peers(pid: int) -> Iterator[tuple[str, str]]:
    """(peer "ip:port", socket inode) of every TCP/UDP socket in ``pid``'s network
    namespace that has a peer."""
    for name, family in (("tcp", 4), ("udp", 4), ("tcp6", 6), ("udp6", 6)):
        with contextlib.suppress(OSError):
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
            for line in lines:
                cols = line.split()
                addr, port = cols[2].split(":")
                if int(port, 16) == 0:
                    continue
                yield f"{_hex_ip(addr, family)}:{int(port, 16)}", cols[9]


def _hex_ip(value: str, family: int) -> str:
    raw = bytes.fromhex(value)
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return f"pid {pid}"


def node_pids(cluster: NodeCluster) -> list[int]:
    """Every process of the node: its components (control plane included), its mount
    namespace (containerd's shims) and its containers."""
    pids = [c.pid for c in [*cluster.control_plane.components, *cluster.components] if c.pid]
    ns = cluster.state.holder.get("mnt_ns")
    if ns:
        pids += _pids_in_mount_ns(str(ns))
    pids += _pids_in_kubepods()
    return sorted(set(pids))


def https_ok(url: str) -> bool:
    """A 200 from a loopback health endpoint with a self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return int(resp.status) == 200
    except OSError:
        return False
