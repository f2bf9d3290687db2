"""``dtrtrust apply``: the whole job on one host, without a cluster.

Reads DTRTrust manifests (and the Secret / ConfigMap manifests they reference) from
files, runs the same :func:`dtrtrust.reconcile.reconcile` as the operator, writes the
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
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dtrtrust import conditions, layout
from dtrtrust.conditions import Condition
from dtrtrust.node import writer
from dtrtrust.reconcile import CA_KEY, Network, Outcome, Previous, reconcile
from dtrtrust.spec import API_VERSION, KIND, SpecError, TrustSpec, parse_trust

log = logging.getLogger("dtrtrust.apply")

# Next to the writer's ownership record (<host root>/var/lib/dtrtrust), private like it.
STATE_DIR = f"{writer.STATE_DIR}/apply"
SYSTEM_TRUST_DIR = "usr/local/share/ca-certificates"


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


@dataclass
class HostOptions:
    host_root: Path = Path("/")
    home: str = field(default_factory=lambda: os.environ.get("HOME", "/root"))
    system_trust: bool = False
    client_override: tuple[bytes, bytes] | None = None

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


def _nodes_condition(result: writer.SyncResult) -> Condition:
    if result.error:
        return conditions.failed(conditions.NODES_SYNCED, "NodeErrors", result.error)
    problems = [d for d in result.dirs if d.action not in ("written", "unchanged")]
    if not problems:
        written = sum(d.action == "written" for d in result.dirs)
        return conditions.ok(
            conditions.NODES_SYNCED,
            "Synced",
            f"{len(result.dirs)} director(ies) in place, {written} written.",
        )
    first = problems[0]
    reason = "Conflict" if first.action == "conflict" else "NodeErrors"
    return conditions.failed(
        conditions.NODES_SYNCED,
        reason,
        f"{first.target} {first.address}: {first.message}"
        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
    )


def _system_trust(opts: HostOptions, spec: TrustSpec, ca_pem: bytes | None) -> list[str]:
    """Install (or with ca_pem None remove) the bundle in the Debian/Ubuntu trust store.
    Returns the files it now owns, relative to the host root."""
    directory = opts.host_root / SYSTEM_TRUST_DIR
    prefix = f"dtrtrust-{spec.name}"
    owned = sorted(directory.glob(f"{prefix}*.crt")) if directory.is_dir() else []
    want: dict[str, bytes] = {}
    if ca_pem is not None:
        blocks = [b for b in ca_pem.split(b"-----END CERTIFICATE-----") if b.strip()]
        for i, block in enumerate(blocks):
            want[f"{prefix}-{i}.crt"] = block.strip() + b"\n-----END CERTIFICATE-----\n"
    changed = False
    for path in owned:
        if path.name not in want:
            path.unlink()
            changed = True
    if want:
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    for fname, content in want.items():
        path = directory / fname
        if path.exists() and path.read_bytes() == content:
            continue
        tmp = path.with_name(f".{fname}.tmp")
        tmp.write_bytes(content)
        tmp.chmod(0o644)
        os.replace(tmp, path)
        changed = True
    if changed and opts.host_root == Path("/"):
        subprocess.run(["update-ca-certificates"], check=False, capture_output=True)
    elif changed:
        log.info(
            "system trust written under %s; run update-ca-certificates on that host", opts.host_root
        )
    return [str(Path(SYSTEM_TRUST_DIR) / f) for f in want]


def _status(spec: TrustSpec, out: Outcome, conds: list[Condition]) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": spec.generation,
        "conditions": [c.to_dict() for c in conds],
    }
    bundle = out.bundle_status(spec)
    if bundle:
        status["bundle"] = bundle
    synced = conditions.find(conds, conditions.NODES_SYNCED)
    in_sync = synced is not None and synced.status == conditions.TRUE
    status["nodes"] = {
        "desired": 1,
        "synced": int(in_sync),
        "summary": f"{int(in_sync)}/1",
        "outOfSync": [] if in_sync else ["localhost"],
    }
    if out.warnings:
        status["warnings"] = list(out.warnings)
    return status


def apply_trust(
    manifest: Mapping[str, Any],
    sources: ManifestSources,
    opts: HostOptions,
    *,
    now: dt.datetime,
    network: Network | None = None,
) -> TrustResult:
    name = str((manifest.get("metadata") or {}).get("name", "?"))
    state = _load_state(opts, name)
    try:
        spec = parse_trust(manifest)
    except SpecError as exc:
        cond = conditions.failed(conditions.READY, exc.reason, exc.message)
        merged = conditions.merge(state.get("conditions"), [cond], generation=0, now=now)
        return TrustResult(name, {"conditions": [c.to_dict() for c in merged]}, False)

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
    conds = list(out.conditions)
    if out.publish is not None:
        dirs = layout.desired_dirs(
            spec.addresses,
            spec.targets,
            out.publish[CA_KEY],
            (out.publish["client.cert"], out.publish["client.key"]) if out.client else None,
            home=opts.home_rel,
        )
        result = writer.sync_trust(opts.host_root, spec.name, dirs)
        for d in result.dirs:
            log.info("%s %s: %s %s", d.target, d.address, d.action, d.message)
        conds.append(_nodes_condition(result))
        if opts.system_trust:
            _system_trust(opts, spec, out.publish[CA_KEY])
    else:
        conds.append(
            conditions.unknown(
                conditions.NODES_SYNCED,
                "KeptPrevious",
                "Nothing was written: the files from the last successful apply stay in place.",
            )
        )
    conds.append(conditions.ready(conds))
    merged = conditions.merge(state.get("conditions"), conds, generation=spec.generation, now=now)
    status = _status(spec, out, merged)

    new_state: dict[str, Any] = dict(state)
    new_state["conditions"] = status["conditions"]
    if out.publish is not None:
        new_state["bundle"] = status.get("bundle", {})
        new_state["bundlePEM"] = out.publish[CA_KEY].decode()
    _save_state(opts, spec.name, new_state)
    ready = conditions.find(merged, conditions.READY)
    return TrustResult(spec.name, status, ready is not None and ready.status == conditions.TRUE)


def apply_all(
    manifests: Manifests, opts: HostOptions, *, now: dt.datetime, network: Network | None = None
) -> list[TrustResult]:
    return [
        apply_trust(m, manifests.sources, opts, now=now, network=network) for m in manifests.trusts
    ]


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
            try:
                spec = parse_trust(m)
            except SpecError:
                continue
            _system_trust(opts, spec, None)
        _state_path(opts, name).unlink(missing_ok=True)
    return removed


def render(results: Iterable[TrustResult]) -> str:
    docs = [
        {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": r.name}, "status": r.status}
        for r in results
    ]
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=100)
