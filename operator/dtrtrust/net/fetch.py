"""Fetch a registry's CA from ``/ca`` (``curl -k``, but pinned).

The server's TLS certificate is not verified: the pin is the trust. At least one served
certificate must match a pin and only the certificates that match a pin are returned, so
a compromised or spoofed /ca cannot smuggle an extra root in next to the pinned one. Pins,
when given, are always enforced; ``insecure_skip_pinning`` only allows a fetch without
pins. At most three redirects, to the same host, never from https to http.
"""

from __future__ import annotations

import http.client
from collections.abc import Sequence
from urllib.parse import urljoin, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dtrtrust.core.errors import CertError
from dtrtrust.core.fingerprints import fingerprint_der, parse_fingerprint, pin_line
from dtrtrust.core.network import HARBOR_CA_PATH, FetchedCA, FetchError
from dtrtrust.core.pem import parse_certificates
from dtrtrust.net.transport import (
    REDIRECT_STATUSES,
    Deadline,
    connect,
    get,
    network_cause,
    unverified_context,
)

MAX_REDIRECTS = 3
MAX_CA_BYTES = 1 << 20


def fetch_ca(
    url: str,
    *,
    pins: tuple[str, ...],
    insecure_skip_pinning: bool,
    timeout: float = 10.0,
    max_bytes: int = MAX_CA_BYTES,
) -> FetchedCA:
    """GET ``url`` without verifying TLS (the pin is the trust), within ``timeout``
    seconds in total, at most ``max_bytes`` of body, following at most three
    redirects to the same host; the body must be strict PEM certificates. At least
    one served certificate must match a pin; only those are returned."""
    wanted: list[str] = []
    for pin in pins:
        try:
            wanted.append(parse_fingerprint(pin))
        except CertError as err:
            raise FetchError(err.reason, f"ca.fetch.pinnedSHA256: {err.message}") from None
    body, content_type, final_url = _download(url, timeout=timeout, max_bytes=max_bytes)
    certificates = _certificates_from_body(url, body, content_type)
    served = [
        (fingerprint_der(c.public_bytes(serialization.Encoding.DER)), c) for c in certificates
    ]
    fingerprints = tuple(fp for fp, _ in served)

    if not wanted:
        if not insecure_skip_pinning:
            raise FetchError(
                "Unpinned",
                f"{url} is not pinned, so its certificates are not trusted: it served "
                f"{_describe_served(served)}; check the fingerprint out of band "
                "(openssl x509 -in ca.crt -noout -fingerprint -sha256) and set "
                f"ca.fetch.{pin_line(fingerprints)}, or set insecureSkipPinning: true",
            )
        accepted = served
    else:
        accepted = [(fp, c) for fp, c in served if fp in wanted]
        if not accepted:
            raise FetchError(
                "FingerprintMismatch",
                f"no certificate served by {url} matches ca.fetch.pinnedSHA256: it served "
                f"{_describe_served(served)}; if the registry's CA was replaced on purpose, "
                "check the new fingerprint out of band and update pinnedSHA256",
            )
    return FetchedCA(
        url=url,
        pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for _, c in accepted),
        fingerprints=fingerprints,
        pinned=bool(wanted),
        accepted=tuple(fp for fp, _ in accepted),
        final_url=final_url,
    )


def _describe_served(served: Sequence[tuple[str, x509.Certificate]]) -> str:
    parts = [f"{c.subject.rfc4514_string() or '(empty subject)'} {fp}" for fp, c in served]
    return "; ".join(parts)


def _download(url: str, *, timeout: float, max_bytes: int) -> tuple[bytes, str, str]:
    """(body, content type, final URL) of a 200 answer, following same-host redirects."""
    deadline = Deadline(timeout)
    current = url
    first_host: str | None = None
    for hop in range(MAX_REDIRECTS + 1):
        parts = urlsplit(current)
        scheme = parts.scheme.lower()
        if scheme not in {"https", "http"}:
            raise FetchError(
                "FetchFailed", f"{current}: ca.fetch.url must start with https:// (or http://)"
            )
        try:
            host = parts.hostname or ""
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise FetchError("FetchFailed", f"{current}: the port is not a number") from None
        if not host:
            raise FetchError("FetchFailed", f"{current}: no host in ca.fetch.url")
        if first_host is None:
            first_host = host.lower()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            context = unverified_context() if scheme == "https" else None
            with connect(host, port, context, deadline) as sock:
                response, body = get(
                    sock,
                    host,
                    port,
                    target,
                    tls=context is not None,
                    max_bytes=max_bytes,
                    url=url,
                    accept="application/x-pem-file, text/plain, */*",
                )
        except FetchError:
            raise
        except (OSError, http.client.HTTPException) as err:
            cause = network_cause(err, host, timeout)
            raise FetchError(
                "FetchFailed",
                f"cannot fetch {url}: {cause}: check that the registry is up and that "
                "ca.fetch.url (host, port, scheme) is right",
            ) from None
        if response.status in REDIRECT_STATUSES:
            location = response.getheader("Location")
            if not location:
                raise FetchError(
                    "FetchFailed", f"{current} answered {response.status} without a Location"
                )
            if hop == MAX_REDIRECTS:
                break
            following = urljoin(current, location)
            _check_redirect(url, current, following, first_host)
            current = following
            continue
        if response.status != 200:
            raise FetchError(
                "FetchFailed",
                f"{url} answered HTTP {response.status} {response.reason}: "
                "check ca.fetch.url (DTR and MSR 2/3 serve their CA at /ca, Harbor-based "
                f"MSR 4 at {HARBOR_CA_PATH}; `dtrtrust inspect` finds it)",
            )
        return body, response.getheader("Content-Type") or "", current
    raise FetchError(
        "FetchFailed",
        f"{url} redirected more than {MAX_REDIRECTS} times: set ca.fetch.url to the final URL",
    )


def _check_redirect(url: str, current: str, following: str, first_host: str) -> None:
    target = urlsplit(following)
    scheme = target.scheme.lower()
    host = (target.hostname or "").lower()
    if host != first_host:
        raise FetchError(
            "FetchFailed",
            f"refused the cross-host redirect from {url} to {following}: "
            "set ca.fetch.url to the final URL if that host is the right one",
        )
    if scheme != "https" and not (scheme == "http" and urlsplit(current).scheme == "http"):
        raise FetchError(
            "FetchFailed",
            f"refused the redirect from {current} to {following}: it leaves https; "
            "set ca.fetch.url to the final URL if that is intended",
        )


def _certificates_from_body(url: str, body: bytes, content_type: str) -> list[x509.Certificate]:
    head = body.lstrip()[:512].lower()
    if "html" in content_type.lower() or head.startswith((b"<!doctype", b"<html", b"<")):
        raise FetchError(
            "FetchFailed",
            f"{url} returned HTML, not a PEM certificate: is the URL the registry's /ca "
            "endpoint (and not a login page or a proxy's error page)?",
        )
    if not head:
        raise FetchError("FetchFailed", f"{url} returned an empty body, not a PEM certificate")
    if b"-----begin" not in head and body[:1] == b"\x30":
        raise FetchError(
            "InvalidPEM",
            f"{url} returned a binary (DER) certificate, not PEM: convert it with "
            "openssl x509 -inform der and put it in ca.pem instead",
        )
    try:
        parsed = parse_certificates(body, source=url)
    except CertError as err:
        raise FetchError("InvalidPEM", err.message) from None
    certificates = [c for c in parsed if isinstance(c, x509.Certificate)]
    if not certificates:
        raise FetchError("FetchFailed", f"{url} returned no certificate")
    return certificates
