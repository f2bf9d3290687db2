"""Registry addresses: the one parser (pure).

An address is ``host`` or ``host:port`` exactly as in image references: a lowercase DNS
name, an IPv4 address or a bracketed IPv6 address, optionally a port. The same strict
rules apply at admission (the spec), in the node file layout (the address is a directory
name), in the agent (the address comes from a Secret annotation), and on the network
(fetch, verification, ``inspect``): no ``/``, ``..``, empty labels, uppercase, whitespace,
names over 253 characters or bad ports.
"""

from __future__ import annotations

import ipaddress
import re

MAX_ADDRESS_LENGTH = 253
DEFAULT_PORT = 443
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_IPV4_LIKE = re.compile(r"[0-9.]+")


def _validate_port(address: str, port: str) -> None:
    if not port:
        raise ValueError(
            f"address {address!r} ends with ':' but has no port; write host or host:port"
        )
    if not port.isascii() or not port.isdigit():
        raise ValueError(f"address {address!r} has a port that is not a number")
    if port.startswith("0") and port != "0":
        raise ValueError(
            f"address {address!r}: the port must be written without leading zeros, "
            "exactly as in image references"
        )
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"address {address!r}: the port must be between 1 and 65535")


def _validate_host(address: str, host: str) -> None:
    if not host:
        raise ValueError(f"address {address!r} has no host name")
    if _IPV4_LIKE.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"address {address!r}: {host!r} is not a valid IPv4 address") from None
        return
    for label in host.split("."):
        if not label:
            raise ValueError(
                f"address {address!r} has an empty name part (leading, trailing or double dot)"
            )
        if len(label) > 63:
            raise ValueError(
                f"address {address!r}: the name part {label[:20]!r}... is longer than 63 characters"
            )
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"address {address!r}: name part {label!r} may only hold lowercase letters, digits "
                "and '-' (not at its start or end)"
            )


def validate_address(address: str) -> str:
    """host or host:port as in image references; lowercase DNS name or IPv4 (or
    [IPv6]); no '/', '..', empty labels, uppercase, > 253 chars, bad port.
    Raises ValueError with a clear message. Returns the address unchanged."""
    if not isinstance(address, str) or not address:
        raise ValueError(
            "the registry address is empty; write host or host:port as in image references"
        )
    if len(address) > MAX_ADDRESS_LENGTH:
        raise ValueError(
            f"the registry address is {len(address)} characters long; "
            f"at most {MAX_ADDRESS_LENGTH} are allowed"
        )
    if any(c.isspace() for c in address):
        raise ValueError(f"address {address!r} contains whitespace; remove it")
    if "/" in address or "\\" in address:
        raise ValueError(
            f"address {address!r} contains a path separator; give only host or host:port "
            "(no scheme, no path)"
        )
    if ".." in address:
        raise ValueError(f"address {address!r} contains '..'; write host or host:port")
    if address != address.lower():
        raise ValueError(
            f"address {address!r} contains uppercase letters; image references use lowercase "
            f"host names: write {address.lower()!r}"
        )
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise ValueError(f"address {address!r}: an IPv6 address needs a closing ']'")
        inner, rest = address[1:end], address[end + 1 :]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(
                f"address {address!r}: {inner!r} is not a valid IPv6 address"
            ) from None
        if "%" in inner:
            raise ValueError(f"address {address!r}: IPv6 zone identifiers are not allowed")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"address {address!r}: only ':port' may follow the IPv6 address")
            _validate_port(address, rest[1:])
        return address
    if address.count(":") > 1:
        raise ValueError(
            f"address {address!r}: write IPv6 addresses in brackets, e.g. '[::1]:5000'"
        )
    host, colon, port = address.partition(":")
    _validate_host(address, host)
    if colon:
        _validate_port(address, port)
    return address


def split_address(address: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """A valid address (see :func:`validate_address`) as (host without brackets, port).
    Raises ValueError with the validator's message."""
    validate_address(address)
    if address.startswith("["):
        end = address.index("]")
        host, rest = address[1:end], address[end + 1 :]
    else:
        host, _, rest = address.partition(":")
        rest = f":{rest}" if rest else ""
    return host, int(rest[1:]) if rest else default_port


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
