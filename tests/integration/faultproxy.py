"""A registry proxy on 127.0.0.1 that injects failures into manifest writes, for retry tests.

Everything is forwarded to the real registry; a ``PUT`` of a manifest whose path contains ``match``
is answered with ``status`` for the first ``fail_puts`` requests, or during ``fail_seconds`` from the
first such request (a registry refusing pushes for a short while: longer than the retries docker
does by itself), or for every request when ``fail_puts`` is negative (a registry that never lets us in).
With ``agent``, only clients whose User-Agent contains it are refused (dockerd's pushes say
``docker/``, BuildKit's ``buildkit/``, multibake's ``multibake/``).

With ``chaos`` (a ``Chaos``), every request (or every one of a client: ``Chaos.agent``) instead fails
at a seeded rate with a mix of faults: 500/502/503, 429 with ``Retry-After``, a connection reset
(before a write reaches the registry, or in the middle of a read's body), or a stall past the client's
timeout that ends in a reset. Every injected fault is logged (``log``) with its request.

With ``hold`` (method, path, user agent → bool) and ``hold_at`` = n, the n-th matching request is held
(and with ``hold_later`` every one after it):
``held`` is set, and the request waits until ``unhold`` is set, then its connection is reset. Tests use
it to stop a release at a known point (the first public tag write, say) and kill it there.

With ``token`` (user, password) it is also a registry that wants a Bearer token, as Docker Hub,
GHCR and Harbor do: a request without a valid token is answered 401 with ``WWW-Authenticate: Bearer
realm=…,service=…,scope=…``; ``GET /token`` grants one for the right Basic credentials (and counts who
asked); only requests carrying a granted token are forwarded. With ``tls`` it speaks HTTPS (clients
send credentials only over TLS: multibake's refuses plain HTTP, and asks the realm over HTTPS).

It listens on 127.0.0.1:5001, which the setup script lists among dockerd's insecure registries
(BuildKit talks plain HTTP only to those).
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import re
import secrets
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}
_REPO = re.compile(r"^/v2/(.+?)/(?:manifests|blobs|tags)/")
SERVICE = "multibake-test"


class Tokens:
    """The token side of a Bearer-auth registry: grants tokens for Basic credentials, checks them."""

    def __init__(self, user: str, password: str) -> None:
        self.basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.granted: set[str] = set()
        self.grants = 0  # /token requests with the right credentials
        self.refusals = 0  # /token requests with wrong or no credentials
        self.bearer_ok = 0  # registry requests carrying a granted token
        self.challenged = 0  # registry requests answered 401 (no or an unknown token)
        self.scopes: list[str] = []  # what clients asked tokens for

    def token(self, authorization: str, query: str) -> bytes | None:
        """A token response for a request to the realm, None when its credentials are wrong."""
        self.scopes += [v for k, v in urllib.parse.parse_qsl(query) if k == "scope"]
        if authorization != self.basic:
            self.refusals += 1
            return None
        self.grants += 1
        token = secrets.token_urlsafe(16)
        self.granted.add(token)
        return json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()

    def allowed(self, authorization: str) -> bool:
        ok = authorization.startswith("Bearer ") and authorization[len("Bearer ") :] in self.granted
        if ok:
            self.bearer_ok += 1
        else:
            self.challenged += 1
        return ok


FAULTS = ("500", "502", "503", "429", "reset", "stall")
_READS = ("GET", "HEAD")


@dataclass(frozen=True)
class Chaos:
    """Fail ``rate`` of all requests, each with a fault drawn from ``faults`` (seeded: reruns repeat)."""

    rate: float = 0.2
    seed: int = 8
    faults: tuple[str, ...] = FAULTS
    stall_seconds: float = 7.0  # longer than the client's timeout set by the test
    retry_after: int = 1
    agent: str = ""  # only requests whose User-Agent contains this (cosign's: "cosign/"); "": every request


@dataclass(frozen=True)
class Injected:
    at: float
    fault: str
    method: str
    path: str
    agent: str


class FaultProxy:
    def __init__(
        self,
        upstream: str = "127.0.0.1:5000",
        *,
        fail_puts: int = 0,
        fail_seconds: float = 0.0,
        status: int = 503,
        match: str = "/manifests/",
        agent: str = "",
        port: int = 5001,
        chaos: Chaos | None = None,
        hold: Callable[[str, str, str], bool] | None = None,
        hold_at: int = 1,
        hold_later: bool = False,
        token: tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.hold = hold
        self.hold_at = hold_at
        self.hold_later = hold_later  # hold every later matching request too, not only the n-th
        self.matched = 0
        self.held = threading.Event()
        self.unhold = threading.Event()
        self.upstream = upstream
        self.chaos = chaos
        self._random = random.Random(chaos.seed if chaos else 0)
        self.log: list[Injected] = []
        self.requests = 0
        self.tokens = Tokens(*token) if token else None
        self.match = match
        self.agent = agent
        self.fail_puts = fail_puts
        self.fail_seconds = fail_seconds
        self._since: float | None = None
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

            def handle(self) -> None:
                # BuildKit tries HTTPS first and falls back to HTTP on loopback only when the answer
                # to its TLS hello starts with an HTTP status line, as Go's servers send.
                if self.rfile.peek(1)[:1] == b"\x16":  # type: ignore[attr-defined]
                    self.wfile.write(
                        b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTPS request to an HTTP server\n"
                    )
                    return
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up: it may, under faults
                    return

            def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _token_auth(self, tokens: Tokens) -> bool:
                """Answer the token realm, or a request without a granted token; False when answered."""
                path, _, query = self.path.partition("?")
                if path == "/token":
                    granted = tokens.token(self.headers.get("Authorization", ""), query)
                    if granted is None:
                        self._answer(401, b'{"details":"wrong credentials"}', {})
                    else:
                        self._answer(200, granted, {})
                    return False
                if tokens.allowed(self.headers.get("Authorization", "")):
                    return True
                realm = f"{self.owner.scheme}://127.0.0.1:{self.owner.port}/token"
                challenge = f'Bearer realm="{realm}",service="{SERVICE}"'
                if m := _REPO.match(path):
                    challenge += f',scope="repository:{m.group(1)}:pull,push"'
                payload = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
                self._answer(401, payload, {"WWW-Authenticate": challenge})
                return False

            def _handle(self) -> None:
                body = b""
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    body = self.rfile.read(length)
                elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = self._read_chunked()
                if self.owner.tokens is not None and not self._token_auth(self.owner.tokens):
                    return
                if self.owner._holds(self.command, self.path, self.headers.get("User-Agent", "")):
                    self.owner.held.set()
                    self.owner.unhold.wait()
                    self._reset()
                    return
                fault = self.owner._draw(self.command, self.path, self.headers.get("User-Agent", ""))
                if fault is not None and self._fault(fault):
                    return
                refused = self.owner.agent in self.headers.get("User-Agent", "")
                if self.command == "PUT" and self.owner.match in self.path and refused and self.owner._inject():
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
                self._forward(body, reset_midway=fault == "reset")

            def _fault(self, fault: str) -> bool:
                """Answer with ``fault``; False when it must be applied while forwarding (a read's reset)."""
                if fault == "reset" and self.command in _READS:
                    return False
                if fault == "stall":
                    time.sleep(self.owner.chaos.stall_seconds if self.owner.chaos else 0)
                if fault in ("reset", "stall"):
                    self._reset()
                    return True
                status = int(fault)
                payload = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": f"injected {status}"}]}).encode()
                self.send_response(status)
                if status == 429 and self.owner.chaos:
                    self.send_header("Retry-After", str(self.owner.chaos.retry_after))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":  # a HEAD answer has no body
                    self.wfile.write(payload)
                return True

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends RST, as a dropped connection or a crashed proxy does
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def _forward(self, body: bytes, *, reset_midway: bool) -> None:
                conn = http.client.HTTPConnection(self.owner.upstream, timeout=120)
                headers: dict[str, str] = {}
                for k, v in self.headers.items():  # repeated headers (Accept) joined, as HTTP allows
                    if k.lower() not in _HOP and k.lower() != "authorization":  # the upstream wants none
                        headers[k] = f"{headers[k]}, {v}" if k in headers else v
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
                # a HEAD answer keeps the registry's Content-Length: clients read the manifest size from it
                upstream_length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", upstream_length or str(len(data)))
                self.end_headers()
                if reset_midway:  # half the body, then a dropped connection
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self._reset()
                elif self.command != "HEAD":
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
        self.scheme = "https" if tls else "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _holds(self, method: str, path: str, agent: str) -> bool:
        if self.hold is None or not self.hold(method, path, agent):
            return False
        with self._lock:
            self.matched += 1
            return self.matched == self.hold_at or (self.hold_later and self.matched > self.hold_at)

    def _draw(self, method: str, path: str, agent: str) -> str | None:
        """The fault this request gets in chaos mode, or None; logged."""
        with self._lock:
            self.requests += 1
            chaos = self.chaos
            if chaos is None or chaos.agent not in agent or self._random.random() >= chaos.rate:
                return None
            fault = self._random.choice(chaos.faults)
            self.log.append(Injected(time.monotonic(), fault, method, path, agent.split(" ", maxsplit=1)[0]))
            return fault

    def counts(self) -> dict[str, int]:
        """Injected faults by kind."""
        out: dict[str, int] = {}
        for entry in self.log:
            out[entry.fault] = out.get(entry.fault, 0) + 1
        return out

    def write_log(self, path: Path) -> None:
        path.write_text("".join(f"{e.at:.3f} {e.fault} {e.method} {e.path} {e.agent}\n" for e in self.log))

    def _inject(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if self.fail_seconds and self._since is None:
                self._since = now
            in_window = self._since is not None and now - self._since < self.fail_seconds
            if self.fail_puts < 0 or self.injected < self.fail_puts or in_window:
                self.injected += 1
                return True
            return False

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unhold.set()
        self.server.shutdown()
        self.server.server_close()
