"""wire.py against a small HTTP server on 127.0.0.1: kept-alive connections, the auth flows, redirects,
proxies and every way a request fails, as failure_of classifies them (no docker, no registry)."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from multibake.registry import client as registry
from multibake.registry import errors as rerrors
from multibake.registry import wire
from multibake.registry.auth import Login
from multibake.registry.manifest import digest_of
from tests.certs import issue

Reply = tuple[int, dict[str, str], bytes] | str  # or "reset": the connection closed without an answer


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """Answers each request with ``script``; counts connections and keeps what it was asked."""

    script: Callable[[Seen], Reply]
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as registries answer

            def setup(self) -> None:
                server.connections += 1
                super().setup()

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, self.path, dict(self.headers), self.rfile.read(length))
                server.seen.append(seen)
                reply = server.script(seen)
                if isinstance(reply, str):  # "reset"
                    self.close_connection = True
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    return
                status, headers, body = reply
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_DELETE = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self.httpd.socket = self.tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def start(script: Callable[[Seen], Reply], tls: ssl.SSLContext | None = None) -> Server:
        made.append(Server(script, tls))
        return made[-1]

    yield start
    for server in made:
        server.close()


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """No connection, token or proxy decision carried from one test to the next."""
    monkeypatch.setattr(wire, "_local", threading.local())
    monkeypatch.setattr(wire, "_granted", {})
    wire._proxy.cache_clear()
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


def ok(body: bytes = b"{}", **headers: str) -> Reply:
    return (200, headers, body)


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}).encode()


def test_requests_share_one_kept_alive_connection(serve: Callable[..., Server]) -> None:
    server = serve(lambda seen: ok(MANIFEST, **{"Content-Type": "application/vnd.oci.image.manifest.v1+json"}))
    api = registry.Http()
    for _ in range(3):
        body, media = api.get_manifest(f"127.0.0.1:{server.port}/app:1") or (b"", "")
    assert body == MANIFEST and media == "application/vnd.oci.image.manifest.v1+json"
    assert server.connections == 1
    assert [s.path for s in server.seen] == ["/v2/app/manifests/1"] * 3
    assert server.seen[0].headers["User-Agent"].startswith("multibake/")
    assert "application/vnd.oci.image.index.v1+json" in server.seen[0].headers["Accept"]


def test_a_connection_the_server_closed_meanwhile_is_opened_again(serve: Callable[..., Server]) -> None:
    replies = iter([ok(MANIFEST), "reset", ok(MANIFEST)])
    server = serve(lambda seen: next(replies))
    api = registry.Http()
    assert api.get_manifest(f"127.0.0.1:{server.port}/app:1") is not None
    assert api.get_manifest(f"127.0.0.1:{server.port}/app:1") is not None  # the kept one was dropped: a new one
    assert server.connections == 2 and len(server.seen) == 3


def test_a_reset_on_a_new_connection_is_a_transient_failure(serve: Callable[..., Server]) -> None:
    server = serve(lambda seen: "reset")
    with pytest.raises(rerrors.RegistryError) as info:
        registry.Http().get_manifest(f"127.0.0.1:{server.port}/app:1")
    assert info.value.transient
    assert str(info.value).startswith(f"reading 127.0.0.1:{server.port}/app:1: the connection dropped mid-answer")
    assert len(server.seen) == 1  # not tried again here: retries are the retry rule's (retry.py)


def test_a_refused_connection_is_transient_and_said() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(rerrors.RegistryError) as info:
        registry.Http().get_manifest(f"127.0.0.1:{port}/app:1")
    assert info.value.transient
    assert "cannot connect (ConnectionRefusedError: refused, or the host does not resolve)" in str(info.value)


def test_a_stalled_answer_is_a_timeout(serve: Callable[..., Server]) -> None:
    def slow(seen: Seen) -> Reply:
        time.sleep(0.6)
        return ok()

    server = serve(slow)
    with pytest.raises(rerrors.RegistryError) as info:
        registry.Http(timeout=0.2).get_manifest(f"127.0.0.1:{server.port}/app:1")
    assert info.value.transient and str(info.value).endswith(": timed out")


@pytest.mark.parametrize(
    ("status", "headers", "transient", "wait"),
    [(500, {}, True, 0.0), (503, {"Retry-After": "3"}, True, 3.0), (429, {"Retry-After": "0.5"}, True, 0.5),
     (403, {}, False, 0.0), (400, {}, False, 0.0)],
)  # fmt: skip
def test_answers_are_classified_once(
    serve: Callable[..., Server], status: int, headers: dict[str, str], transient: bool, wait: float
) -> None:
    body = b'{"errors":[{"code":"X","message":"said by the registry"}]}'
    server = serve(lambda seen: (status, headers, body))
    with pytest.raises(rerrors.RegistryError) as info:
        registry.Http().put_manifest(f"127.0.0.1:{server.port}/app:1", MANIFEST, "application/json")
    assert info.value.transient is transient and info.value.retry_after == wait
    assert str(info.value) == f"writing 127.0.0.1:{server.port}/app:1: HTTP {status} X: said by the registry"
    assert server.seen[0].method == "PUT" and server.seen[0].body == MANIFEST
    assert server.seen[0].headers["Content-Type"] == "application/json"


def test_a_missing_manifest_is_none_and_a_missing_delete_false(serve: Callable[..., Server]) -> None:
    server = serve(lambda seen: (404, {}, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}'))
    api = registry.Http()
    assert api.get_manifest(f"127.0.0.1:{server.port}/app:1") is None
    assert api.delete_manifest(f"127.0.0.1:{server.port}/app@sha256:" + "a" * 64) is False


def test_an_answer_past_the_bound_is_refused(serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MAX_BODY", 100)
    server = serve(lambda seen: ok(b"x" * 1000))
    with pytest.raises(rerrors.RegistryError, match="an answer larger than") as info:
        registry.Http().get_manifest(f"127.0.0.1:{server.port}/app:1")
    assert not info.value.transient


def test_credentials_are_never_sent_over_plain_http(serve: Callable[..., Server]) -> None:
    server = serve(lambda seen: (401, {"WWW-Authenticate": 'Basic realm="r"'}, b""))
    with pytest.raises(rerrors.RegistryError) as info:
        registry.Http(login=Login("127.0.0.1", "ci", "secret")).get_manifest(f"127.0.0.1:{server.port}/app:1")
    assert not info.value.transient and "multibake sends them only over TLS" in str(info.value)
    assert all("Authorization" not in s.headers for s in server.seen)


def _pages(pages: dict[str, tuple[list[str] | None, str | None]]) -> Callable[[Seen], Reply]:
    def answer(seen: Seen) -> Reply:
        tags, nxt = pages[seen.path]
        return ok(
            json.dumps({"name": "lib/alpine", "tags": tags}).encode(),
            **({"Link": f'<{nxt}>; rel="next"'} if nxt else {}),
        )

    return answer


def test_a_tag_list_is_read_page_by_page(serve: Callable[..., Server]) -> None:
    server = serve(
        _pages(
            {
                "/v2/lib/alpine/tags/list": (["3.9", "3.10"], "/v2/lib/alpine/tags/list?last=3.10&n=2"),
                "/v2/lib/alpine/tags/list?last=3.10&n=2": (["3.11"], "/v2/lib/alpine/tags/list?last=3.11"),
                "/v2/lib/alpine/tags/list?last=3.11": (None, None),
            }
        )
    )
    assert registry.Http().list_tags(f"127.0.0.1:{server.port}/lib/alpine") == ["3.9", "3.10", "3.11"]
    assert len(server.seen) == 3


def test_a_next_page_on_another_host_is_refused(serve: Callable[..., Server]) -> None:
    server = serve(_pages({"/v2/x/tags/list": (["1"], "https://elsewhere.example/v2/x/tags/list?last=1")}))
    with pytest.raises(rerrors.RegistryError, match="next page is on another host") as info:
        registry.Http().list_tags(f"127.0.0.1:{server.port}/x")
    assert not info.value.transient


def test_an_endless_tag_list_is_cut_off(serve: Callable[..., Server]) -> None:
    page = [str(i) for i in range(10_000)]
    server = serve(
        _pages(
            {
                "/v2/x/tags/list": (page, "/v2/x/tags/list?again"),
                "/v2/x/tags/list?again": (page, "/v2/x/tags/list?again"),
            }
        )
    )
    with pytest.raises(rerrors.RegistryError, match="more than 100,000 tags"):
        registry.Http().list_tags(f"127.0.0.1:{server.port}/x")
    assert len(server.seen) == 11


def test_a_tag_list_of_an_unknown_repository_says_so(serve: Callable[..., Server]) -> None:
    server = serve(
        lambda seen: (
            404,
            {},
            b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}',
        )
    )
    with pytest.raises(rerrors.NoSuchRepository) as info:
        registry.Http().list_tags(f"127.0.0.1:{server.port}/x")
    assert str(info.value).endswith("HTTP 404 NAME_UNKNOWN: repository name not known to registry")


def test_a_blob_redirect_is_followed_without_the_credentials(serve: Callable[..., Server]) -> None:
    blob = b'{"architecture":"arm64"}'
    digest = digest_of(blob)
    store = serve(lambda seen: ok(blob))
    front = serve(lambda seen: (307, {"Location": f"http://localhost:{store.port}/blob?sig=1"}, b""))
    assert registry.Http().get_blob(f"127.0.0.1:{front.port}/app:1", digest) == blob
    assert store.seen[0].path == "/blob?sig=1" and "Authorization" not in store.seen[0].headers
    with pytest.raises(rerrors.RegistryError, match="served other bytes"):
        registry.Http().get_blob(f"127.0.0.1:{front.port}/app:1", "sha256:" + "0" * 64)


def test_a_relative_redirect_is_relative_to_the_host_that_sent_it(serve: Callable[..., Server]) -> None:
    blob = b'{"architecture":"arm"}'
    store = serve(lambda seen: ok(blob) if seen.path == "/signed" else (302, {"Location": "/signed"}, b""))
    front = serve(lambda seen: (307, {"Location": f"http://localhost:{store.port}/blob"}, b""))
    assert registry.Http().get_blob(f"127.0.0.1:{front.port}/app:1", digest_of(blob)) == blob
    assert [s.path for s in store.seen] == ["/blob", "/signed"] and len(front.seen) == 1


def test_a_plain_http_registry_is_reached_through_the_proxy_the_environment_names(
    serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = serve(lambda seen: ok(MANIFEST))
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
    assert registry.Http().get_manifest("localhost:1/app:1") is not None
    assert proxy.seen[0].path == "http://localhost:1/v2/app/manifests/1"
    wire._proxy.cache_clear()
    monkeypatch.setattr(wire, "_local", threading.local())  # a new run: nothing opened yet
    monkeypatch.setenv("no_proxy", "localhost")
    with pytest.raises(rerrors.RegistryError, match="cannot connect"):
        registry.Http().get_manifest("localhost:1/app:1")
    assert len(proxy.seen) == 1


# ---- over TLS: the Bearer token flow and Basic credentials


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server context for ``localhost``, and the client trusting its CA (as certs.d would)."""
    ca = issue("test CA")
    leaf = issue("localhost", signer=ca.signer, san="localhost")
    (tmp_path / "ca.pem").write_bytes(ca.cert)
    (tmp_path / "leaf.pem").write_bytes(leaf.cert + leaf.key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "leaf.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    monkeypatch.setattr(wire, "_tls", lambda host: client)
    monkeypatch.setattr(wire, "plain_http", lambda host: False)
    return server


USER, SECRET = "ci", "pa55-never-shown"


def _token_registry(port_of: Callable[[], int]) -> Callable[[Seen], Reply]:
    good = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()

    def answer(seen: Seen) -> Reply:
        if seen.path.startswith("/token"):
            if seen.headers.get("Authorization") != good:
                return (401, {}, b'{"details":"no"}')
            return ok(json.dumps({"token": "t0k"}).encode())
        if seen.headers.get("Authorization") == "Bearer t0k":
            return ok(MANIFEST)
        realm = f"https://localhost:{port_of()}/token"
        return (401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="reg",scope="repository:app:pull"'}, b"")

    return answer


def test_a_token_is_asked_for_once_with_the_credentials_and_used(
    serve: Callable[..., Server], tls: ssl.SSLContext
) -> None:
    ports: list[int] = []
    server = serve(_token_registry(lambda: ports[0]), tls)
    ports.append(server.port)
    api = registry.Http(login=Login(f"localhost:{server.port}", USER, SECRET))
    for _ in range(2):
        assert api.get_manifest(f"localhost:{server.port}/app:1") is not None
    asked = [s.path for s in server.seen]
    assert asked == ["/v2/app/manifests/1", "/token?service=reg&scope=repository%3Aapp%3Apull%2Cpush",
                     "/v2/app/manifests/1", "/v2/app/manifests/1"]  # fmt: skip
    assert all(SECRET not in s.path for s in server.seen)


def test_refused_credentials_are_a_401_not_retried(serve: Callable[..., Server], tls: ssl.SSLContext) -> None:
    ports: list[int] = []
    server = serve(_token_registry(lambda: ports[0]), tls)
    ports.append(server.port)
    api = registry.Http(login=Login(f"localhost:{server.port}", USER, "wrong"))
    with pytest.raises(rerrors.RegistryError) as info:
        api.get_manifest(f"localhost:{server.port}/app:1")
    assert not info.value.transient and "401 unauthorized" in str(info.value)
    assert "wrong" not in str(info.value)


def test_basic_credentials_go_only_over_tls(serve: Callable[..., Server], tls: ssl.SSLContext) -> None:
    good = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
    server = serve(
        lambda seen: (
            ok(MANIFEST)
            if seen.headers.get("Authorization") == good
            else (401, {"WWW-Authenticate": 'Basic realm="r"'}, b"")
        ),
        tls,
    )
    api = registry.Http(login=Login(f"localhost:{server.port}", USER, SECRET))
    assert api.get_manifest(f"localhost:{server.port}/app:1") is not None
    anonymous = registry.Http()
    with pytest.raises(rerrors.RegistryError, match="401 unauthorized"):
        anonymous.get_manifest(f"localhost:{server.port}/other:1")


def test_an_untrusted_certificate_is_said_and_not_retried(
    serve: Callable[..., Server], tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(lambda seen: ok(MANIFEST), tls)
    monkeypatch.setattr(wire, "_tls", lambda host: ssl.create_default_context())  # the system's store only
    with pytest.raises(rerrors.RegistryError) as info:
        registry.Http().get_manifest(f"localhost:{server.port}/app:1")
    assert not info.value.transient
    assert "TLS certificate is not trusted (certificate verify failed: unable to get local issuer certificate)" in str(
        info.value
    )
