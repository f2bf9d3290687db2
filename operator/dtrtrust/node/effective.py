"""Will the runtime on this host use the files we wrote? One check per target.

The same functions serve the agent and ``dtrtrust apply``. Each check is a pure parser
over the text of the runtime's own config file (``json`` for docker's ``daemon.json``,
``tomllib`` for containerd's ``config.toml`` and containers' ``registries.conf``), plus a
thin :class:`HostFiles` reader that finds those files under a host root. A check returns
:class:`Finding` values; a *blocking* finding makes the trust ``NotEffective`` on that host,
a non-blocking one is a warning that leaves it Synced. Every message names the file, the
line to change and whether the runtime must be restarted.

What each runtime really does (from its source, not guessed):

docker (moby ``registry/config.go``, ``registry/registry.go``)
    ``newTLSConfig(host, isSecure)`` reads ``certs.d/<host>`` only when the registry is
    *secure*. ``isSecureIndex`` first looks the exact ``host[:port]`` up among the entries
    of ``insecure-registries`` (those are insecure), then matches the host's addresses
    against the insecure CIDRs, which always include ``127.0.0.0/8``. So a loopback
    registry and every ``insecure-registries`` entry (name or CIDR) ignore certs.d.
    We decide loopback without DNS: IPv4 literals and ``localhost`` (and ``*.localhost``,
    which resolve to loopback by RFC 6761) only; other names are not resolved, because an
    offline answer would be a guess. ``insecure-registries`` and ``registry-mirrors`` are
    reloaded on SIGHUP (``systemctl reload docker``), no restart needed.
containerd (``pkg/cri/.../config.go``, ``remotes/docker/config/hosts.go``)
    The CRI plugin reads ``certs.d`` only through ``config_path``. Its built-in default
    (no ``config.toml``) has none, in 1.x and 2.x. ``imports`` are merged over the main
    file with each imported plugin table replacing the main file's table of that name.
    Config ``version`` 1 and 2 (1.x) keep the registry under the CRI plugin, version 3
    (2.x) under ``io.containerd.cri.v1.images``. A change needs a containerd restart.
    k3s and RKE2 generate their containerd config (and its certs.d) under
    ``/var/lib/rancher/{k3s,rke2}/agent/etc/containerd`` from ``registries.yaml`` at every
    start, so ``/etc/containerd/certs.d`` is never read there.
containers (containers/image ``docker/docker_client.go``, ``pkg/sysregistriesv2``)
    ``newDockerClient`` loads ``certs.d/<host>`` (CA and client pair) first, then looks the
    reference up in ``registries.conf``: a ``blocked = true`` entry fails every pull
    ("registry ... is blocked"); ``insecure = true`` sets ``InsecureSkipVerify``, so the
    client pair is still sent but ``ca.crt`` is not used (and plain HTTP is tried when TLS
    fails). Blocked is NotEffective; insecure is a warning. Drop-ins in
    ``registries.conf.d`` (lexical order) override entries of the same prefix. Each
    process reads the file at start: no daemon restart.
"""

from __future__ import annotations

import glob
import ipaddress
import json
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from dtrtrust.core.addresses import split_address

DOCKER_DAEMON_JSON = "/etc/docker/daemon.json"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CONTAINERD_CERTS_D = "/etc/containerd/certs.d"
REGISTRIES_CONF = "/etc/containers/registries.conf"
REGISTRIES_CONF_D = "/etc/containers/registries.conf.d"
RANCHER_DISTROS = ("k3s", "rke2")
RANCHER_CONTAINERD = "/var/lib/rancher/{distro}/agent/etc/containerd/config.toml"
RANCHER_REGISTRIES = "/etc/rancher/{distro}/registries.yaml"

# docker's insecure CIDRs are always extended with this one (loadInsecureRegistries).
DOCKER_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@dataclass(frozen=True)
class Finding:
    """One reason the runtime of ``target`` will not (fully) use the files."""

    target: str
    message: str
    blocking: bool = True


