"""``dtrtrust apply``: the whole job on one host, without a cluster.

Reads DTRTrust manifests (and the Secret / ConfigMap manifests they reference) from
files, runs the same :func:`dtrtrust.core.reconcile.reconcile` as the operator, writes the
node files through the same writer as the agent, and returns each trust's status.
A failed check writes nothing: the previous files stay as they were.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import errno
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from dtrtrust.cli import manifest_yaml
from dtrtrust.contract import API_VERSION, CA_KEY, CLIENT_CERT_KEY, CLIENT_KEY_KEY, KIND
from dtrtrust.core import conditions, layout
from dtrtrust.core.conditions import Condition
from dtrtrust.core.fingerprints import fingerprint_der
from dtrtrust.core.network import Network
from dtrtrust.core.pem import parse_certificates
from dtrtrust.core.reconcile import Previous, reconcile
from dtrtrust.core.spec import SpecError, check_name, parse_trust
from dtrtrust.core.status import invalid_spec_status, is_ready, nodes_verified, trust_status
from dtrtrust.core.times import rfc3339
from dtrtrust.node import effective, fs, plan, probe, systemtrust, writer

log = logging.getLogger("dtrtrust.apply")

# apply's own state dir, inside the writer's (one location for the agent and apply on a
# host: <host root>/var/lib/dtrtrust/apply), private like it. Where earlier versions kept
# it: moved here before apply reads it (the writer's own migration runs later, when it
# writes, and would leave apply's first run without its previous state).
APPLY_STATE_SUBDIR = "apply"
LEGACY_STATE_DIRS = (".dtrtrust/apply",)


def state_dir() -> str:
    """apply's state directory relative to the host root (follows the writer's)."""
    return f"{writer.STATE_DIR}/{APPLY_STATE_SUBDIR}"


class InputError(Exception):
    """Unusable input files (missing, not YAML). One line for the user."""


class HostError(Exception):
    """The host cannot take what apply must write (disk full, read-only, permissions,
    I/O). One line for the user: what happened, which path, what to do."""


# What to do about the host problems a user can fix, by errno.
_HOST_HINTS = {
    errno.ENOSPC: "no space left on the device: free space there and run again",
    errno.EDQUOT: "disk quota exceeded: free space there and run again",
    errno.EROFS: "the file system is read-only: remount it read-write "
    "(or give another --host-root) and run again",
    errno.EACCES: "permission denied: run as root (or as the owner of that directory)",
    errno.EPERM: "operation not permitted: run as root and check the file's attributes (lsattr)",
    errno.EIO: "I/O error: check the disk (dmesg) before running again",
}


def host_error(exc: OSError, path: Path | str) -> HostError:
    """A HostError for ``exc`` raised on ``path``, with the remedy for the common causes."""
    hint = _HOST_HINTS.get(
        exc.errno or 0, f"{exc.strerror or exc}: check that directory and run again"
    )
    return HostError(f"cannot write {path}: {hint}; the previous files are unchanged")


def _host_hint(message: str) -> str:
    """The remedy for a writer message that names a known OS error (its strerror)."""
    for code, hint in _HOST_HINTS.items():
        if os.strerror(code) in message:
            return f" ({hint}; the previous files are unchanged)"
    return ""


@dataclass
class ManifestSources:
    """Secrets and ConfigMaps given next to the DTRTrust manifests."""

    secrets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)

    def secret(self, name: str) -> Mapping[str, bytes] | None:
        return self.secrets.get(name)

    def config_map(self, name: str) -> Mapping[str, str] | None:
        return self.config_maps.get(name)


@dataclass
class Manifests:
    trusts: list[Mapping[str, Any]] = field(default_factory=list)
    sources: ManifestSources = field(default_factory=ManifestSources)


def load_manifests(paths: Sequence[str]) -> Manifests:
    """DTRTrust, Secret and ConfigMap documents from YAML files (``-`` is stdin)."""
    import sys

    found = Manifests()
    for path in paths:
        try:
            if path == "-":
                data = manifest_yaml.read_bounded(sys.stdin.buffer, "stdin")
            else:
                with open(path, "rb") as fh:
                    data = manifest_yaml.read_bounded(fh, path)
            docs = manifest_yaml.load_documents(data, path)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
        except manifest_yaml.ManifestError as exc:
            raise InputError(str(exc)) from None
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, Mapping):
                raise InputError(f"{path}: every document must be a Kubernetes object")
            _collect(doc, path, found)
    if not found.trusts:
        raise InputError(f"no {KIND} ({API_VERSION}) found in {', '.join(paths)}")
    return found


def _field(doc: Mapping[str, Any], key: str, path: str, kind: type) -> Any:
    """``doc[key]`` (an empty ``kind`` when absent), refusing a value of another type."""
    value = doc.get(key)
    if value is None:
        return kind()
    if not isinstance(value, kind):
        what = "a mapping" if kind is dict else "a list"
        raise InputError(f"{path}: {doc.get('kind')} {key} must be {what}")
    return value


def _collect(doc: Mapping[str, Any], path: str, found: Manifests) -> None:
    if not isinstance(doc, Mapping):
        raise InputError(f"{path}: every document must be a Kubernetes object")
    kind = doc.get("kind")
    name = str(_field(doc, "metadata", path, dict).get("name", ""))
    if kind == "List":
        for item in _field(doc, "items", path, list):
            _collect(item, path, found)
    elif kind == KIND:
        found.trusts.append(doc)
    elif kind == "Secret":
        data: dict[str, bytes] = {}
        for key, value in _field(doc, "data", path, dict).items():
            try:
                data[key] = base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                raise InputError(f"{path}: Secret {name} key {key} is not base64") from None
        for key, value in _field(doc, "stringData", path, dict).items():
            data[key] = str(value).encode()
        found.sources.secrets[name] = data
    elif kind == "ConfigMap":
        found.sources.config_maps[name] = {
            str(k): str(v) for k, v in _field(doc, "data", path, dict).items()
        }
    else:
        log.warning(
            "%s: ignoring %s %s (apply reads %s, Secret and ConfigMap)", path, kind, name, KIND
        )


# How status.nodes names the one host `apply` works on.
HOST_NODE = "localhost"


@dataclass
class HostOptions:
    host_root: Path = Path("/")
    home: str = field(default_factory=lambda: os.environ.get("HOME", "/root"))
    system_trust: bool = False
    client_override: tuple[bytes, bytes] | None = None
    # The OS store's update command, instead of the store's own (update-ca-certificates,
    # update-ca-trust extract); when set it also runs for a host root other than /.
    system_trust_command: Sequence[str] | None = None
    # The per-host probe with exactly the files written (spec.verify.nodes): address,
    # directory, with the client pair -> result. Tests pass their own.
    prober: Callable[[str, Path, bool], probe.ProbeResult] = field(
        default=lambda address, directory, with_client: probe.probe(
            address, directory, with_client=with_client
        )
    )

    @property
    def state_dir(self) -> Path:
        return self.host_root / state_dir()

    @property
    def home_rel(self) -> str:
        return self.home.strip("/") or "root"


@dataclass
class TrustResult:
    name: str
    status: dict[str, Any]
    ready: bool
    # --dry-run: what writing would change (None: nothing would be written at all).
    changes: list[plan.Change] | None = None
    dry_run: bool = False
    # The host could not take the files (I/O, permissions, disk, a refused path):
    # `dtrtrust apply` exits 3 rather than 1.
    host_problem: bool = False


def _state_rel(name: str, directory: str | None = None) -> str:
    return f"{directory or state_dir()}/{name}.json"


def _read_state(opts: HostOptions, rel: str) -> dict[str, Any] | None:
    """The state at ``rel`` (None when absent), read without following any link."""
    try:
        raw = fs.read_file(opts.host_root, rel)
    except FileNotFoundError:
        return None  # no host root: the writer refuses it
    except writer.WriterError as exc:
        raise HostError(f"cannot use {opts.host_root / rel}: {exc}") from None
    except OSError as exc:
        raise host_error(exc, opts.host_root / rel) from None
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        log.warning("%s is not JSON; starting from an empty state", opts.host_root / rel)
        return {}
    return data if isinstance(data, dict) else {}


def _load_state(opts: HostOptions, name: str) -> dict[str, Any]:
    """apply's state for ``name`` ({} when there is none)."""
    return _read_state(opts, _state_rel(name)) or {}


