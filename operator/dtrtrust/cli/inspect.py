"""``dtrtrust inspect``: diagnose a registry before (or while) trusting it.

Collects, without trusting anything it is told: what the registry serves at
``/ca`` (fetched unpinned: this is a diagnostic, and the admin is shown the
fingerprints to compare out of band), the TLS chain the server sends, whether its
certificate is valid for the address, whether that chain validates against
``/ca`` alone (as docker's ``certs.d`` would), what ``/basic_info`` reports with
and without the client pair, and the ``pinnedSHA256`` line to paste.

``inspect_registry`` never raises for a registry problem: every failure becomes
part of the report, so an admin sees all of them at once. ``render`` turns the
report into text for a terminal; ``healthy`` says whether the CLI exits 0.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dtrtrust.core.addresses import split_address
from dtrtrust.core.bundle import CertSummary, describe
from dtrtrust.core.chain import (
    build_chain,
    certificate_names,
    hostname_matches,
    hostname_mismatch_message,
)
from dtrtrust.core.errors import CertError
from dtrtrust.core.fingerprints import pin_line
from dtrtrust.core.network import (
    CLIENT_CERT_AUTHN,
    NO_BASIC_INFO,
    FetchError,
    VerifyError,
    default_ca_url,
    harbor_ca_url,
)
from dtrtrust.core.pem import parse_certificates
from dtrtrust.net.fetch import fetch_ca
from dtrtrust.net.transport import network_cause
from dtrtrust.net.verify import peek_chain, probe_basic_info, verify_registry


@dataclass(frozen=True)
class CertInfo:
    """The certificate core's summary plus the names a certificate is valid for."""

    summary: CertSummary
    names: tuple[str, ...]  # subjectAltName DNS names and IPs

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertInfo:
        return cls(summary=describe(cert), names=tuple(certificate_names(cert)))


@dataclass(frozen=True)
class Check:
    """One verdict: ok True/False, or None when it could not be made."""

    ok: bool | None
    message: str


@dataclass(frozen=True)
class Probe:
    """What /basic_info said for one way of asking."""

    with_client: bool
    authn_method: str | None
    error: str | None = None


@dataclass(frozen=True)
class InspectReport:
    registry: str  # host or host:port, as in image references
    ca_url: str
    ca_certificates: tuple[CertInfo, ...]
    ca_error: str | None
    served_chain: tuple[CertInfo, ...]  # leaf first, as the server sent it
    connect_error: str | None
    hostname: Check
    chain: Check  # does the served chain lead to a /ca certificate?
    verdict: Check  # docker/containerd's view: chain + name against /ca only
    probes: tuple[Probe, ...]
    pin_line: str | None
    checked_at: dt.datetime
    pins: tuple[str, ...] = ()  # the fingerprints in pin_line


def _target(url_or_address: str) -> tuple[str, str]:
    """(registry address, CA URL). A URL with a path other than / is taken as the CA URL."""
    text = url_or_address.strip()
    if "://" not in text:
        registry = text.rstrip("/")
        return registry, default_ca_url(registry)
    parts = urlsplit(text)
    registry = parts.netloc.rsplit("@", 1)[-1]
    if parts.path in ("", "/"):
        return registry, default_ca_url(registry)
    return registry, text


def inspect_registry(
    url_or_address: str, client: tuple[bytes, bytes] | None, timeout: float = 10.0
) -> InspectReport:
    now = dt.datetime.now(dt.UTC)
    registry, ca_url = _target(url_or_address)
    try:
        host, _ = split_address(registry)
    except ValueError as err:
        bad = Check(None, f"not a registry address: {err}")
        return InspectReport(
            registry, ca_url, (), str(err), (), str(err), bad, bad, bad, (), None, now
        )

    # /ca, unpinned on purpose: the report shows the fingerprints to compare.
    ca_pem: bytes | None = None
    ca_certs: list[x509.Certificate] = []
    ca_error: str | None = None
    try:
        fetched = fetch_ca(ca_url, pins=(), insecure_skip_pinning=True, timeout=timeout)
        ca_pem = fetched.pem
        ca_certs = parse_certificates(fetched.pem, source=ca_url)
    except (FetchError, CertError) as err:
        ca_error = err.message
    if ca_error is not None and ca_url == default_ca_url(registry):
        # Not DTR / MSR 2-3? Harbor-based MSR 4 serves its CA elsewhere.
        try:
            harbor = harbor_ca_url(registry)
            fetched = fetch_ca(harbor, pins=(), insecure_skip_pinning=True, timeout=timeout)
            ca_pem, ca_url, ca_error = fetched.pem, harbor, None
            ca_certs = parse_certificates(fetched.pem, source=ca_url)
        except (FetchError, CertError):
            pass  # report the error of the default URL

    served: list[x509.Certificate] = []
    connect_error: str | None = None
    try:
        served = peek_chain(registry, timeout=timeout)
    except (OSError, http.client.HTTPException) as err:
        connect_error = f"cannot connect to {registry}: {network_cause(err, host, timeout)}"

    hostname = _hostname_check(served, host)
    chain = _chain_check(served, ca_certs, ca_error)
    verdict = _verdict(registry, ca_pem, served, timeout)
    probes = _probes(registry, client, timeout) if not connect_error else ()
    ca_fps = [CertInfo.of(c) for c in ca_certs]
    pin_fps = [c.summary.sha256 for c in ca_fps if c.summary.is_ca] or [
        c.summary.sha256 for c in ca_fps
    ]
    return InspectReport(
        registry=registry,
        ca_url=ca_url,
        ca_certificates=tuple(ca_fps),
        ca_error=ca_error,
        served_chain=tuple(CertInfo.of(c) for c in served),
        connect_error=connect_error,
        hostname=hostname,
        chain=chain,
        verdict=verdict,
        probes=probes,
        pin_line=pin_line(pin_fps) if pin_fps else None,
        checked_at=now,
        pins=tuple(pin_fps),
    )


