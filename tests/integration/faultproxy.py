"""A registry proxy on 127.0.0.1 that injects failures into manifest writes, for retry tests.

Everything is forwarded to the real registry; a ``PUT`` of a manifest whose path contains ``match``
is answered with ``status`` for the first ``fail_puts`` requests (a registry refusing pushes for a
short while), or for every request when ``fail_puts`` is negative (a registry that never lets us in).

It listens on 127.0.0.1:5001, which the setup script lists among dockerd's insecure registries
(BuildKit talks plain HTTP only to those).
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


class FaultProxy:
    def __init__(
        self,
        upstream: str = "127.0.0.1:5000",
        *,
        fail_puts: int = 0,
        status: int = 503,
        match: str = "/manifests/",
        port: int = 5001,
    ) -> None:
        self.upstream = upstream
        self.match = match
        self.fail_puts = fail_puts
        self.status = status
        self.injected = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            owner: ClassVar[FaultProxy] = proxy

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def _handle(self) -> None:
                body = b""
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    body = self.rfile.read(length)
                elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = self._read_chunked()
                if self.command == "PUT" and self.owner.match in self.path and self.owner._inject():
                    self.send_response(self.owner.status)
                    payload = b'{"errors":[{"code":"UNAVAILABLE","message":"injected by the test"}]}'
                    if self.owner.status == 401:
                        self.send_header("WWW-Authenticate", 'Basic realm="multibake-test"')
                        payload = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(self.owner.upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                with self.owner._lock:
                    self.owner.forwarded += 1
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            def _read_chunked(self) -> bytes:
                out = b""
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _inject(self) -> bool:
        with self._lock:
            if self.fail_puts < 0 or self.injected < self.fail_puts:
                self.injected += 1
                return True
            return False

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
