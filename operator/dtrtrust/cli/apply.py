"""``dtrtrust apply``: the whole job on one host, without a cluster.

Reads DTRTrust manifests (and the Secret / ConfigMap manifests they reference) from
files, runs the same :func:`dtrtrust.core.reconcile.reconcile` as the operator, writes the
node files through the same writer as the agent, and returns each trust's status.
A failed check writes nothing: the previous files stay as they were.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dtrtrust.contract import API_VERSION, CA_KEY, CLIENT_CERT_KEY, CLIENT_KEY_KEY, KIND
from dtrtrust.core import conditions, layout
from dtrtrust.core.conditions import Condition
from dtrtrust.core.network import Network
from dtrtrust.core.reconcile import Previous, reconcile
from dtrtrust.core.spec import SpecError, parse_trust
from dtrtrust.core.status import invalid_spec_status, is_ready, nodes_verified, trust_status
from dtrtrust.core.times import rfc3339
from dtrtrust.node import effective, plan, probe, systemtrust, writer

log = logging.getLogger("dtrtrust.apply")

# Next to the writer's ownership record (<host root>/var/lib/dtrtrust), private like it.
STATE_DIR = f"{writer.STATE_DIR}/apply"


class InputError(Exception):
    """Unusable input files (missing, not YAML). One line for the user."""


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
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
            docs = list(yaml.safe_load_all(text))
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise InputError(f"{path} is not valid YAML{where}") from None
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, Mapping):
                raise InputError(f"{path}: every document must be a Kubernetes object")
            _collect(doc, path, found)
    if not found.trusts:
        raise InputError(f"no {KIND} ({API_VERSION}) found in {', '.join(paths)}")
    return found


def _collect(doc: Mapping[str, Any], path: str, found: Manifests) -> None:
    kind = doc.get("kind")
    name = str((doc.get("metadata") or {}).get("name", ""))
    if kind == "List":
        for item in doc.get("items") or []:
            _collect(item, path, found)
    elif kind == KIND:
        found.trusts.append(doc)
    elif kind == "Secret":
        data: dict[str, bytes] = {}
        for key, value in (doc.get("data") or {}).items():
            try:
                data[key] = base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                raise InputError(f"{path}: Secret {name} key {key} is not base64") from None
        for key, value in (doc.get("stringData") or {}).items():
            data[key] = str(value).encode()
        found.sources.secrets[name] = data
    elif kind == "ConfigMap":
        found.sources.config_maps[name] = {
            str(k): str(v) for k, v in (doc.get("data") or {}).items()
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
    # The per-host probe with exactly the files written (spec.verify.nodes): address,
    # directory, with the client pair -> result. Tests pass their own.
    prober: Callable[[str, Path, bool], probe.ProbeResult] = field(
        default=lambda address, directory, with_client: probe.probe(
            address, directory, with_client=with_client
        )
    )

    @property
    def state_dir(self) -> Path:
        return self.host_root / STATE_DIR

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


def _state_path(opts: HostOptions, name: str) -> Path:
    return opts.state_dir / f"{name}.json"


def _load_state(opts: HostOptions, name: str) -> dict[str, Any]:
    try:
        data = json.loads(_state_path(opts, name).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_state(opts: HostOptions, name: str, state: Mapping[str, Any]) -> None:
    path = _state_path(opts, name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _host_nodes(
    result: writer.SyncResult, findings: Sequence[effective.Finding] = ()
) -> tuple[Condition, dict[str, Any]]:
    """NodesSynced and ``status.nodes`` for this one host, from what the writer did and
    what the effective-trust checks found (the same checks as the agent's)."""
    counts = {"desired": 1, "synced": 1, "summary": "1/1", "outOfSync": []}
    out_of_sync = {"desired": 1, "synced": 0, "summary": "0/1", "outOfSync": [HOST_NODE]}
    if result.error:
        return conditions.failed(conditions.NODES_SYNCED, "NodeErrors", result.error), out_of_sync
    problems = [d for d in result.dirs if d.action not in ("written", "unchanged")]
    ok, message = effective.summary(findings)
    if not problems and not ok:
        return conditions.failed(conditions.NODES_SYNCED, "NotEffective", message), out_of_sync
    if not problems:
        written = sum(d.action == "written" for d in result.dirs)
        return conditions.ok(
            conditions.NODES_SYNCED,
            "Synced",
            f"{len(result.dirs)} director(ies) in place, {written} written."
            + (f" Warning: {message}" if message else ""),
        ), counts
    first = problems[0]
    reason = "Conflict" if first.action == "conflict" else "NodeErrors"
    return conditions.failed(
        conditions.NODES_SYNCED,
        reason,
        f"{first.target} {first.address}: {first.message}"
        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
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
        nodes, counts = _host_nodes(result, findings)
        if spec.verify_nodes and result.ok:
            first = dirs[0]
            found = opts.prober(
                first.address, opts.host_root / str(first.path), out.client is not None
            )
            if not found.ok:
                log.warning("probe of %s: %s: %s", first.address, found.reason, found.message)
            count, verified = nodes_verified([HOST_NODE], {HOST_NODE: found.to_dict(rfc3339(now))})
            counts = {**counts, "verified": count}
        if opts.system_trust:
            systemtrust.install(opts.host_root, spec.name, out.publish[CA_KEY])
    else:
        nodes = conditions.unknown(
            conditions.NODES_SYNCED,
            "KeptPrevious",
            "Nothing was written: the files from the last successful apply stay in place.",
        )
        counts = None
    status = trust_status(spec, out, nodes, counts, previous_status, now=now, verified=verified)

    new_state: dict[str, Any] = dict(state)
    new_state.update({k: status[k] for k in ("conditions", "bundle", "nodes") if k in status})
    new_state["registry"] = spec.registry
    if files is not None:
        new_state["files"] = files
    if out.publish is not None:
        new_state["bundlePEM"] = out.publish[CA_KEY].decode()
    _save_state(opts, spec.name, new_state)
    return TrustResult(spec.name, status, is_ready(status))


def apply_all(
    manifests: Manifests,
    opts: HostOptions,
    *,
    now: dt.datetime,
    network: Network,
    dry_run: bool = False,
) -> list[TrustResult]:
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


def delete_all(manifests: Manifests, opts: HostOptions) -> list[str]:
    """Remove what each trust owns on this host (restoring files it had backed up)."""
    removed: list[str] = []
    for m in manifests.trusts:
        name = str((m.get("metadata") or {}).get("name", ""))
        if not name:
            continue
        result = writer.remove_trust(opts.host_root, name)
        removed.extend(result.removed)
        if opts.system_trust:
            systemtrust.remove(opts.host_root, name)
        _state_path(opts, name).unlink(missing_ok=True)
    return removed


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
