"""What the agent decides, as pure functions: which trusts to sync, remove or keep.

A bundle Secret (``dtrtrust-<trust>``) carries everything an agent needs in its labels,
annotations and data (see :mod:`dtrtrust.contract`); :func:`parse_bundle` reads it,
:func:`selects` matches a trust's nodeSelector against the node's labels, :func:`decide`
turns the view into actions, :func:`sync_state` turns the writer's result into the
node's report entry.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dtrtrust.agent.report import TrustReport
from dtrtrust.contract import (
    ADDRESSES_ANNOTATION,
    CA_KEY,
    CLIENT_CERT_KEY,
    CLIENT_KEY_KEY,
    CONFLICT,
    DEFAULT_TARGETS,
    DELETION_POLICIES,
    ERROR,
    HASH_ANNOTATION,
    KIND,
    NODE_PROBE_ANNOTATION,
    NODE_PROBE_OFF,
    NOT_EFFECTIVE,
    POLICY_ANNOTATION,
    SELECTOR_ANNOTATION,
    SYNCED,
    TARGETS,
    TARGETS_ANNOTATION,
    TRUST_LABEL,
)
from dtrtrust.core import layout
from dtrtrust.core.addresses import validate_address
from dtrtrust.core.fingerprints import content_hash
from dtrtrust.core.labels import selector_problem, selects
from dtrtrust.core.pem_text import certificate_text_problem
from dtrtrust.node import effective, writer


class BundleError(ValueError):
    """A bundle Secret the agent cannot use; the message says what is wrong."""


@dataclass(frozen=True)
class Bundle:
    """What a bundle Secret asks of the nodes."""

    trust: str
    content_hash: str
    addresses: tuple[str, ...]
    targets: tuple[str, ...]
    selector: Mapping[str, str]
    policy: str
    # The data: equal content hashes mean equal data (parse_bundle checked it), so
    # equality ignores the bytes, and a slim copy (:meth:`slim`) equals its original.
    ca: bytes = field(compare=False, repr=False)
    client: tuple[bytes, bytes] | None = field(compare=False, repr=False)
    # uid of the DTRTrust the Secret was published for (its owner reference).
    owner_uid: str | None = None
    # Seconds between probes of unchanged files; None: the probe is off for this trust.
    probe_interval: float | None = None
    has_client: bool = False
    # True: the bytes were dropped once the files were in place (see :meth:`slim`).
    is_slim: bool = field(default=False, compare=False)

    def dirs(self) -> list[layout.DesiredDir]:
        if self.is_slim:
            raise RuntimeError(f"bundle of trust {self.trust} holds no data (slim)")
        return layout.desired_dirs(self.addresses, self.targets, self.ca, self.client)

    def slim(self) -> Bundle:
        """This bundle without its bytes: what the agent keeps once the files are in
        place, so its memory does not grow with the bundles' size (a configMapRefs
        bundle can be hundreds of KiB per trust). Writing it again needs the Secret."""
        return replace(self, ca=b"", client=None, is_slim=True)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def trust_of(secret: Mapping[str, Any]) -> str | None:
    labels = (secret.get("metadata") or {}).get("labels") or {}
    name = labels.get(TRUST_LABEL)
    return str(name) if name else None


def parse_bundle(secret: Mapping[str, Any]) -> Bundle:
    """A Bundle from the Secret's labels, annotations and data. Raises BundleError
    (never with key material in the message)."""
    meta = secret.get("metadata") or {}
    where = f"Secret {meta.get('name')}"
    trust = trust_of(secret)
    if not trust:
        raise BundleError(f"{where} has no {TRUST_LABEL} label")
    notes = meta.get("annotations") or {}
    content_hash_annotation = str(notes.get(HASH_ANNOTATION) or "")
    if not content_hash_annotation:
        raise BundleError(f"{where} has no {HASH_ANNOTATION} annotation")
    addresses = _split(notes.get(ADDRESSES_ANNOTATION))
    if not addresses:
        raise BundleError(f"{where} names no registry in {ADDRESSES_ANNOTATION}")
    for address in addresses:
        try:
            validate_address(address)
        except ValueError as exc:
            raise BundleError(f"{where}: {exc}") from None
    targets = _split(notes.get(TARGETS_ANNOTATION)) or DEFAULT_TARGETS
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise BundleError(
            f"{where}: unknown target {unknown[0]!r} in {TARGETS_ANNOTATION}; "
            "this agent may be older than the operator"
        )
    try:
        selector = json.loads(notes.get(SELECTOR_ANNOTATION) or "{}")
    except ValueError:
        raise BundleError(f"{where}: {SELECTOR_ANNOTATION} is not JSON") from None
    if not isinstance(selector, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
    ):
        raise BundleError(f"{where}: {SELECTOR_ANNOTATION} must map label names to values")
    problem = selector_problem(selector)
    if problem:
        raise BundleError(f"{where}: {SELECTOR_ANNOTATION}: {problem}")
    policy = str(notes.get(POLICY_ANNOTATION) or "Delete")
    if policy not in DELETION_POLICIES:
        raise BundleError(f"{where}: {POLICY_ANNOTATION} must be Delete or Retain")
    probe = str(notes.get(NODE_PROBE_ANNOTATION) or NODE_PROBE_OFF)
    try:
        probe_interval = None if probe == NODE_PROBE_OFF else max(60.0, float(probe))
    except ValueError:
        raise BundleError(
            f"{where}: {NODE_PROBE_ANNOTATION} must be {NODE_PROBE_OFF!r} or seconds"
        ) from None
    data = secret.get("data") or {}
    try:
        decoded = {k: base64.b64decode(v, validate=True) for k, v in data.items()}
    except (binascii.Error, TypeError):
        raise BundleError(f"{where}: its data is not valid base64") from None
    ca = decoded.get(CA_KEY, b"")
    if not ca:
        raise BundleError(f"{where} has no {CA_KEY}")
    cert, key = decoded.get(CLIENT_CERT_KEY), decoded.get(CLIENT_KEY_KEY)
    if bool(cert) != bool(key):
        raise BundleError(f"{where} holds only one of {CLIENT_CERT_KEY} and {CLIENT_KEY_KEY}")
    # Install only what the operator published: the data must be what it hashed.
    if content_hash(decoded) != content_hash_annotation:
        raise BundleError(
            f"{where}: its data does not match its {HASH_ANNOTATION} annotation (edited by "
            "hand?); refusing it and keeping the last good files until the operator "
            "republishes the Secret"
        )
    for name, pem in ((CA_KEY, ca), (CLIENT_CERT_KEY, cert)):
        problem = certificate_text_problem(pem) if pem else None
        if problem:
            raise BundleError(
                f"{where}: {name} is not PEM certificates ({problem}); refusing it and "
                "keeping the last good files"
            )
    owner_uid = next(
        (
            str(ref.get("uid"))
            for ref in meta.get("ownerReferences") or []
            if isinstance(ref, Mapping) and ref.get("kind") == KIND and ref.get("uid")
        ),
        None,
    )
    return Bundle(
        owner_uid=owner_uid,
        trust=trust,
        content_hash=content_hash_annotation,
        addresses=addresses,
        targets=targets,
        selector=dict(selector),
        policy=policy,
        ca=ca,
        client=(cert, key) if cert and key else None,
        probe_interval=probe_interval,
        has_client=bool(cert and key),
    )


@dataclass(frozen=True)
class Action:
    trust: str
    kind: str  # "sync" | "remove" | "retain" | "missing" | "error"
    reason: str = ""
    bundle: Bundle | None = None


def decide(
    bundles: Mapping[str, Bundle | BundleError],
    labels: Mapping[str, str],
    owned: Iterable[str],
    policies: Mapping[str, str],
    trusts: Iterable[str] | None = None,
    existing: Mapping[str, str] | None = None,
    file_uids: Mapping[str, str] | None = None,
) -> list[Action]:
    """What to do for each trust (all of ``bundles`` and ``owned``, or only ``trusts``).

    ``existing`` maps every DTRTrust that exists to its uid (None while unknown: not
    listed yet, or unreadable); ``file_uids`` the uid of the trust the node's files were
    written for, where known.

    - Secret present and the node selected: sync (unless its DTRTrust is known to be
      gone: then it is removed like a gone trust).
    - Secret present, node not selected, files owned: remove ("not selected") with
      policy Delete, keep with Retain (Retain means the same for deselection as for
      deletion, as the CRD says).
    - Secret gone, files owned, and the DTRTrust gone too (or recreated: another uid):
      remove with policy Delete (the default when the policy was never seen), keep with
      Retain.
    - Secret gone while its DTRTrust exists, or the DTRTrusts are unknown: touch nothing
      and report it ("missing"): unknown is not empty.
    - Secret unusable: report the error and touch nothing."""
    owned_set = set(owned)
    names = set(bundles) | owned_set if trusts is None else set(trusts)
    uids = file_uids or {}
    actions: list[Action] = []

    def gone(trust: str, policy: str, why: str) -> Action:
        if policy == "Retain":
            return Action(trust, "retain", f"{why}; deletionPolicy Retain keeps files")
        return Action(trust, "remove", f"{why} (deletionPolicy Delete)")

    for trust in sorted(names):
        bundle = bundles.get(trust)
        if isinstance(bundle, BundleError):
            actions.append(Action(trust, "error", str(bundle)))
        elif bundle is not None:
            if existing is not None and trust not in existing:
                if trust in owned_set:
                    actions.append(gone(trust, bundle.policy, "the trust is gone"))
            elif selects(bundle.selector, labels):
                actions.append(Action(trust, "sync", bundle=bundle))
            elif trust in owned_set and bundle.policy == "Retain":
                actions.append(
                    Action(
                        trust,
                        "retain",
                        "the node is no longer selected; deletionPolicy Retain keeps files",
                    )
                )
            elif trust in owned_set:
                actions.append(Action(trust, "remove", "the node is no longer selected"))
        elif trust in owned_set:
            policy = policies.get(trust, "Delete")
            if existing is None:
                actions.append(
                    Action(
                        trust,
                        "missing",
                        f"its bundle Secret is gone and the DTRTrusts cannot be read yet; "
                        "files are kept until the agent knows whether the trust "
                        f"{trust} still exists",
                    )
                )
            elif trust not in existing:
                actions.append(gone(trust, policy, "the trust is gone"))
            elif trust in uids and uids[trust] != existing[trust]:
                actions.append(gone(trust, policy, "the trust was deleted and created again"))
            else:
                actions.append(
                    Action(
                        trust,
                        "missing",
                        f"its bundle Secret is missing while DTRTrust {trust} exists; files "
                        "are kept until the operator publishes the Secret again",
                    )
                )
    return actions


def sync_state(
    bundle: Bundle, result: writer.SyncResult, findings: Sequence[effective.Finding] = ()
) -> TrustReport:
    """The report for a synced trust from the writer's result; ``findings`` are
    :func:`dtrtrust.node.effective.check` for this trust on this node: a blocking one
    makes it NotEffective, warnings stay in the message of a Synced report."""
    if result.error:
        return TrustReport(bundle.trust, bundle.content_hash, ERROR, result.error)
    conflicts = [d for d in result.dirs if d.action == "conflict"]
    if conflicts:
        first = conflicts[0]
        return TrustReport(
            bundle.trust, bundle.content_hash, CONFLICT, f"{first.path}: {first.message}"
        )
    errors = [d for d in result.dirs if d.action == "error"]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return TrustReport(
            bundle.trust, bundle.content_hash, ERROR, f"{first.path}: {first.message}{more}"
        )
    ok, message = effective.summary(findings)
    if not ok:
        return TrustReport(bundle.trust, bundle.content_hash, NOT_EFFECTIVE, message)
    return TrustReport(bundle.trust, bundle.content_hash, SYNCED, message)


def taint_blockers(
    bundles: Mapping[str, Bundle | BundleError],
    labels: Mapping[str, str],
    reports: Mapping[str, TrustReport],
    *,
    verified: Mapping[str, bool] | None = None,
) -> list[str]:
    """Why the node's startup taint must stay (empty: remove it): every trust that
    selects the node must be reported Synced (written and effective) with the current
    content hash, and, where ``verified`` has an entry for it (the probe is on),
    verified. An unusable bundle Secret might select the node, so it blocks too."""
    blockers: list[str] = []
    for trust, bundle in sorted(bundles.items()):
        if isinstance(bundle, BundleError):
            blockers.append(f"{trust}: its bundle Secret is unusable")
            continue
        if not selects(bundle.selector, labels):
            continue
        report = reports.get(trust)
        if report is None or report.content_hash != bundle.content_hash:
            blockers.append(f"{trust}: not synced yet")
        elif report.state != SYNCED:
            blockers.append(f"{trust}: {report.state}")
        elif verified is not None and not verified.get(trust, True):
            blockers.append(f"{trust}: the registry probe has not passed")
    return blockers