def migrate_state(opts: HostOptions) -> None:
    """Move every state file of a legacy location into :func:`state_dir` (one that is
    already there wins), then remove the emptied legacy directory. Through the no-follow
    walk: a link in the way is a HostError."""
    for legacy in LEGACY_STATE_DIRS:
        if legacy == state_dir():
            continue
        try:
            with fs.closing(fs.open_root(opts.host_root)) as root_fd:
                fd = fs.walk(root_fd, legacy)
                if fd is None:
                    continue
                with fs.closing(fd):
                    names = sorted(n for n in os.listdir(fd) if n.endswith(".json"))
            for entry in names:
                name = entry.removesuffix(".json")
                old = _read_state(opts, _state_rel(name, legacy))
                if old is not None and _read_state(opts, _state_rel(name)) is None:
                    _write_state(opts, name, old)
                    log.info("moved %s to %s", _state_rel(name, legacy), _state_rel(name))
                _remove_state(opts, _state_rel(name, legacy))
            parent, _, last = legacy.rpartition("/")
            with fs.closing(fs.open_root(opts.host_root)) as root_fd:
                pfd = fs.walk(root_fd, parent) if parent else os.dup(root_fd)
                if pfd is not None:
                    with fs.closing(pfd), contextlib.suppress(OSError):
                        os.rmdir(last, dir_fd=pfd)  # only when empty
        except FileNotFoundError:
            return  # no host root: the writer refuses it
        except writer.WriterError as exc:
            raise HostError(f"cannot use {opts.host_root / legacy}: {exc}") from None
        except OSError as exc:
            raise host_error(exc, opts.host_root / legacy) from None