def _hostname_check(served: list[x509.Certificate], host: str) -> Check:
    if not served:
        return Check(None, "no certificate to check")
    leaf = served[0]
    names = certificate_names(leaf)
    if hostname_matches(host, names):
        return Check(True, f"the certificate is valid for {host} (valid for {', '.join(names)})")
    return Check(False, hostname_mismatch_message(leaf, host))


def _chain_check(
    served: list[x509.Certificate], ca_certs: list[x509.Certificate], ca_error: str | None
) -> Check:
    if not served:
        return Check(None, "no chain to check")
    if ca_error is not None or not ca_certs:
        return Check(None, "no /ca certificates to check the chain against")
    anchors = {c.public_bytes(serialization.Encoding.DER) for c in ca_certs}

    def anchored(cert: x509.Certificate) -> bool:
        return cert.public_bytes(serialization.Encoding.DER) in anchors

    path = build_chain(served[0], served[1:] + ca_certs, stop=anchored)
    current = path[-1]
    if not anchored(current):
        missing = current.issuer.rfc4514_string()
        if len(path) == 1 and len(served) == 1:
            return Check(
                False,
                f"the server sends only its own certificate and /ca does not contain its "
                f"issuer {missing}: this intermediate is missing; add it to the trust's "
                "ca.pem (or have the registry send it)",
            )
        return Check(
            False,
            f"the chain stops at {current.subject.rfc4514_string()}: its issuer {missing} "
            "is neither sent by the server nor in /ca; add it to ca.pem",
        )
    names = " -> ".join(c.subject.rfc4514_string() for c in path)
    return Check(True, f"the chain validates against /ca alone: {names}")


def _verdict(
    registry: str, ca_pem: bytes | None, served: list[x509.Certificate], timeout: float
) -> Check:
    if ca_pem is None or not served:
        return Check(None, "not checked (no /ca or no connection)")
    try:
        result = verify_registry(registry, ca_pem, None, probe_client_auth=False, timeout=timeout)
    except VerifyError as err:
        return Check(False, f"{err.reason}: {err.message}")
    return Check(True, f"verified: {' -> '.join(result.chain)}")


def _probes(registry: str, client: tuple[bytes, bytes] | None, timeout: float) -> tuple[Probe, ...]:
    probes = []
    for pair in (None, client) if client is not None else (None,):
        try:
            info = probe_basic_info(registry, client=pair, timeout=timeout)
            error = None if info.status == 200 else f"HTTP {info.status}"
            if info.status == 404 and info.authn_method is None:
                error = (
                    f"{NO_BASIC_INFO}; in its DTRTrust set verify.clientAuth: false"
                    if pair is not None
                    else NO_BASIC_INFO
                )
            probes.append(Probe(pair is not None, info.authn_method, error))
        except (VerifyError, ssl.SSLError) as err:
            probes.append(Probe(pair is not None, None, getattr(err, "message", str(err))))
    return tuple(probes)


def healthy(report: InspectReport) -> bool:
    """True when docker would trust the registry with /ca, and with a client pair
    /basic_info reports TLSClientCertificate."""
    if report.verdict.ok is not True:
        return False
    with_client = [p for p in report.probes if p.with_client]
    return all(p.authn_method == CLIENT_CERT_AUTHN for p in with_client)


# --- rendering ---------------------------------------------------------------------------

_MARK = {True: "ok  ", False: "FAIL", None: "--  "}