class HostFiles:
    """Reads a host's files under ``root`` (``/`` on a host, the mount in the agent's pod).

    Paths are the host's absolute paths. ``read`` returns None for a missing file and
    raises OSError when the file exists but cannot be read (unknown is not empty)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def read(self, path: str) -> str | None:
        where = self._at(path)
        if not where.exists():
            return None
        if where.is_dir():  # an empty hostPath placeholder, not a config file
            return None
        return where.read_text(encoding="utf-8", errors="replace")

    def exists(self, path: str) -> bool:
        return self._at(path).exists()

    def glob(self, pattern: str) -> list[str]:
        """Host paths matching ``pattern``, sorted (the order containerd and
        containers/image use)."""
        base = str(self.root).rstrip("/")
        found = sorted(glob.glob(str(self._at(pattern))))
        return ["/" + os.path.relpath(p, base) if base else p for p in found]

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        """(path, mtime, size) of every config file the checks read: a change of it
        means the checks must run again."""
        out = []
        paths = [DOCKER_DAEMON_JSON, CONTAINERD_CONFIG, REGISTRIES_CONF]
        paths += self.glob(f"{REGISTRIES_CONF_D}/*.conf")
        paths += [RANCHER_CONTAINERD.format(distro=d) for d in RANCHER_DISTROS]
        for path in paths:
            try:
                st = self._at(path).stat()
            except OSError:
                continue
            out.append((path, st.st_mtime_ns, st.st_size))
        return tuple(out)


Reader = Callable[[str], str | None]


def _host(address: str) -> str:
    try:
        host, _port = split_address(address)
    except ValueError:
        host = address
    return host.strip("[]")


# --------------------------------------------------------------------------- docker


def docker_loopback(address: str) -> bool:
    """Whether dockerd puts ``address`` in its default insecure range 127.0.0.0/8
    (IP literals and localhost only: no DNS)."""
    host = _host(address)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.version == 4 and ip in DOCKER_LOOPBACK


def _strip_scheme(entry: str) -> str:
    lower = entry.lower()
    for scheme in ("http://", "https://"):
        if lower.startswith(scheme):
            return entry[len(scheme) :]
    return entry


def docker_findings(daemon_json: str | None, addresses: Sequence[str]) -> list[Finding]:
    """Why dockerd will not read ``/etc/docker/certs.d/<addr>`` for some address."""
    where = DOCKER_DAEMON_JSON
    findings: list[Finding] = []
    for address in addresses:
        if docker_loopback(address):
            findings.append(
                Finding(
                    "docker",
                    f"dockerd treats {address} as an insecure registry (every loopback address, "
                    "127.0.0.0/8, is insecure by default and cannot be made secure) and never "
                    f"reads /etc/docker/certs.d/{address}: pull through a non-loopback name or "
                    "address that the registry certificate covers, and add it to aliases",
                )
            )
    if daemon_json is None:
        return findings
    try:
        doc = json.loads(daemon_json)
    except ValueError as exc:
        return [
            *findings,
            Finding(
                "docker",
                f"{where} is not valid JSON ({exc}); dockerd does not start with it: fix the "
                "file and restart docker",
            ),
        ]
    if not isinstance(doc, Mapping):
        return [*findings, Finding("docker", f"{where} must hold a JSON object; fix it")]
    insecure = [str(e) for e in doc.get("insecure-registries") or [] if isinstance(e, str)]
    mirrors = [str(e) for e in doc.get("registry-mirrors") or [] if isinstance(e, str)]
    for address in addresses:
        for entry in insecure:
            bare = _strip_scheme(entry).rstrip("/")
            hit = bare == address
            if not hit and "/" in bare:
                try:
                    net = ipaddress.ip_network(bare, strict=False)
                    ip = ipaddress.ip_address(_host(address))
                    hit = ip.version == net.version and ip in net
                except ValueError:
                    hit = False
            if hit:
                findings.append(
                    Finding(
                        "docker",
                        f"dockerd treats {address} as an insecure registry and never reads "
                        f"/etc/docker/certs.d/{address}: remove {entry!r} from "
                        f'"insecure-registries" in {where}, then reload docker '
                        "(systemctl reload docker; no restart needed)",
                    )
                )
                break
        for entry in mirrors:
            if entry.lower().startswith("http://") and _strip_scheme(entry).rstrip("/") == address:
                findings.append(
                    Finding(
                        "docker",
                        f'{where} lists {entry!r} in "registry-mirrors": dockerd talks plain '
                        f"HTTP to it and uses no certificate; change it to 'https://{address}', "
                        "then reload docker (systemctl reload docker)",
                    )
                )
    return findings


# ------------------------------------------------------------------------ containerd

# containerd's CRI registry table per config version: v1 (containerd 1.x short
# names), v2 (containerd 1.x), v3 (containerd 2.x, images split out of CRI).
_CRI_REGISTRY_TABLES = {
    1: ("plugins", "cri", "registry"),
    2: ("plugins", "io.containerd.grpc.v1.cri", "registry"),
    3: ("plugins", "io.containerd.cri.v1.images", "registry"),
}


def _table_name(version: int) -> str:
    if version == 1:
        return "[plugins.cri.registry]"
    return f'[plugins."{_CRI_REGISTRY_TABLES[version][1]}".registry]'


def _registry_table(plugins: Mapping[str, Any], version: int) -> Mapping[str, Any]:
    table: Any = plugins.get(_CRI_REGISTRY_TABLES[version][1])
    table = table.get("registry") if isinstance(table, Mapping) else None
    return table if isinstance(table, Mapping) else {}


def _imports(doc: Mapping[str, Any], base: str, files: HostFiles | None) -> list[str]:
    out: list[str] = []
    for pattern in doc.get("imports") or []:
        if not isinstance(pattern, str):
            continue
        if not pattern.startswith("/"):
            pattern = str(PurePosixPath(base).parent / pattern)
        if files is not None and any(c in pattern for c in "*?["):
            out.extend(files.glob(pattern))
        else:
            out.append(pattern)
    return out


def containerd_findings(
    files: HostFiles | Reader,
    *,
    kubelet_version: str | None = None,
) -> list[Finding]:
    """Why containerd's CRI will not read ``/etc/containerd/certs.d`` on this host."""
    reader: Reader = files.read if isinstance(files, HostFiles) else files
    host_files = files if isinstance(files, HostFiles) else None
    for distro in RANCHER_DISTROS:
        generated = RANCHER_CONTAINERD.format(distro=distro)
        try:
            seen = host_files.exists(generated) if host_files else reader(generated) is not None
        except OSError:
            seen = False
        if seen or (kubelet_version and f"+{distro}" in kubelet_version):
            registries = RANCHER_REGISTRIES.format(distro=distro)
            return [
                Finding(
                    "containerd",
                    f"this node runs {distro}'s embedded containerd, which regenerates "
                    f"{generated} and its certs.d from {registries} at every start and never "
                    f"reads {CONTAINERD_CERTS_D}: configure the registry in {registries} "
                    "(configs.<address>.tls: ca_file, cert_file, key_file pointing at "
                    f"{CONTAINERD_CERTS_D}/<address>/) and restart {distro}, or drop the "
                    "containerd target",
                )
            ]
    try:
        main = reader(CONTAINERD_CONFIG)
    except OSError as exc:
        return [
            Finding(
                "containerd",
                f"cannot read {CONTAINERD_CONFIG} ({exc.strerror}); whether containerd reads "
                f"{CONTAINERD_CERTS_D} is unknown: make the file readable to dtrtrust",
            )
        ]
    if main is None:
        return [
            Finding(
                "containerd",
                f"{CONTAINERD_CONFIG} does not exist, and containerd's built-in defaults set no "
                f"config_path, so it will not read {CONTAINERD_CERTS_D}: create the file with "
                f'version = 2 and config_path = "{CONTAINERD_CERTS_D}" under '
                f"{_table_name(2)} (containerd 1.x; {_table_name(3)} with version = 3 on 2.x), "
                "then restart containerd",
            )
        ]
    return containerd_config_findings(main, reader, host_files)


