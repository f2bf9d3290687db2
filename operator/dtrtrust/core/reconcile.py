"""One reconcile for every front end.

``dtrtrust apply`` (single host) and the operator (cluster) both call
:func:`reconcile`: resolve every CA source, compose and validate the bundle, check
the client pair, verify the registry, and decide what to publish. The front ends only
differ in where sources come from (:class:`Sources`), where the result goes (files or
a Secret) and how node sync is measured.

Nothing here does I/O or imports a Kubernetes client. The network is a required
argument (:class:`dtrtrust.core.network.Network`): the front ends pass the live one
(:mod:`dtrtrust.net.live`), the operator a cached one run in a thread, tests their own
or the live one pointed at real local TLS servers.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.serialization import Encoding

from dtrtrust.contract import (
    CA_KEY,
    CLIENT_CERT_KEY,
    CLIENT_KEY_KEY,
    TLS_CERT_KEY,
    TLS_KEY_KEY,
    secret_name,
)
from dtrtrust.core import conditions
from dtrtrust.core.addresses import split_address
from dtrtrust.core.bundle import Bundle, compose_bundle
from dtrtrust.core.chain import hostname_matches
from dtrtrust.core.client import ClientPair, validate_client_pair
from dtrtrust.core.conditions import Condition
from dtrtrust.core.errors import CertError
from dtrtrust.core.fingerprints import content_hash, fingerprint_der
from dtrtrust.core.network import FetchError, Network, VerifyError, VerifyResult
from dtrtrust.core.pem import parse_certificates
from dtrtrust.core.spec import TrustSpec
from dtrtrust.core.times import parse_rfc3339, rfc3339


class Sources(Protocol):
    """Where Secret and ConfigMap references resolve (operator namespace, or the
    manifests given to ``dtrtrust apply``)."""

    def secret(self, name: str) -> Mapping[str, bytes] | None: ...

    def config_map(self, name: str) -> Mapping[str, str] | None: ...


@dataclass(frozen=True)
class RetiredCA:
    """A fetched CA that the registry no longer serves, kept for the overlap window."""

    sha256: str
    retired_at: dt.datetime

    def to_status(self, overlap: dt.timedelta) -> dict[str, str]:
        return {
            "sha256": self.sha256,
            "retiredAt": rfc3339(self.retired_at),
            "removeAfter": rfc3339(self.retired_at + overlap),
        }


@dataclass(frozen=True)
class Previous:
    """What the last successful reconcile left: the published bundle and the rotation
    state, read back from the Secret and status (operator) or the state file (apply)."""

    bundle_pem: bytes | None = None
    fetched: tuple[str, ...] = ()
    retired: tuple[RetiredCA, ...] = ()

    @classmethod
    def from_status(
        cls, bundle_status: Mapping[str, Any] | None, bundle_pem: bytes | None
    ) -> Previous:
        status = bundle_status or {}
        retired = []
        for item in status.get("previousCAs") or []:
            try:
                when = parse_rfc3339(str(item["retiredAt"]))
                retired.append(RetiredCA(str(item["sha256"]), when))
            except (KeyError, ValueError):
                continue
        return cls(
            bundle_pem=bundle_pem,
            fetched=tuple(str(s) for s in status.get("fetchedSHA256") or []),
            retired=tuple(retired),
        )


@dataclass
class Outcome:
    conditions: list[Condition]
    publish: dict[str, bytes] | None = (
        None  # Secret data / files to publish; None keeps the last good
    )
    content_hash: str | None = None
    bundle: Bundle | None = None
    client: ClientPair | None = None
    fetched: tuple[str, ...] = ()
    retired: tuple[RetiredCA, ...] = ()
    pinned: bool = True
    warnings: list[str] = field(default_factory=list)
    temporary: bool = False  # a retry may fix it (registry or source unreachable)
    fetch_seconds: float | None = None

    @property
    def failed(self) -> Condition | None:
        return next((c for c in self.conditions if c.status != conditions.TRUE), None)

    def bundle_status(self, spec: TrustSpec) -> dict[str, Any]:
        """``status.bundle`` (no key material: summaries and hashes only)."""
        if self.bundle is None:
            return {}
        overlap = spec.ca.fetch.rotation_overlap if spec.ca.fetch else dt.timedelta(0)
        not_after = self.bundle.not_after
        if self.client is not None:
            not_after = min(not_after, self.client.summary.not_after)
        out: dict[str, Any] = {
            "sha256": self.content_hash,
            "caSHA256": self.bundle.sha256,
            "secretName": secret_name(spec.name),
            "notAfter": rfc3339(not_after),
            "certificates": [c.to_status() for c in self.bundle.certificates],
            "fetchedSHA256": list(self.fetched),
            "previousCAs": [r.to_status(overlap) for r in self.retired],
            "pinned": self.pinned,
        }
        if self.client is not None:
            out["clientCertificate"] = self.client.summary.to_status()
        return out


def _resolve_sources(
    spec: TrustSpec,
    sources: Sources,
    network: Network,
    previous: Previous,
    now: dt.datetime,
    out: Outcome,
) -> list[tuple[str, bytes]] | None:
    """CAAvailable: every configured source, in a fixed order. Returns the PEM inputs
    or None (after recording the failed condition)."""
    inputs: list[tuple[str, bytes]] = []
    ca = spec.ca
    if ca.fetch is not None:
        started = time.monotonic()
        try:
            got = network.fetch_ca(
                ca.fetch.url,
                pins=ca.fetch.pins,
                insecure_skip_pinning=ca.fetch.insecure_skip_pinning,
            )
        except (FetchError, CertError) as exc:
            out.fetch_seconds = time.monotonic() - started
            out.temporary = getattr(exc, "reason", "") == "FetchFailed"
            out.conditions.append(
                conditions.failed(conditions.CA_AVAILABLE, exc.reason, exc.message)
            )
            return None
        out.fetch_seconds = time.monotonic() - started
        out.pinned = got.pinned
        out.fetched = tuple(sorted(got.accepted))
        inputs.append((f"ca.fetch {ca.fetch.url}", got.pem))
        inputs.extend(_rotation(spec, previous, now, out))
    if ca.pem:
        inputs.append(("spec.ca.pem", ca.pem.encode()))
    for ref in ca.secret_refs:
        data = sources.secret(ref.name)
        if data is None or ref.key not in data:
            _missing(out, "Secret", ref.name, ref.key, data is None)
            return None
        inputs.append((f"Secret {ref.name} key {ref.key}", data[ref.key]))
    for ref in ca.config_map_refs:
        cm = sources.config_map(ref.name)
        if cm is None or ref.key not in cm:
            _missing(out, "ConfigMap", ref.name, ref.key, cm is None)
            return None
        inputs.append((f"ConfigMap {ref.name} key {ref.key}", cm[ref.key].encode()))

    if ca.fetch is not None and not out.pinned:
        out.conditions.append(
            conditions.ok(
                conditions.CA_AVAILABLE,
                "Unpinned",
                f"Fetched {ca.fetch.url} WITHOUT pinning (insecureSkipPinning: true): anyone "
                "on the path could have served it. Pin it: add the sha256 shown in "
                "status.bundle.fetchedSHA256 to spec.ca.fetch.pinnedSHA256.",
            )
        )
    else:
        out.conditions.append(
            conditions.ok(
                conditions.CA_AVAILABLE,
                "Resolved",
                f"{len(inputs)} CA source(s) resolved"
                + (", fetched CA matches a pin" if ca.fetch is not None else "")
                + ".",
            )
        )
    return inputs


def _missing(out: Outcome, kind: str, name: str, key: str, whole: bool) -> None:
    what = f"{kind} {name}" if whole else f"key {key!r} in {kind} {name}"
    out.temporary = True
    out.conditions.append(
        conditions.failed(
            conditions.CA_AVAILABLE,
            "SourceNotFound",
            f"{what} not found in the operator namespace: create it or fix spec.ca.",
        )
    )


def _rotation(
    spec: TrustSpec, previous: Previous, now: dt.datetime, out: Outcome
) -> list[tuple[str, bytes]]:
    """Keep CAs the registry stopped serving for ``rotationOverlap``, so nodes trust
    both the old and the new CA while the registry's certificate is being replaced."""
    assert spec.ca.fetch is not None
    overlap = spec.ca.fetch.rotation_overlap
    current = set(out.fetched)
    retired = {r.sha256: r for r in previous.retired if r.sha256 not in current}
    for sha in previous.fetched:
        if sha not in current and sha not in retired:
            retired[sha] = RetiredCA(sha, now)
    keep = {s: r for s, r in retired.items() if now < r.retired_at + overlap}
    pems = _certs_by_sha(previous.bundle_pem)
    kept_inputs = []
    for sha in sorted(keep):
        pem = pems.get(sha)
        if pem is None:
            out.warnings.append(
                f"previous CA {sha} is no longer in the published bundle; "
                "it cannot be kept for the rotation overlap"
            )
            continue
        kept_inputs.append((f"previous CA {sha} (rotation overlap)", pem))
    out.retired = tuple(r for s, r in sorted(keep.items()) if s in pems)
    return kept_inputs


