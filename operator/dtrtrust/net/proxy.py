"""HTTPS_PROXY / NO_PROXY for the registry calls, the way docker (Go's net/http) reads them.

``proxy_for`` decides whether a connection goes through a proxy; ``tunnel`` opens an HTTP
CONNECT tunnel through it, after which TLS runs end to end with the registry (the proxy
sees neither the certificates' private halves nor the request). Rules, as in Go's
``httpproxy``:

- ``HTTPS_PROXY`` (or ``https_proxy``) for TLS, ``HTTP_PROXY`` (``http_proxy``) for plain
  HTTP; the upper-case name wins. A value without a scheme means ``http://``. Only
  ``http://`` proxies are supported (the tunnel itself is plain HTTP to the proxy).
- ``localhost`` and loopback addresses never go through a proxy.
- ``NO_PROXY`` (``no_proxy``): comma-separated; ``*`` matches everything; an IP address or
  CIDR range matches IP literals; ``example.com`` matches it and its subdomains,
  ``.example.com`` only subdomains; an entry with ``:port`` matches that port only.

Proxy credentials (``http://user:password@proxy:3128``) go in a ``Proxy-Authorization``
header and never into a message.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

MAX_RESPONSE_HEAD = 16 * 1024


class ProxyError(OSError):
    """The proxy is misconfigured, unreachable or refused the tunnel (message for users)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.strerror = message


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    variable: str  # which environment variable named it, for messages
    authorization: str | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        """``proxy.example.com:3128 (HTTPS_PROXY)``: no credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port} ({self.variable})"


def _env(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    for variable in (name.upper(), name.lower()):
        value = environ.get(variable, "").strip()
        if value:
            return variable, value
    return None


def proxy_for(
    host: str, port: int, *, tls: bool, environ: Mapping[str, str] | None = None
) -> Proxy | None:
    """The proxy to reach host:port through, or None for a direct connection."""
    environ = os.environ if environ is None else environ
    found = _env(environ, "https_proxy" if tls else "http_proxy")
    if found is None or _is_loopback(host) or _bypassed(host, port, environ):
        return None
    variable, value = found
    return parse_proxy(value, variable)


def parse_proxy(value: str, variable: str) -> Proxy:
    url = urlsplit(value if "://" in value else f"http://{value}")
    if url.scheme != "http":
        raise ProxyError(
            f"{variable} uses {url.scheme}://, which dtrtrust does not support: "
            "give the proxy as http://host:port (the registry's TLS still runs end to end)"
        )
    try:
        port = url.port or 80
    except ValueError:
        port = -1
    if not url.hostname or not 0 < port < 65536:
        raise ProxyError(f"{variable} is not a proxy address: give it as http://host:port")
    authorization = None
    if url.username is not None:
        pair = f"{unquote(url.username)}:{unquote(url.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return Proxy(url.hostname, port, variable, authorization)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bypassed(host: str, port: int, environ: Mapping[str, str]) -> bool:
    found = _env(environ, "no_proxy")
    if found is None:
        return False
    host = host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for raw in found[1].split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
                continue
            except ValueError:
                pass
        name, entry_port = entry, None
        if entry.startswith("[") and "]" in entry:  # [v6]:port
            name, _, rest = entry[1:].partition("]")
            entry_port = rest[1:] if rest.startswith(":") else None
        elif entry.count(":") == 1:
            name, entry_port = entry.split(":")
        if entry_port is not None and entry_port != str(port):
            continue
        name = name.rstrip(".")
        if ip is not None:
            if name.strip("[]") == host:
                return True
            continue
        if name.startswith("*."):
            name = name[1:]
        if name.startswith("."):
            if host.endswith(name):
                return True
        elif host == name or host.endswith("." + name):
            return True
    return False


def tunnel(proxy: Proxy, host: str, port: int, remaining: Callable[[], float]) -> socket.socket:
    """A TCP connection to the proxy with a CONNECT tunnel to host:port established, all
    within ``remaining()`` (the seconds left of the caller's deadline; it raises
    TimeoutError when none are). Raises ProxyError (an OSError) with a message that says
    what to do."""
    try:
        sock = socket.create_connection((proxy.host, proxy.port), timeout=remaining())
    except TimeoutError:
        raise
    except OSError as err:
        cause = err.strerror or type(err).__name__
        if isinstance(err, socket.gaierror):
            cause = f"cannot resolve {proxy.host!r}"
        raise ProxyError(
            f"the proxy {proxy.where} is unreachable ({cause}): check {proxy.variable}, "
            "or add the registry to NO_PROXY if it is reached directly"
        ) from None
    try:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if proxy.authorization:
            head += f"Proxy-Authorization: {proxy.authorization}\r\n"
        sock.sendall((head + "\r\n").encode("ascii"))
        status = _read_status(sock, proxy, remaining)
        if status == 407:
            raise ProxyError(
                f"the proxy {proxy.where} requires authentication (407): put the user and "
                f"password in {proxy.variable} as http://user:password@host:port"
            )
        if not 200 <= status < 300:
            raise ProxyError(
                f"the proxy {proxy.where} refused to connect to {target} (HTTP {status}): "
                "check that it allows CONNECT to this port, or add the registry to NO_PROXY"
            )
        return sock
    except BaseException:
        sock.close()
        raise


def _read_status(sock: socket.socket, proxy: Proxy, remaining: Callable[[], float]) -> int:
    """Read the proxy's response head byte by byte (nothing of the tunnel is consumed)."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        sock.settimeout(remaining())
        chunk = sock.recv(1)
        if not chunk:
            raise ProxyError(f"the proxy {proxy.where} closed the connection during CONNECT")
        data += chunk
        if len(data) > MAX_RESPONSE_HEAD:
            raise ProxyError(f"the proxy {proxy.where} sent an over-long answer to CONNECT")
    parts = data.split(b"\r\n", 1)[0].split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ProxyError(f"the proxy {proxy.where} did not answer CONNECT with HTTP")
    return int(parts[1])
