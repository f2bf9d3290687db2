"""A small HTTPS server on 127.0.0.1 for tests that need a real TLS peer.

Each test configures what the "registry" does: which certificate chain it sends
(leaf only, or leaf + intermediate), whether it asks for a client certificate and
which CA it trusts for that, and what each path answers (a ``/ca`` body, a
``/basic_info`` JSON that reports ``TLSClientCertificate`` only when a verified
client certificate was presented, redirects, HTML, huge or slowly dribbled bodies).

    with TLSServer(chain_pem=leaf.chain_pem, key_pem=leaf.key_pem,
                   routes={"/ca": Response(body=root.cert_pem)}) as server:
        fetch_ca(server.url("/ca"), ...)

The server runs in its own thread, handshakes in per-connection threads (a client
that never finishes its handshake cannot stall other tests), and ``stop()`` (or
leaving the ``with`` block) shuts it down and joins its thread. It never prints
tracebacks: handshake failures are recorded in ``server.errors`` for assertions.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = [
    "Request",
    "Response",
    "SilentServer",
    "TLSServer",
    "basic_info_route",
    "ipv6_loopback_available",
    "valid_now",
]


@dataclass(frozen=True)
class Request:
    """What the handler saw: the route callables and ``server.requests`` get this."""

    method: str
    path: str
    headers: Mapping[str, str]
    client_cert: Mapping[str, Any] | None  # getpeercert() of a *verified* client certificate
    server: TLSServer


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    # Seconds to sleep between single bytes of the body: a server that "dribbles".
    dribble: float | None = None
    # Announce this Content-Length instead of len(body) (None: the real length).
    content_length: int | None = None
    # No Content-Length at all: the body ends when the server closes the connection.
    close_delimited: bool = False

    @staticmethod
    def redirect(location: str, status: int = 302) -> Response:
        return Response(status=status, headers={"Location": location})

    @staticmethod
    def json(document: object, status: int = 200) -> Response:
        return Response(
            status=status,
            body=json.dumps(document).encode(),
            headers={"Content-Type": "application/json"},
        )


Route = Response | Callable[[Request], Response]


def basic_info_route(*, nested: bool = False, anonymous: str | None = None) -> Route:
    """A DTR-like ``/basic_info``: ``AuthnMethod`` is ``TLSClientCertificate`` only
    when the request came with a client certificate the server verified. Without
    one it reports ``anonymous`` (None: the key is absent). ``nested`` puts the
    field under ``User`` as some DTR versions do."""

    def route(request: Request) -> Response:
        method = "TLSClientCertificate" if request.client_cert else anonymous
        document: dict[str, Any] = {"CurrentVersion": "2.7.0"}
        user: dict[str, Any] = {"name": "admin", "isAdmin": True}
        if method is not None:
            if nested:
                user["AuthnMethod"] = method
            else:
                document["AuthnMethod"] = method
        document["User"] = user
        return Response.json(document)

    return route


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    timeout = 10  # a client that goes quiet does not keep a thread forever

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _serve(self) -> None:
        owner = self.server.owner
        client_cert: Mapping[str, Any] | None = None
        if isinstance(self.connection, ssl.SSLSocket):
            client_cert = self.connection.getpeercert() or None
        path = self.path.split("?", 1)[0]
        request = Request(
            method=self.command,
            path=path,
            headers=dict(self.headers.items()),
            client_cert=client_cert,
            server=owner,
        )
        owner.requests.append(request)
        route = owner.routes.get(path)
        if route is None:
            response = Response(status=404, body=b"404 page not found\n")
        elif isinstance(route, Response):
            response = route
        else:
            response = route(request)
        self.send_response(response.status)
        headers = {"Content-Type": "text/plain; charset=utf-8", **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        if not response.close_delimited:
            length = response.content_length
            self.send_header(
                "Content-Length", str(len(response.body) if length is None else length)
            )
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command == "HEAD":
            return
        if response.dribble is None:
            self.wfile.write(response.body)
            return
        self.wfile.flush()
        for index in range(len(response.body)):
            if owner.stopping.is_set():
                return
            self.wfile.write(response.body[index : index + 1])
            self.wfile.flush()
            time.sleep(response.dribble)

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: TLSServer

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread: a slow or failing handshake
        # never blocks the accept loop.
        request.settimeout(10)
        if isinstance(request, ssl.SSLSocket):
            request.do_handshake()
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed handshake (rogue client certificate, a client that hangs up) is
        # an expected event in these tests: record it instead of printing a traceback.
        import sys

        self.owner.errors.append(repr(sys.exc_info()[1]))


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class TLSServer:
    """HTTPS on 127.0.0.1 (or ``host``, e.g. "::1"), on a free port. ``routes`` may be
    changed while it runs. ``tls=False`` serves plain HTTP (chain and key are then
    unused but still loaded)."""

    def __init__(
        self,
        *,
        chain_pem: bytes,
        key_pem: bytes,
        routes: Mapping[str, Route] | None = None,
        client_ca_pem: bytes | None = None,
        require_client_cert: bool = False,
        maximum_version: ssl.TLSVersion | None = None,
        host: str = "127.0.0.1",
        tls: bool = True,
    ) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.host = host
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if maximum_version is not None:
            context.maximum_version = maximum_version
        with tempfile.TemporaryDirectory(prefix="tlsserver-") as directory:
            chain_file = os.path.join(directory, "chain.pem")
            key_file = os.path.join(directory, "key.pem")
            with open(chain_file, "wb") as handle:
                handle.write(chain_pem)
            with open(os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as handle:
                handle.write(key_pem)
            context.load_cert_chain(chain_file, key_file)
        if client_ca_pem is not None:
            context.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
            context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        self.context = context
        server_class = _HTTPServer6 if ":" in host else _HTTPServer
        self._httpd = server_class((host, 0), _Handler, bind_and_activate=True)
        self._httpd.owner = self
        self.scheme = "https" if tls else "http"
        if tls:
            # Handshake lazily, in the per-connection thread, not in the accept loop.
            self._httpd.socket = context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``host:port`` (``[v6]:port``) as a registry address."""
        return f"{_bracket(self.host)}:{self.port}"

    def url(self, path: str = "/", *, host: str | None = None, scheme: str | None = None) -> str:
        return f"{scheme or self.scheme}://{_bracket(host or self.host)}:{self.port}{path}"

    def start(self) -> TLSServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"tlsserver-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> TLSServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never says a word: a registry whose
    TLS endpoint hangs. Context manager; closes everything it accepted."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="silentserver", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self._accepted.append(connection)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        for connection in self._accepted:
            connection.close()
        self._listener.close()


def valid_now(days: int = 30) -> dict[str, Any]:
    """``not_before``/``not_after`` for certfactory's ``make_leaf`` around the wall
    clock: OpenSSL checks validity against the real time during a handshake, while
    certfactory's defaults are fixed dates for the pure tests."""
    import datetime as dt

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return {"not_before": now - dt.timedelta(days=1), "not_after": now + dt.timedelta(days=days)}


def ipv6_loopback_available() -> bool:
    """Containers often run without IPv6: tests on ::1 skip there."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True