def _write_state(opts: HostOptions, name: str, state: Mapping[str, Any]) -> None:
    rel = _state_rel(name)
    data = (json.dumps(state, indent=2, sort_keys=True) + "\n").encode()
    try:
        fs.ensure_dir(opts.host_root, writer.STATE_DIR, writer.STATE_MODE)
        fs.ensure_dir(opts.host_root, state_dir(), 0o700)
        fs.write_file(opts.host_root, rel, data, 0o600)
    except writer.WriterError as exc:
        raise HostError(f"cannot write {opts.host_root / rel}: {exc}") from None
    except OSError as exc:
        raise host_error(exc, opts.host_root / rel) from None


def _remove_state(opts: HostOptions, rel: str) -> None:
    try:
        fs.remove_file(opts.host_root, rel)
    except writer.WriterError as exc:
        raise HostError(f"cannot remove {opts.host_root / rel}: {exc}") from None
    except OSError as exc:
        raise host_error(exc, opts.host_root / rel) from None


def _save_state(opts: HostOptions, name: str, state: Mapping[str, Any]) -> None:
    """Write apply's state for ``name`` when it differs from what is on disk; never
    creates the host root itself (a missing one was refused by the writer)."""
    if not opts.host_root.is_dir() or state == _load_state(opts, name):
        return
    _write_state(opts, name, state)