def containerd_config_findings(
    main: str, reader: Reader, files: HostFiles | None = None
) -> list[Finding]:
    """The findings for a given main ``config.toml`` text (imports read through ``reader``)."""
    try:
        doc = tomllib.loads(main)
    except tomllib.TOMLDecodeError as exc:
        return [
            Finding(
                "containerd",
                f"{CONTAINERD_CONFIG} cannot be parsed ({exc}); containerd does not start "
                "with it: fix it, then restart containerd",
            )
        ]
    version = doc.get("version", 1)
    if version not in _CRI_REGISTRY_TABLES:
        return [
            Finding(
                "containerd",
                f"{CONTAINERD_CONFIG} has version = {version!r}, which this dtrtrust does not "
                f"know (1, 2 and 3 are known); check by hand that config_path includes "
                f"{CONTAINERD_CERTS_D}",
            )
        ]
    plugins: dict[str, Any] = dict(doc.get("plugins") or {})
    where = CONTAINERD_CONFIG
    for path in _imports(doc, CONTAINERD_CONFIG, files):
        try:
            text = reader(path)
        except OSError as exc:
            return [
                Finding(
                    "containerd",
                    f"cannot read {path}, imported by {CONTAINERD_CONFIG} ({exc.strerror}); "
                    f"whether containerd reads {CONTAINERD_CERTS_D} is unknown",
                )
            ]
        if text is None:
            continue  # containerd skips a missing import too
        try:
            imported = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            return [
                Finding(
                    "containerd",
                    f"{path} (imported by {CONTAINERD_CONFIG}) cannot be parsed ({exc}); fix "
                    "it, then restart containerd",
                )
            ]
        for name, table in (imported.get("plugins") or {}).items():
            plugins[name] = table  # containerd replaces whole plugin tables
            if name == _CRI_REGISTRY_TABLES[version][1]:
                where = path
    registry = _registry_table(plugins, version)
    raw = registry.get("config_path")
    paths = [p.rstrip("/") for p in str(raw or "").split(":") if p]
    if CONTAINERD_CERTS_D in paths:
        return []
    now = f"config_path is {raw!r}" if raw else "no config_path is set"
    hint = ""
    if version == 3 and _registry_table(plugins, 2):
        hint = f" (version 3 reads {_table_name(3)}, not {_table_name(2)})"
    return [
        Finding(
            "containerd",
            f"containerd will not read {CONTAINERD_CERTS_D}: in {where} (version {version}) "
            f"{now}{hint}; add {CONTAINERD_CERTS_D} to config_path under "
            f"{_table_name(version)} and restart containerd",
        )
    ]