def _when(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _cert_lines(index: int, info: CertInfo, now: dt.datetime) -> list[str]:
    cert = info.summary
    issuer = "(self-signed)" if cert.issuer == cert.subject else cert.issuer
    if now > cert.not_after:
        state = "  EXPIRED"
    elif now < cert.not_before:
        state = "  NOT YET VALID"
    else:
        state = f"  ({(cert.not_after - now).days} days left)"
    lines = [
        f"  [{index}] {cert.subject or '(empty subject)'}",
        f"      issuer    {issuer}",
        f"      valid     {_when(cert.not_before)} .. {_when(cert.not_after)}{state}",
        f"      CA        {'yes' if cert.is_ca else 'no'}",
    ]
    if info.names:
        lines.append(f"      names     {', '.join(info.names)}")
    lines.append(f"      sha256    {cert.sha256}")
    return lines


def render(report: InspectReport) -> str:
    now = report.checked_at
    out = [f"Registry {report.registry}", ""]
    out.append(f"CA served at {report.ca_url}")
    if report.ca_error:
        out.append(f"  cannot use it: {report.ca_error}")
    for i, cert in enumerate(report.ca_certificates, 1):
        out += _cert_lines(i, cert, now)
    out.append("")
    out.append("TLS chain sent by the server (leaf first)")
    if report.connect_error:
        out.append(f"  {report.connect_error}")
    for i, cert in enumerate(report.served_chain, 1):
        out += _cert_lines(i, cert, now)
    out.append("")
    out.append("Checks")
    out.append(f"  {_MARK[report.hostname.ok]}  host name: {report.hostname.message}")
    out.append(f"  {_MARK[report.chain.ok]}  chain: {report.chain.message}")
    out.append(f"  {_MARK[report.verdict.ok]}  docker with /ca as ca.crt: {report.verdict.message}")
    for probe in report.probes:
        label = (
            "with the client certificate" if probe.with_client else "without a client certificate"
        )
        method = probe.authn_method or "none"
        ok: bool | None
        if probe.error:
            ok, text = (False if probe.with_client else None), f"{probe.error}"
        else:
            ok = (method == CLIENT_CERT_AUTHN) if probe.with_client else None
            text = f"AuthnMethod {method}"
        out.append(f"  {_MARK[ok]}  /basic_info {label}: {text}")
    if not any(p.with_client for p in report.probes) and report.probes:
        out.append("        (pass --client-cert and --client-key to test client certificate auth)")
    out.append("")
    if report.pin_line:
        out.append("Pin (compare the fingerprint with one obtained out of band, then paste")
        out.append("under spec.ca.fetch):")
        if report.ca_url != default_ca_url(report.registry):
            out.append(f"  url: {report.ca_url}")
        out.append(f"  {report.pin_line}")
    else:
        out.append("Pin: none (no certificate could be read from /ca)")
    return "\n".join(out) + "\n"


def _cert_data(info: CertInfo) -> dict[str, object]:
    return {**info.summary.to_status(), "names": list(info.names)}


def _check_data(check: Check) -> dict[str, object]:
    return {"ok": check.ok, "message": check.message}


def report_data(report: InspectReport) -> dict[str, object]:
    """The report as plain data (camelCase keys, RFC 3339 times), for ``-o yaml|json``."""
    fetch: dict[str, object] = {}
    if report.ca_url != default_ca_url(report.registry):
        fetch["url"] = report.ca_url
    if report.pins:
        fetch["pinnedSHA256"] = list(report.pins)
    return {
        "registry": report.registry,
        "caURL": report.ca_url,
        "caError": report.ca_error,
        "caCertificates": [_cert_data(c) for c in report.ca_certificates],
        "connectError": report.connect_error,
        "servedChain": [_cert_data(c) for c in report.served_chain],
        "checks": {
            "hostname": _check_data(report.hostname),
            "chain": _check_data(report.chain),
            "docker": _check_data(report.verdict),
        },
        "basicInfo": [
            {
                "withClientCertificate": p.with_client,
                "authnMethod": p.authn_method,
                "error": p.error,
            }
            for p in report.probes
        ],
        "healthy": healthy(report),
        # What to paste under spec.ca.fetch (empty when /ca gave nothing to pin).
        "fetch": fetch,
        "checkedAt": report.checked_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def render_data(report: InspectReport, output: str) -> str:
    import json

    data = report_data(report)
    if output == "json":
        return json.dumps(data, indent=2) + "\n"
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, width=100))


__all__ = [
    "CertInfo",
    "Check",
    "InspectReport",
    "Probe",
    "healthy",
    "inspect_registry",
    "render",
    "render_data",
    "report_data",
]
