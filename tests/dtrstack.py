"""A DTR-like registry from real parts, for the end-to-end tests and `make demo`.

What runs, all on 127.0.0.1 (nginx on another local address with ``host=``, e.g. the
node tier's bridge, so that pods and the node's containerd reach it), on free ports,
started and stopped by PID:

* docker-registry (distribution) on plain HTTP, its own config and storage under the workdir;
* nginx in front of it with TLS, `ssl_verify_client optional` against a client CA, like DTR:
  - ``GET /ca`` serves the root CA without authentication;
  - ``GET /basic_info`` answers DTR-shaped JSON whose ``User.AuthnMethod`` is
    ``TLSClientCertificate`` only for a verified client certificate (401 and ``none`` otherwise);
  - ``/v2/`` is proxied to the registry only for verified clients (403 otherwise);
  - port ``port`` sends leaf + intermediate, port ``leaf_only_port`` the leaf alone, for the
    missing-intermediate cases.

A client presenting a certificate from another CA (the "rogue" pair) is refused by nginx's
`optional` verification with 400 "The SSL certificate error" when the client sends it anyway
(curl, openssl); Go clients (skopeo, containerd) do not send a certificate whose issuer is not in
the server's acceptable-CA list, so for them it is the 403 of an anonymous client.

The PKI is generated per run with `cryptography` (P-256 keys, so it takes milliseconds):
root CA -> intermediate CA (pathlen 0) -> server certificate (SANs 127.0.0.1, localhost,
registry.test, and ``host``; EKU serverAuth); client CA -> node client certificate (CN node-1,
EKU clientAuth); rogue CA -> rogue client certificate (also CN node-1, EKU clientAuth).

A small image (``dtrtrust/hello:1.0``, one layer with one file) is built as an OCI layout here and
pushed with ``skopeo copy`` through nginx with the client certificate.

Use it from Python (``with start(workdir) as stack: ...``) or from a shell::

    python tests/dtrstack.py start --dir DIR   # prints and writes DIR/stack.json
    python tests/dtrstack.py stop --dir DIR
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

import certfactory

#: The binaries the stack itself needs (tests may need more, e.g. ctr, curl, openssl).
STACK_BINARIES = ("docker-registry", "nginx", "skopeo")
#: Where Debian puts daemons; not always on a non-root PATH.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")

IMAGE_REPOSITORY = "dtrtrust/hello"
IMAGE_TAG = "1.0"
#: The one file in the test image's one layer.
IMAGE_FILE_NAME = "hello.txt"
IMAGE_FILE_CONTENT = b"hello from a DTR-like registry\n"
#: What /basic_info reports as the DTR version.
DTR_VERSION = "2.7.0-dtrtrust-test"
SERVER_NAME = "registry.test"
CLIENT_CN = "node-1"
STATE_FILE = "stack.json"
_READY_TIMEOUT = 10.0


class StackError(RuntimeError):
    """The stack could not start or stop; the message says what to do."""


def find_binary(name: str) -> str | None:
    """Path of ``name`` on PATH or in the sbin directories, or None."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _EXTRA_BIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def missing_binaries(names: Sequence[str] = STACK_BINARIES) -> list[str]:
    """The names in ``names`` that are not installed."""
    return [name for name in names if find_binary(name) is None]