def _host_nodes(
    result: writer.SyncResult,
    findings: Sequence[effective.Finding] = (),
    host_root: Path = Path("/"),
) -> tuple[Condition, dict[str, Any]]:
    """NodesSynced and ``status.nodes`` for this one host, from what the writer did and
    what the effective-trust checks found (the same checks as the agent's)."""
    counts = {"desired": 1, "synced": 1, "summary": "1/1", "outOfSync": []}
    out_of_sync = {"desired": 1, "synced": 0, "summary": "0/1", "outOfSync": [HOST_NODE]}
    if result.error:
        message = f"host root {host_root}: {result.error}{_host_hint(result.error)}"
        return conditions.failed(conditions.NODES_SYNCED, "NodeErrors", message), out_of_sync
    problems = [d for d in result.dirs if d.action not in ("written", "unchanged")]
    ok, message = effective.summary(findings)
    if not problems and not ok:
        return conditions.failed(conditions.NODES_SYNCED, "NotEffective", message), out_of_sync
    if not problems:
        # No per-run counts here: an apply with nothing changed leaves the status (and
        # apply's state file) exactly as it was. What was written is logged.
        return conditions.ok(
            conditions.NODES_SYNCED,
            "Synced",
            f"{len(result.dirs)} director(ies) in place."
            + (f" Warning: {message}" if message else ""),
        ), counts
    first = problems[0]
    reason = "Conflict" if first.action == "conflict" else "NodeErrors"
    return conditions.failed(
        conditions.NODES_SYNCED,
        reason,
        f"{first.target} {first.address} ({host_root / first.path}): {first.message}"
        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        + (_host_hint(first.message) if reason == "NodeErrors" else ""),
    ), out_of_sync


def _desired(spec: Any, out: Any, opts: HostOptions) -> list[layout.DesiredDir]:
    client = (out.publish[CLIENT_CERT_KEY], out.publish[CLIENT_KEY_KEY]) if out.client else None
    return layout.desired_dirs(
        spec.addresses, spec.targets, out.publish[CA_KEY], client, home=opts.home_rel
    )


def _in_place(result: writer.SyncResult, d: layout.DesiredDir) -> bool:
    return any(
        r.target == d.target and r.address == d.address and r.action in ("written", "unchanged")
        for r in result.dirs
    )