# ------------------------------------------------------------------------ containers


def _registries_entries(text: str, path: str) -> list[Mapping[str, Any]] | Finding:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return Finding(
            "containers",
            f"{path} cannot be parsed ({exc}); podman, skopeo and CRI-O refuse to run with it: "
            "fix it",
        )
    entries = [e for e in doc.get("registry") or [] if isinstance(e, Mapping)]
    # The v1 format, still read by containers/image.
    v1 = doc.get("registries") or {}
    if isinstance(v1, Mapping):
        for key, flag in (("block", "blocked"), ("insecure", "insecure")):
            names = (v1.get(key) or {}).get("registries") or []
            entries.extend({"prefix": str(n), flag: True, "_v1": key} for n in names)
    return entries


def _prefix_matches(prefix: str, address: str) -> bool:
    """Whether a registries.conf prefix covers images of ``address`` (all or some)."""
    if prefix == address or prefix.startswith(address + "/"):
        return True
    if prefix.startswith("*."):
        # refMatchingSubdomainPrefix: any subdomain, with or without a port.
        return _host(address).endswith(prefix[1:])
    return False


def containers_findings(files: HostFiles | Reader, addresses: Sequence[str]) -> list[Finding]:
    """Why podman, skopeo and CRI-O (containers/image) will not use
    ``/etc/containers/certs.d/<addr>``: blocked (NotEffective) or insecure (a warning)."""
    reader: Reader = files.read if isinstance(files, HostFiles) else files
    paths = [REGISTRIES_CONF]
    if isinstance(files, HostFiles):
        paths += files.glob(f"{REGISTRIES_CONF_D}/*.conf")
    by_prefix: dict[str, tuple[Mapping[str, Any], str]] = {}
    for path in paths:
        try:
            text = reader(path)
        except OSError as exc:
            return [
                Finding(
                    "containers",
                    f"cannot read {path} ({exc.strerror}); whether podman/CRI-O block the "
                    "registry is unknown: make it readable to dtrtrust",
                )
            ]
        if text is None:
            continue
        entries = _registries_entries(text, path)
        if isinstance(entries, Finding):
            return [entries]
        for entry in entries:
            prefix = str(entry.get("prefix") or entry.get("location") or "")
            if prefix:
                by_prefix[prefix] = (entry, path)  # a later drop-in overrides
    findings: list[Finding] = []
    for address in addresses:
        for prefix, (entry, path) in sorted(by_prefix.items()):
            if not _prefix_matches(prefix, address):
                continue
            scope = "" if prefix == address else f" (images matching {prefix!r})"
            line = f"[registries.{entry['_v1']}] registries" if "_v1" in entry else "blocked = true"
            if entry.get("blocked"):
                findings.append(
                    Finding(
                        "containers",
                        f"{path} blocks {address}{scope}: podman, skopeo and CRI-O refuse every "
                        f"pull from it; remove {line!r} from the [[registry]] entry with prefix "
                        f"{prefix!r} (takes effect at the next pull; restart CRI-O)",
                    )
                )
            elif entry.get("insecure"):
                line = (
                    f"[registries.{entry['_v1']}] registries"
                    if "_v1" in entry
                    else "insecure = true"
                )
                findings.append(
                    Finding(
                        "containers",
                        f"{path} marks {address}{scope} insecure: podman, skopeo and CRI-O send "
                        f"the client certificate but do not verify the registry with "
                        f"/etc/containers/certs.d/{address}/ca.crt (and may fall back to plain "
                        f"HTTP); remove {line!r} from the entry with prefix {prefix!r}",
                        blocking=False,
                    )
                )
    return findings