def _certs_by_sha(bundle_pem: bytes | None) -> dict[str, bytes]:
    if not bundle_pem:
        return {}
    try:
        parsed = parse_certificates(bundle_pem, source="the previous bundle")
    except CertError:
        return {}
    return {
        fingerprint_der(c.public_bytes(Encoding.DER)): c.public_bytes(Encoding.PEM) for c in parsed
    }


def _client(
    spec: TrustSpec,
    sources: Sources,
    override: tuple[bytes, bytes] | None,
    now: dt.datetime,
    out: Outcome,
) -> bool:
    """ClientCertificateValid (only with a client certificate). False on failure."""
    if override is not None:
        pair, where = override, "the --client-cert/--client-key files"
    elif spec.client_secret is not None:
        data = sources.secret(spec.client_secret)
        where = f"Secret {spec.client_secret}"
        if data is None or TLS_CERT_KEY not in data or TLS_KEY_KEY not in data:
            out.temporary = True
            out.conditions.append(
                conditions.failed(
                    conditions.CLIENT_CERTIFICATE_VALID,
                    "SecretNotFound",
                    f"{where} "
                    + (
                        "not found in the operator namespace"
                        if data is None
                        else "lacks tls.crt or tls.key"
                    )
                    + ": create a kubernetes.io/tls Secret with the client certificate and key.",
                )
            )
            return False
        pair = (data[TLS_CERT_KEY], data[TLS_KEY_KEY])
    else:
        return True
    try:
        out.client = validate_client_pair(pair[0], pair[1], now=now)
    except CertError as exc:
        out.conditions.append(
            conditions.failed(
                conditions.CLIENT_CERTIFICATE_VALID, exc.reason, f"{where}: {exc.message}"
            )
        )
        return False
    out.warnings.extend(out.client.warnings)
    out.conditions.append(
        conditions.ok(
            conditions.CLIENT_CERTIFICATE_VALID,
            "Valid",
            f"{where}: {out.client.summary.subject}, valid until "
            f"{rfc3339(out.client.summary.not_after)}.",
        )
    )
    return True