def apply_trust(
    manifest: Mapping[str, Any],
    sources: ManifestSources,
    opts: HostOptions,
    *,
    now: dt.datetime,
    network: Network,
    dry_run: bool = False,
) -> TrustResult:
    """Reconcile one trust onto the host. ``dry_run``: the same checks, then only
    compute what writing would change (``TrustResult.changes``); nothing is written,
    not even apply's state."""
    name = str((manifest.get("metadata") or {}).get("name", "?"))
    state = _load_state(opts, name)
    previous_status: dict[str, Any] = {
        k: state[k] for k in ("conditions", "bundle", "nodes") if k in state
    }
    try:
        spec = parse_trust(manifest)
    except SpecError as exc:
        status = invalid_spec_status(previous_status, 0, exc.reason, exc.message, now=now)
        return TrustResult(name, status, False)

    system_status: dict[str, Any] | None = None
    system_record: dict[str, Any] | None = None
    verified: Condition | None = None
    previous_pem = state.get("bundlePEM")
    previous = Previous.from_status(
        state.get("bundle"), previous_pem.encode() if isinstance(previous_pem, str) else None
    )
    out = reconcile(
        spec,
        sources=sources,
        now=now,
        previous=previous,
        network=network,
        client_override=opts.client_override,
    )
    recorded_files = state.get("files")
    recorded: list[str] = (
        [str(f) for f in recorded_files] if isinstance(recorded_files, list) else []
    )
    if dry_run:
        changes = None
        if out.publish is not None:
            dirs = _desired(spec, out, opts)
            changes = plan.plan(opts.host_root, dirs, recorded)
        nodes = conditions.unknown(
            conditions.NODES_SYNCED, "DryRun", "Nothing was written (--dry-run)."
        )
        status = trust_status(spec, out, nodes, None, previous_status, now=now)
        return TrustResult(spec.name, status, False, changes, dry_run=True)
    files: list[str] | None = None
    if out.publish is not None:
        dirs = _desired(spec, out, opts)
        result = writer.sync_trust(opts.host_root, spec.name, dirs)
        in_place = [d for d in dirs if _in_place(result, d)]
        files = sorted(set(plan.dir_files(in_place)) | (set(recorded) & set(plan.dir_files(dirs))))
        for d in result.dirs:
            log.info("%s %s: %s %s", d.target, d.address, d.action, d.message)
        findings = effective.check(
            effective.HostFiles(opts.host_root), spec.targets, spec.addresses
        )
        for finding in findings:
            log.warning("%s: %s", finding.target, finding.message)
        nodes, counts = _host_nodes(result, findings, opts.host_root)
        if spec.verify_nodes and result.ok:
            first = dirs[0]
            found = opts.prober(
                first.address, opts.host_root / str(first.path), out.client is not None
            )
            if not found.ok:
                log.warning("probe of %s: %s: %s", first.address, found.reason, found.message)
            count, verified = nodes_verified([HOST_NODE], {HOST_NODE: found.to_dict(rfc3339(now))})
            counts = {**counts, "verified": count}
        if opts.system_trust and not result.error:
            store = _install_system_trust(opts, spec.name, out.publish[CA_KEY], state)
            system_status = store.to_status()
            system_record = {"files": store.files, "pending": store.updated is False}
            if store.problem and nodes.status == "True":
                nodes = conditions.failed(
                    conditions.NODES_SYNCED, "NotEffective", f"OS trust store: {store.problem}"
                )
    else:
        nodes = conditions.unknown(
            conditions.NODES_SYNCED,
            "KeptPrevious",
            "Nothing was written: the files from the last successful apply stay in place.",
        )
        counts = None
    status = trust_status(spec, out, nodes, counts, previous_status, now=now, verified=verified)
    if system_status is not None:
        status["systemTrust"] = system_status

    new_state: dict[str, Any] = dict(state)
    new_state.update({k: status[k] for k in ("conditions", "bundle", "nodes") if k in status})
    new_state["registry"] = spec.registry
    if files is not None:
        new_state["files"] = files
    if out.publish is not None:
        new_state["bundlePEM"] = out.publish[CA_KEY].decode()
    if system_record is not None:
        new_state[SYSTEM_TRUST_KEY] = system_record
    host_problem = out.publish is not None and nodes.reason == "NodeErrors"
    try:
        _save_state(opts, spec.name, new_state)
    except HostError as exc:
        if not host_problem:
            raise
        # The status already names the host problem the writer hit first.
        log.warning("%s", exc)
    return TrustResult(spec.name, status, is_ready(status), host_problem=host_problem)


# apply's record of the OS trust store files it wrote for a trust:
# {"files": {rel path: sha256 of the content}, "pending": the update command still to run}
SYSTEM_TRUST_KEY = "systemTrust"


def _system_record(state: Mapping[str, Any]) -> tuple[dict[str, str], bool]:
    record = state.get(SYSTEM_TRUST_KEY)
    if not isinstance(record, Mapping):
        return {}, False
    files = record.get("files")
    owned = {str(k): str(v) for k, v in files.items()} if isinstance(files, Mapping) else {}
    return owned, bool(record.get("pending"))


def _install_system_trust(
    opts: HostOptions, trust: str, ca_pem: bytes, state: Mapping[str, Any]
) -> systemtrust.Result:
    """One OS-store file per certificate of the published bundle (split by the strict
    PEM parser, named by fingerprint)."""
    owned, pending = _system_record(state)
    certificates = [
        (
            fingerprint_der(cert.public_bytes(Encoding.DER)),
            cert.public_bytes(Encoding.PEM),
        )
        for cert in parse_certificates(ca_pem, source="the published bundle")
    ]
    try:
        return systemtrust.install(
            opts.host_root,
            trust,
            certificates,
            owned,
            pending=pending,
            command_override=opts.system_trust_command,
        )
    except writer.WriterError as exc:
        raise HostError(f"cannot write the OS trust store under {opts.host_root}: {exc}") from None
    except OSError as exc:
        raise host_error(exc, opts.host_root / (exc.filename or "")) from None