@dataclass(frozen=True)
class Tool:
    """A real client binary (curl, openssl, skopeo, ctr), run with no proxy for 127.0.0.1."""

    path: str

    def run(
        self, *args: str | Path, timeout: float = 30, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        env = os.environ | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        return subprocess.run(
            [self.path, *map(str, args)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )


# --------------------------------------------------------------------------- the data class


@dataclass(frozen=True)
class Stack:
    """A running stack: where it listens, its PEM files and how to stop it."""

    workdir: Path
    #: nginx TLS port sending leaf + intermediate.
    port: int
    #: nginx TLS port sending the leaf only.
    leaf_only_port: int
    #: docker-registry's plain-HTTP port (behind nginx; tests should not need it).
    registry_port: int
    root_ca: Path
    intermediate_ca: Path
    #: root + intermediate, what a client needs for the leaf-only port.
    ca_bundle: Path
    server_cert: Path
    client_ca: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path
    #: "sha256:<hex>" of the root CA's DER, as DTRTrust's ``ca.fetch.pinnedSHA256`` expects.
    root_sha256: str
    #: name -> PID of every process the stack started.
    pids: dict[str, int]
    image_repository: str = IMAGE_REPOSITORY
    image_tag: str = IMAGE_TAG
    host: str = "127.0.0.1"
    _procs: tuple[subprocess.Popen[bytes], ...] = field(default=(), repr=False, compare=False)

    # Addresses exactly as in image references.
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def localhost_address(self) -> str:
        return f"localhost:{self.port}"

    @property
    def name_address(self) -> str:
        """``registry.test:<port>``: does not resolve; only for clients told the IP (--resolve)."""
        return f"{SERVER_NAME}:{self.port}"

    @property
    def leaf_only_address(self) -> str:
        return f"{self.host}:{self.leaf_only_port}"

    @property
    def image(self) -> str:
        """``dtrtrust/hello:1.0``."""
        return f"{self.image_repository}:{self.image_tag}"

    def image_ref(self, address: str | None = None) -> str:
        """``<address>/dtrtrust/hello:1.0``, by default on the full-chain port."""
        return f"{address or self.address}/{self.image}"

    def url(self, path: str = "/", address: str | None = None) -> str:
        return f"https://{address or self.address}{path}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "workdir": str(self.workdir),
            "host": self.host,
            "port": self.port,
            "leaf_only_port": self.leaf_only_port,
            "registry_port": self.registry_port,
            "address": self.address,
            "localhost_address": self.localhost_address,
            "leaf_only_address": self.leaf_only_address,
            "image": self.image,
            "image_repository": self.image_repository,
            "image_tag": self.image_tag,
            "image_ref": self.image_ref(),
            "root_sha256": self.root_sha256,
            "pids": dict(self.pids),
        }
        for name in _PATH_FIELDS:
            data[name] = str(getattr(self, name))
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stack:
        return cls(
            workdir=Path(data["workdir"]),
            host=data["host"],
            port=int(data["port"]),
            leaf_only_port=int(data["leaf_only_port"]),
            registry_port=int(data["registry_port"]),
            root_sha256=data["root_sha256"],
            pids={str(k): int(v) for k, v in data["pids"].items()},
            image_repository=data["image_repository"],
            image_tag=data["image_tag"],
            root_ca=Path(data["root_ca"]),
            intermediate_ca=Path(data["intermediate_ca"]),
            ca_bundle=Path(data["ca_bundle"]),
            server_cert=Path(data["server_cert"]),
            client_ca=Path(data["client_ca"]),
            client_cert=Path(data["client_cert"]),
            client_key=Path(data["client_key"]),
            rogue_ca=Path(data["rogue_ca"]),
            rogue_cert=Path(data["rogue_cert"]),
            rogue_key=Path(data["rogue_key"]),
        )

    def push(self, layout: Path, repository: str, tag: str = IMAGE_TAG) -> str:
        """Push image ``tag`` of an OCI layout as ``repository:tag`` through nginx with the
        client certificate; returns the image reference."""
        ref = f"{self.address}/{repository}:{tag}"
        push_layout(
            self.workdir, self.ca_bundle, self.client_cert, self.client_key, layout, ref, tag
        )
        return ref

    def stop(self) -> None:
        """Stop every process of the stack by PID (SIGTERM, then SIGKILL after 5 s)."""
        own = {proc.pid: proc for proc in self._procs}
        for name, pid in self.pids.items():
            proc = own.get(pid)
            if proc is not None:
                _stop_child(proc)
            else:
                _stop_foreign(name, pid)

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_PATH_FIELDS = (
    "root_ca",
    "intermediate_ca",
    "ca_bundle",
    "server_cert",
    "client_ca",
    "client_cert",
    "client_key",
    "rogue_ca",
    "rogue_cert",
    "rogue_key",
)


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _stop_foreign(name: str, pid: int) -> None:
    """Stop a process started by another `dtrstack start`, after checking it is still ours."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return  # already gone
    if name.encode() not in cmdline:
        return  # the PID was reused by something else: leave it alone
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie waiting for its (new) parent to reap it has ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


# --------------------------------------------------------------------------- PKI


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def _make_pki(pki: Path, now: dt.datetime, host: str = "127.0.0.1") -> dict[str, Any]:
    """A fresh PKI per run (new keys, valid around the wall clock, since nginx and the
    clients check validity against the real time), built with the tests' certfactory."""
    org = "dtrtrust test stack"
    start = now - dt.timedelta(hours=1)

    def ca(
        cn: str, parent: certfactory.Issued | None = None, path_length: int = 0
    ) -> certfactory.Issued:
        return certfactory.make_ca(
            cn,
            parent=parent,
            path_length=path_length,
            key=ec.generate_private_key(ec.SECP256R1()),
            organization=org,
            not_before=start,
            not_after=now + dt.timedelta(days=3650),
        )

    def leaf(
        cn: str,
        parent: certfactory.Issued,
        eku: str,
        sans: Sequence[str] = (),
        ip_sans: Sequence[str] = (),
    ) -> certfactory.Issued:
        return certfactory.make_leaf(
            cn,
            parent,
            sans=list(sans),
            ip_sans=ip_sans,
            eku=[eku],
            key=ec.generate_private_key(ec.SECP256R1()),
            organization=org,
            not_before=start,
            not_after=now + dt.timedelta(days=365),
        )

    root = ca("dtrtrust test root CA", path_length=1)
    inter = ca("dtrtrust test intermediate CA", root)
    ip_sans = ["127.0.0.1"] if host == "127.0.0.1" else ["127.0.0.1", host]
    server = leaf(
        SERVER_NAME, inter, "serverAuth", sans=["localhost", SERVER_NAME], ip_sans=ip_sans
    )
    client_ca = ca("dtrtrust test client CA")
    client = leaf(CLIENT_CN, client_ca, "clientAuth")
    rogue_ca = ca("rogue CA")
    rogue = leaf(CLIENT_CN, rogue_ca, "clientAuth")

    return {
        "root_ca": _write(pki / "root-ca.pem", root.cert_pem),
        "intermediate_ca": _write(pki / "intermediate-ca.pem", inter.cert_pem),
        "ca_bundle": _write(pki / "ca-bundle.pem", root.cert_pem + inter.cert_pem),
        "server_cert": _write(pki / "server.pem", server.cert_pem),
        "server_chain": _write(pki / "server-chain.pem", server.chain_pem),
        "server_key": _write(pki / "server.key", server.key_pem, 0o600),
        "client_ca": _write(pki / "client-ca.pem", client_ca.cert_pem),
        "client_cert": _write(pki / "client.cert", client.cert_pem),
        "client_key": _write(pki / "client.key", client.key_pem, 0o600),
        "rogue_ca": _write(pki / "rogue-ca.pem", rogue_ca.cert_pem),
        "rogue_cert": _write(pki / "rogue.cert", rogue.cert_pem),
        "rogue_key": _write(pki / "rogue.key", rogue.key_pem, 0o600),
        "root_sha256": root.fingerprint,
    }


# --------------------------------------------------------------------------- the test image


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _write(layout / "blobs" / "sha256" / digest.removeprefix("sha256:"), data)
    return digest, len(data)


@dataclass(frozen=True)
class ImageFile:
    """One regular file of a one-layer image."""

    name: str
    content: bytes
    mode: int = 0o644


def build_oci_layout(
    layout: Path,
    tag: str = IMAGE_TAG,
    *,
    files: Sequence[ImageFile] = (ImageFile(IMAGE_FILE_NAME, IMAGE_FILE_CONTENT),),
    entrypoint: Sequence[str] = (),
    annotations: dict[str, str] | None = None,
) -> Path:
    """Write a one-layer OCI image layout (deterministic bytes) and return its directory.

    By default the test image: ``hello.txt`` alone, no entrypoint. ``files``, ``entrypoint``
    and index ``annotations`` make other small images (the node tier's pause and workload
    images, hack/image/nodeimages.py)."""
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for item in files:
            info = tarfile.TarInfo(item.name)
            info.size = len(item.content)
            info.mode = item.mode
            info.mtime = 0
            tar.addfile(info, io.BytesIO(item.content))
    layer_tar = tar_buf.getvalue()
    layer_gz = gzip.compress(layer_tar, mtime=0)

    layer_digest, layer_size = _blob(layout, layer_gz)
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": list(entrypoint)} if entrypoint else {},
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()],
        },
    }
    config_digest, config_size = _blob(layout, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_digest, manifest_size = _blob(layout, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": tag, **(annotations or {})},
            }
        ],
    }
    _write(layout / "index.json", json.dumps(index, sort_keys=True).encode())
    _write(layout / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    return layout


# --------------------------------------------------------------------------- configs


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _registry_config(storage: Path, port: int) -> str:
    return json.dumps(  # JSON is YAML: no YAML writer needed
        {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
        },
        indent=2,
    )


def _basic_info(authn: str, name: str) -> str:
    body = json.dumps(
        {"CurrentVersion": DTR_VERSION, "User": {"name": name, "AuthnMethod": authn}},
        separators=(",", ":"),
    )
    # nginx single-quoted string: escape backslashes and quotes; "$client_cn" stays a variable.
    return "'" + body.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _nginx_server(
    host: str, port: int, chain: Path, pki: dict[str, Any], registry_port: int
) -> str:
    ok = _basic_info("TLSClientCertificate", "$client_cn")
    anonymous = _basic_info("none", "")
    return f"""
    server {{
        listen {host}:{port} ssl;
        server_name _;
        ssl_certificate {chain};
        ssl_certificate_key {pki["server_key"]};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_client_certificate {pki["client_ca"]};
        ssl_verify_client optional;
        ssl_verify_depth 2;
        client_max_body_size 0;
        chunked_transfer_encoding on;

        location = /ca {{
            default_type application/x-pem-file;
            alias {pki["root_ca"]};
        }}
        location = /basic_info {{
            default_type application/json;
            if ($ssl_client_verify != SUCCESS) {{
                return 401 {anonymous};
            }}
            return 200 {ok};
        }}
        location /v2/ {{
            if ($ssl_client_verify != SUCCESS) {{
                return 403;
            }}
            proxy_pass http://127.0.0.1:{registry_port};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
"""


def _nginx_config(
    root: Path,
    pki: dict[str, Any],
    port: int,
    leaf_only_port: int,
    registry_port: int,
    host: str = "127.0.0.1",
) -> str:
    # As root the workers would otherwise drop to "nobody", who may not traverse a 0700 workdir
    # (pytest's tmp dirs are); the test bed listens on 127.0.0.1 (or the harness's own bridge).
    user = "user root root;" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {root / 'tmp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# Generated by tests/dtrstack.py for one run.
{user}
daemon off;
worker_processes 1;
pid {root / "nginx.pid"};
error_log {root / "error.log"} warn;
events {{ worker_connections 128; }}
http {{
    access_log {root / "access.log"};
{temp}
    default_type application/octet-stream;
    map $ssl_client_s_dn $client_cn {{
        "~(^|,)CN=(?<cn>[^,]+)" $cn;
        default "";
    }}
{_nginx_server(host, port, pki["server_chain"], pki, registry_port)}
{_nginx_server(host, leaf_only_port, pki["server_cert"], pki, registry_port)}
}}
"""


# --------------------------------------------------------------------------- start


def _wait_listening(
    port: int, proc: subprocess.Popen[bytes], name: str, log: Path, host: str = "127.0.0.1"
) -> None:
    """Wait until ``proc`` itself listens on ``host``:``port`` (not some other process)."""
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None or "address already in use" in _tail(log).lower():
            tail = _tail(log)
            error = _PortTaken if "address already in use" in tail.lower() else StackError
            raise error(f"{name} did not start ({tail}); see {log}")
        if _listens(proc.pid, port, host):
            return
        time.sleep(0.01)
    raise StackError(
        f"{name} did not listen on {host}:{port} within {_READY_TIMEOUT:.0f} s; see {log}"
    )


def _listens(pid: int, port: int, host: str = "127.0.0.1") -> bool:
    """True when a socket of ``pid`` listens on ``host``:``port`` (IPv4, Linux /proc)."""
    wanted = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    inodes = set()
    try:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[1] == wanted and cols[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{cols[9]}]")
        if not inodes:
            return False
        fds = Path(f"/proc/{pid}/fd")
        return any(os.readlink(fd) in inodes for fd in fds.iterdir())
    except OSError:
        return False


def _tail(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "empty log"


def _spawn(argv: list[str], log: Path, detach: bool) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=detach,  # survive `dtrstack.py start` exiting (the demo)
        )


def _push_image(workdir: Path, pki: dict[str, Any], address: str) -> None:
    layout = build_oci_layout(workdir / "image" / "oci")
    push_layout(
        workdir,
        Path(pki["ca_bundle"]),
        Path(pki["client_cert"]),
        Path(pki["client_key"]),
        layout,
        f"{address}/{IMAGE_REPOSITORY}:{IMAGE_TAG}",
    )


def push_layout(
    workdir: Path,
    ca_bundle: Path,
    client_cert: Path,
    client_key: Path,
    layout: Path,
    destination: str,
    tag: str = IMAGE_TAG,
) -> None:
    """``skopeo copy`` the image ``tag`` of an OCI layout to ``destination``
    (``host:port/repository:tag``) with the stack's client certificate."""
    certs = workdir / "image" / "push-certs"
    _write(certs / "ca.crt", ca_bundle.read_bytes())
    _write(certs / "client.cert", client_cert.read_bytes())
    _write(certs / "client.key", client_key.read_bytes(), 0o600)
    policy = _write(
        workdir / "image" / "policy.json",
        b'{"default":[{"type":"insecureAcceptAnything"}]}',
    )
    skopeo = find_binary("skopeo") or "skopeo"
    argv = [
        skopeo,
        "--policy",
        str(policy),
        "copy",
        "--quiet",
        "--dest-cert-dir",
        str(certs),
        f"oci:{layout}:{tag}",
        f"docker://{destination}",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        msg = (result.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise StackError(f"pushing the test image with skopeo failed: {msg}")


def start(workdir: Path, *, detach: bool = False, host: str = "127.0.0.1") -> Stack:
    """Generate the PKI, start registry and nginx, push the test image; return the Stack.

    ``detach`` puts the processes in their own session so they outlive this Python process
    (used by the command line for the demo); stop them with ``Stack.stop()`` either way.
    ``host`` is the local address nginx listens on (and the server certificate names): the
    default 127.0.0.1, or an address of a bridge the caller created (the node tier's), so
    that pods and a node's containerd reach it. docker-registry stays on 127.0.0.1.
    """
    missing = missing_binaries()
    if missing:
        raise StackError(
            f"missing {', '.join(missing)}: run `make system-deps` (hack/install-system-deps.sh)"
        )
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    pki = _make_pki(workdir / "pki", dt.datetime.now(dt.UTC), host)
    for attempt in range(1, _START_ATTEMPTS + 1):
        try:
            stack = _launch(workdir, pki, detach, host)
            break
        except _PortTaken:
            # Another process took a port between _free_ports() and the bind: new ports.
            if attempt == _START_ATTEMPTS:
                raise StackError(
                    f"no free ports on {host} after {attempt} attempts; see {workdir}"
                ) from None
    _write(workdir / STATE_FILE, json.dumps(stack.to_json(), indent=2).encode() + b"\n")
    return stack


_START_ATTEMPTS = 3


class _PortTaken(StackError):
    pass


def _launch(workdir: Path, pki: dict[str, Any], detach: bool, host: str) -> Stack:
    port, leaf_only_port, registry_port = _free_ports(3)
    reg_dir = workdir / "registry"
    (reg_dir / "data").mkdir(parents=True, exist_ok=True)
    reg_conf = _write(
        reg_dir / "config.yml", _registry_config(reg_dir / "data", registry_port).encode()
    )
    ngx_dir = workdir / "nginx"
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (ngx_dir / "tmp" / kind).mkdir(parents=True, exist_ok=True)
    ngx_conf = _write(
        ngx_dir / "nginx.conf",
        _nginx_config(ngx_dir, pki, port, leaf_only_port, registry_port, host).encode(),
    )

    reg_log = reg_dir / "registry.log"
    ngx_log = ngx_dir / "error.log"
    for log in (reg_log, ngx_log):
        log.write_bytes(b"")  # a retry must not read the previous attempt's errors
    procs: list[subprocess.Popen[bytes]] = []
    pids: dict[str, int] = {}
    try:
        registry = _spawn(
            [find_binary("docker-registry") or "docker-registry", "serve", str(reg_conf)],
            reg_log,
            detach,
        )
        procs.append(registry)
        pids["docker-registry"] = registry.pid
        nginx = _spawn(
            [
                find_binary("nginx") or "nginx",
                "-p",
                str(ngx_dir),
                "-c",
                str(ngx_conf),
                "-e",
                str(ngx_log),
            ],
            ngx_dir / "stdout.log",
            detach,
        )
        procs.append(nginx)
        pids["nginx"] = nginx.pid
        _wait_listening(registry_port, registry, "docker-registry", reg_log)
        _wait_listening(port, nginx, "nginx", ngx_log, host)
        _wait_listening(leaf_only_port, nginx, "nginx", ngx_log, host)
        stack = Stack(
            workdir=workdir,
            port=port,
            leaf_only_port=leaf_only_port,
            registry_port=registry_port,
            pids=pids,
            host=host,
            _procs=tuple(procs),
            **{k: v for k, v in pki.items() if k not in ("server_chain", "server_key")},
        )
        _push_image(workdir, pki, stack.address)
    except BaseException:
        for proc in reversed(procs):
            _stop_child(proc)
        raise
    return stack


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[Stack]:
    """``with running(dir) as stack:`` — start, yield, always stop."""
    stack = start(workdir)
    try:
        yield stack
    finally:
        stack.stop()


def load(workdir: Path) -> Stack:
    """The Stack that `start` recorded in ``workdir/stack.json``."""
    return Stack.from_json(json.loads((workdir / STATE_FILE).read_text()))


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A DTR-like registry for tests and the demo.")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, required=True, help="work directory of the stack")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="local address nginx listens on (default 127.0.0.1; the node tier's bridge address)",
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            began = time.monotonic()
            stack = start(args.dir, detach=True, host=args.host)
            elapsed = time.monotonic() - began
            print(json.dumps(stack.to_json() | {"start_seconds": round(elapsed, 3)}, indent=2))
        else:
            state = args.dir / STATE_FILE
            if not state.exists():
                print(f"no stack recorded in {state}; nothing to stop", file=sys.stderr)
                return 0
            load(args.dir).stop()
            state.unlink()
    except StackError as err:
        print(f"dtrstack: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