def reconcile(
    spec: TrustSpec,
    *,
    sources: Sources,
    now: dt.datetime,
    network: Network,
    previous: Previous | None = None,
    client_override: tuple[bytes, bytes] | None = None,
) -> Outcome:
    """Decide the trust material for ``spec``. Never raises for bad input: every
    problem is a condition. ``publish`` is set only when every check passed; otherwise
    the caller keeps what it published last."""
    previous = previous or Previous()
    out = Outcome(conditions=[])

    inputs = _resolve_sources(spec, sources, network, previous, now, out)
    bundle_ok = False
    if inputs is None:
        out.conditions.append(
            conditions.unknown(
                conditions.BUNDLE_VALID, "SourcesUnavailable", "Waiting for every CA source."
            )
        )
    else:
        try:
            out.bundle = compose_bundle(inputs, now=now)
        except CertError as exc:
            out.conditions.append(
                conditions.failed(conditions.BUNDLE_VALID, exc.reason, exc.message)
            )
        else:
            bundle_ok = True
            out.warnings.extend(out.bundle.warnings)
            out.conditions.append(
                conditions.ok(
                    conditions.BUNDLE_VALID,
                    "Valid",
                    f"{len(out.bundle.certificates)} CA certificate(s), earliest expiry "
                    f"{rfc3339(out.bundle.not_after)}.",
                )
            )

    client_ok = _client(spec, sources, client_override, now, out)

    if not (bundle_ok and client_ok) or out.bundle is None:
        out.conditions.append(
            conditions.unknown(
                conditions.REGISTRY_VERIFIED,
                "NotChecked",
                "Waiting for a valid bundle and client certificate.",
            )
        )
        return out

    if not spec.verify_tls:
        out.conditions.append(
            conditions.ok(
                conditions.REGISTRY_VERIFIED,
                "VerificationDisabled",
                "spec.verify.tls is false: the bundle was not checked against the registry.",
            )
        )
    else:
        pair = (out.client.cert_pem, out.client.key_pem) if out.client else None
        probe = spec.verify_client_auth and pair is not None
        try:
            result = network.verify_registry(
                spec.registry, out.bundle.pem, pair, probe_client_auth=probe
            )
        except VerifyError as exc:
            out.temporary = exc.reason == "Unreachable"
            out.conditions.append(
                conditions.failed(conditions.REGISTRY_VERIFIED, exc.reason, exc.message)
            )
            return out
        wrong = _aliases_not_covered(spec, result)
        if wrong:
            out.conditions.append(
                conditions.failed(
                    conditions.REGISTRY_VERIFIED,
                    "HostnameMismatch",
                    f"the registry certificate is valid for {', '.join(result.names)}, not "
                    f"for the alias(es) {', '.join(wrong)}: docker and containerd would refuse "
                    "pulls through them; add them to the certificate's SANs or drop them "
                    "from spec.aliases",
                )
            )
            return out
        detail = f" and /basic_info reports {result.authn_method}" if probe else ""
        out.conditions.append(
            conditions.ok(
                conditions.REGISTRY_VERIFIED,
                "Verified",
                f"The bundle validates {spec.registry}'s TLS chain and name{detail}.",
            )
        )

    data = {CA_KEY: out.bundle.pem}
    if out.client is not None:
        data[CLIENT_CERT_KEY] = out.client.cert_pem
        data[CLIENT_KEY_KEY] = out.client.key_pem
    out.publish = data
    out.content_hash = content_hash(data)
    return out


def _aliases_not_covered(spec: TrustSpec, result: VerifyResult) -> list[str]:
    """Aliases the registry's certificate is not valid for. Only the registry address is
    dialled (an alias, often an internal IP, may be unreachable from the operator), but
    the certificate must name each alias for a node's pull through it to work."""
    if not result.names:
        return []
    return [
        alias
        for alias in spec.aliases
        if not hostname_matches(split_address(alias)[0], result.names)
    ]


def summarize(conds: Sequence[Condition]) -> str:
    """One line for logs and the CLI: ``Ready`` or the first failure."""
    failed = next((c for c in conds if c.status != conditions.TRUE), None)
    return (
        "Ready"
        if failed is None
        else f"{failed.type}={failed.status} {failed.reason}: {failed.message}"
    )