def apply_all(
    manifests: Manifests,
    opts: HostOptions,
    *,
    now: dt.datetime,
    network: Network,
    dry_run: bool = False,
) -> list[TrustResult]:
    migrate_state(opts)
    return [
        apply_trust(m, manifests.sources, opts, now=now, network=network, dry_run=dry_run)
        for m in manifests.trusts
    ]


def delete_plan(manifests: Manifests, opts: HostOptions) -> list[plan.Change]:
    """``--delete --dry-run``: the files apply recorded for these trusts that are there."""
    changes: list[plan.Change] = []
    for m in manifests.trusts:
        name = str((m.get("metadata") or {}).get("name", ""))
        files = _load_state(opts, name).get("files") if name else None
        if isinstance(files, list):
            changes += plan.removals(opts.host_root, [str(f) for f in files])
    return changes


def recorded_states(opts: HostOptions) -> dict[str, dict[str, Any]]:
    """Every trust apply has recorded on this host, by name (``dtrtrust status``)."""
    try:
        names = sorted(p.stem for p in opts.state_dir.glob("*.json"))
    except OSError:
        return {}
    return {name: _load_state(opts, name) for name in names}


@dataclass(frozen=True)
class Removal:
    path: str  # relative to the host root
    action: str  # "removed" | "restored" (a foreign file dtrtrust had replaced is back)


def delete_all(manifests: Manifests, opts: HostOptions) -> list[Removal]:
    """Remove what each trust owns on this host (restoring files it had backed up).
    Every name is checked before anything is removed."""
    names: list[str] = []
    for m in manifests.trusts:
        try:
            names.append(check_name((m.get("metadata") or {}).get("name")))
        except SpecError as exc:
            raise InputError(f"{KIND} {exc.message}: fix the manifest") from None
    migrate_state(opts)
    done: list[Removal] = []
    for name in names:
        result = writer.remove_trust(opts.host_root, name)
        if result.error:
            raise HostError(f"cannot remove the files of {name}: {result.error}")
        for path in result.removed:
            # The writer lists removed and restored paths alike; a path that exists
            # after the removal is a foreign file put back.
            restored = os.path.lexists(opts.host_root / path)
            done.append(Removal(path, "restored" if restored else "removed"))
        failed = [d for d in result.dirs if d.action == "error"]
        if failed:
            raise HostError(f"cannot remove {failed[0].path}: {failed[0].message}")
        state = _load_state(opts, name)
        owned, pending = _system_record(state)
        if opts.system_trust and not owned:
            owned = _legacy_system_files(opts, name)
        if owned:
            try:
                store = systemtrust.remove(
                    opts.host_root,
                    owned,
                    pending=pending,
                    command_override=opts.system_trust_command,
                )
            except writer.WriterError as exc:
                raise HostError(
                    f"cannot remove the OS trust store files of {name}: {exc}"
                ) from None
            except OSError as exc:
                raise host_error(exc, opts.host_root / (exc.filename or "")) from None
            done.extend(Removal(rel, "removed") for rel in store.removed)
            if store.problem:
                log.warning("OS trust store: %s", store.problem)
            elif store.note:
                log.warning("OS trust store: %s", store.note)
        _remove_state(opts, _state_rel(name))
    return done


