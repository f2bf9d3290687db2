"""Certificate chains and names, as Go's crypto/x509 sees them (pure).

docker and containerd are Go programs: they match a registry address against the
certificate's subjectAltName only (never the legacy Common Name), and build a chain from
the leaf through any certificate of the pool. The operator's verification, ``inspect``
and the messages that explain a failure all use this one matcher and this one chain
builder, so they agree with what a node will do.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature

MAX_CHAIN = 10


def hostname_matches(host: str, names: Sequence[str]) -> bool:
    """Whether a certificate valid for ``names`` (its subjectAltName DNS names and IPs)
    is valid for ``host``, by the rules Go's crypto/x509 applies for docker and
    containerd: IPs match IP entries only; DNS names case-insensitively; a wildcard
    only as the whole leftmost label, standing for exactly one label."""
    host = host.strip().rstrip(".").lower()
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for name in names:
        if ip is not None:
            try:
                if ipaddress.ip_address(name) == ip:
                    return True
            except ValueError:
                pass
            continue
        name = name.strip().rstrip(".").lower()
        if name == host:
            return True
        label, _, rest = host.partition(".")
        if name.startswith("*.") and label and rest and rest == name[2:]:
            return True
    return False


def certificate_names(cert: x509.Certificate) -> list[str]:
    """DNS names and IP addresses of a certificate's subjectAltName, in order."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names: list[str] = list(sans.get_values_for_type(x509.DNSName))
    names += [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    return names


def common_name(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):  # wrong key, unsupported key type
        return False
    return True


def build_chain(
    leaf: x509.Certificate,
    pool: Sequence[x509.Certificate],
    *,
    stop: Callable[[x509.Certificate], bool],
) -> list[x509.Certificate]:
    """``leaf``, then issuers from ``pool`` (signature checked, no certificate twice),
    until ``stop`` says the last one is an anchor or no issuer is found. The caller
    tells which of the two happened with ``stop(chain[-1])``."""
    chain = [leaf]
    while len(chain) < MAX_CHAIN and not stop(chain[-1]):
        current = chain[-1]
        issuer = next((c for c in pool if c not in chain and issued_by(current, c)), None)
        if issuer is None:
            break
        chain.append(issuer)
    return chain


def hostname_mismatch_message(leaf: x509.Certificate | None, host: str) -> str:
    if leaf is None:
        return f"the registry's certificate is not valid for {host}"
    names = certificate_names(leaf)
    if not names:
        cn = common_name(leaf)
        return (
            f"x509: the registry's certificate has no subjectAltName, only the legacy Common "
            f"Name {cn!r}, which docker and containerd (Go) ignore: reissue it with {host} "
            "in its subjectAltName"
        )
    return (
        f"x509: certificate is valid for {', '.join(names)}, not {host}: add the address to "
        "the certificate's SANs or use one of these names"
    )


def unknown_authority_message(served: Sequence[x509.Certificate], registry: str) -> str:
    if not served:
        return (
            f"x509: certificate signed by unknown authority: the CA bundle does not anchor "
            f"{registry}'s chain: add the missing root or intermediate to ca.pem"
        )
    top = served[-1]
    leaf = served[0]
    if len(served) == 1 and leaf.issuer != leaf.subject:
        return (
            f"x509: certificate signed by unknown authority: {registry} sends only its own "
            f"certificate ({leaf.subject.rfc4514_string()}), issued by "
            f"{leaf.issuer.rfc4514_string()}, and the CA bundle does not contain that issuer: "
            "add the intermediate to ca.pem"
        )
    return (
        f"x509: certificate signed by unknown authority: {registry}'s chain ends at "
        f"{top.subject.rfc4514_string()}, issued by {top.issuer.rfc4514_string()}, which the "
        "CA bundle does not contain: add that CA (and any intermediate) to ca.pem"
    )
