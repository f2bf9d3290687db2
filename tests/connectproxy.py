"""A tiny HTTP CONNECT proxy on 127.0.0.1 for tests of HTTPS_PROXY / NO_PROXY.

It tunnels bytes both ways (TLS stays end to end between client and server) and records
every CONNECT target it was asked for. ``routes`` maps a target the client names
(``registry.proxy.test:443``) to where the proxy really connects (``127.0.0.1:PORT``):
the names do not resolve on this machine, so a connection that reaches the server proves
it went through the proxy. ``require_auth`` answers 407 unless the client sends that
``Proxy-Authorization`` value; ``refuse`` answers every CONNECT with that status.

    with ConnectProxy(routes={"registry.proxy.test:443": server.address}) as proxy:
        os.environ["HTTPS_PROXY"] = proxy.url
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

__all__ = ["ConnectProxy"]


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])
        }
        owner = self.server.owner
        with owner.lock:
            owner.targets.append(target)
            owner.headers.append(headers)
        if method != "CONNECT":
            conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        if owner.refuse:
            conn.sendall(f"HTTP/1.1 {owner.refuse} No\r\nContent-Length: 0\r\n\r\n".encode())
            return
        if owner.require_auth and headers.get("proxy-authorization") != owner.require_auth:
            conn.sendall(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
            )
            return
        where = owner.routes.get(target, target)
        host, _, port = where.rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except OSError:
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        with upstream:
            conn.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            _pipe(conn, upstream)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    peers = {a: b, b: a}
    while True:
        readable, _, _ = select.select(list(peers), [], [], 10)
        if not readable:
            return
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            peers[sock].sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: ConnectProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-tunnel is not a test failure


class ConnectProxy:
    def __init__(
        self,
        routes: Mapping[str, str] | None = None,
        *,
        require_auth: str | None = None,
        refuse: int | None = None,
    ) -> None:
        self.routes = dict(routes or {})
        self.require_auth = require_auth
        self.refuse = refuse
        self.targets: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