def _legacy_system_files(opts: HostOptions, trust: str) -> dict[str, str]:
    """The OS-store files earlier versions wrote without a record (Debian layout,
    ``dtrtrust-<trust>-<index>.crt``): exactly those names, never a prefix match."""
    directory = "usr/local/share/ca-certificates"
    pattern = re.compile(rf"dtrtrust-{re.escape(trust)}-[0-9]+\.crt")
    try:
        names = sorted(n for n in os.listdir(opts.host_root / directory) if pattern.fullmatch(n))
    except OSError:
        return {}
    found: dict[str, str] = {}
    for n in names:
        rel = f"{directory}/{n}"
        data = fs.read_file(opts.host_root, rel)
        if data is not None:
            found[rel] = "sha256:" + hashlib.sha256(data).hexdigest()
    return found


def _document(r: TrustResult) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": r.name},
        "status": r.status,
    }
    if r.dry_run:
        # Not part of the resource: what --dry-run found (null: nothing would be written).
        doc["dryRun"] = {
            "wouldWrite": r.changes is not None,
            "changes": [c.to_dict() for c in r.changes or []],
        }
    return doc


def render(results: Iterable[TrustResult], output: str = "yaml") -> str:
    """The statuses as YAML documents, or ``output="json"`` as one JSON List object."""
    docs = [_document(r) for r in results]
    if output == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2) + "\n"
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=100)


_VERBS = {
    plan.ADD: "add",
    plan.REPLACE: "replace",
    plan.REMOVE: "remove",
    plan.CONFLICT: "keep (conflict)",
    plan.REFUSED: "refuse",
}


def render_changes(changes: Sequence[plan.Change]) -> list[str]:
    lines = []
    for c in changes:
        if c.action == plan.UNCHANGED:
            continue
        detail = f"  ({c.detail})" if c.detail else ""
        lines.append(f"  {_VERBS[c.action]:<16}{c.path}{detail}")
    unchanged = sum(c.action == plan.UNCHANGED for c in changes)
    if not lines:
        lines.append("  nothing to change")
    if unchanged:
        lines.append(f"  ({unchanged} file(s) already as they should be)")
    return lines


def render_plan(results: Iterable[TrustResult]) -> str:
    """``--dry-run`` as text: per trust, the files that would be added, replaced, removed."""
    out: list[str] = []
    for r in results:
        if r.changes is None:
            ready = next((c for c in r.status.get("conditions", []) if c["type"] == "Ready"), None)
            why = f"{ready['reason']}: {ready['message']}" if ready else "see the status"
            out.append(f"{r.name}: nothing would be written ({why})")
            continue
        out.append(f"{r.name}: would change under the host root")
        out += render_changes(r.changes)
    return "\n".join(out) + "\n"


def _earliest(state: Mapping[str, Any]) -> str:
    bundle = state.get("bundle") or {}
    return str(bundle.get("notAfter") or "-")


def status_rows(states: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    """``dtrtrust status``: one row per recorded trust."""
    rows = []
    for name, state in states.items():
        ready: Mapping[str, Any] = next(
            (c for c in state.get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        files = state.get("files")
        rows.append(
            {
                "name": name,
                "registry": str(state.get("registry") or "-"),
                "ready": str(ready.get("status") or "Unknown"),
                "reason": str(ready.get("reason") or ""),
                "files": str(len(files)) if isinstance(files, list) else "-",
                "expires": _earliest(state),
            }
        )
    return rows


def render_status_table(rows: Sequence[Mapping[str, str]]) -> str:
    columns = [
        ("NAME", "name"),
        ("REGISTRY", "registry"),
        ("READY", "ready"),
        ("REASON", "reason"),
        ("FILES", "files"),
        ("EXPIRES", "expires"),
    ]
    widths = [max([len(title)] + [len(r[key]) for r in rows]) for title, key in columns]
    lines = ["   ".join(t.ljust(w) for (t, _), w in zip(columns, widths, strict=True)).rstrip()]
    for r in rows:
        cells = (r[key].ljust(w) for (_, key), w in zip(columns, widths, strict=True))
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