# ---------------------------------------------------------------------------- all


def check(
    files: HostFiles,
    targets: Iterable[str],
    addresses: Sequence[str],
    *,
    kubelet_version: str | None = None,
) -> list[Finding]:
    """Every finding for a trust with ``targets`` and ``addresses`` on this host."""
    findings: list[Finding] = []
    wanted = set(targets)
    if "docker" in wanted:
        try:
            daemon_json = files.read(DOCKER_DAEMON_JSON)
        except OSError as exc:
            findings.append(
                Finding(
                    "docker",
                    f"cannot read {DOCKER_DAEMON_JSON} ({exc.strerror}); whether dockerd "
                    "treats the registry as insecure is unknown: make it readable to dtrtrust",
                )
            )
            daemon_json = None
        findings.extend(docker_findings(daemon_json, addresses))
    if "containerd" in wanted:
        findings.extend(containerd_findings(files, kubelet_version=kubelet_version))
    if "containers" in wanted:
        findings.extend(containers_findings(files, addresses))
    return findings


def summary(findings: Sequence[Finding]) -> tuple[bool, str]:
    """(effective, message): not effective when any finding blocks; the message joins
    every finding, blocking ones first."""
    ordered = sorted(findings, key=lambda f: not f.blocking)
    effective = not any(f.blocking for f in findings)
    text = "; ".join(
        f"{f.target}: {f.message}" if f.blocking else f"{f.target} (warning): {f.message}"
        for f in ordered
    )
    return effective, text
