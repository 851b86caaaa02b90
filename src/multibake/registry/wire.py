"""The registry's HTTP: one kept-alive connection per thread and host, TLS as docker trusts it, the
proxy the environment names, and the registry's auth flows (Basic, and Bearer tokens).

On ``http.client`` itself: a release makes two requests per public tag, and a manifest read costs
about 0.5 ms of this client's CPU against 1.1 ms through requests and python-dxf (measured on the
2-core CI machines, where the registry shares those cores). Failures leave as ``WireError``
subclasses (errors.py), which ``errors.failure_of`` classifies once.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import re
import ssl
import threading
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlencode, urlsplit

from multibake import __version__
from multibake.registry.connect import ca_bundle, plain_http
from multibake.registry.errors import (
    Dropped,
    HttpStatus,
    InsecureAuth,
    RegistryError,
    TimedOut,
    Unreachable,
    Untrusted,
    WireError,
)

AGENT = f"multibake/{__version__}"
MAX_BODY = 32 * 1024 * 1024  # bytes of one answer: manifests are at most 4 MiB in distribution
MAX_REDIRECTS = 5
_local = threading.local()
_granted: dict[tuple[str, str, tuple[str, ...], object], str] = {}  # (host, repo, actions, who) → Authorization
_granted_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage  # looked up without regard to case
    body: bytes

    def header(self, name: str) -> str:
        return str(self.headers.get(name) or "")

    def refused(self) -> HttpStatus:
        """This answer as the failure it is."""
        return HttpStatus(self.status, self.headers, self.body)


@dataclass(frozen=True, slots=True)
class Auth:
    """Whose requests these are: a token is asked for ``repo`` and ``actions``, with ``credentials``."""

    repo: str
    actions: tuple[str, ...]
    credentials: Callable[[], tuple[str, str] | None]  # asked only when the registry challenges
    who: object = None  # tells two identities apart in the token cache (the Login, or None)


def call(
    method: str,
    host: str,
    path: str,
    *,
    auth: Auth,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """One registry request (``path`` from ``/v2/``), authorized on the registry's challenge, redirects
    followed; a success, or ``HttpStatus`` carrying the registry's answer."""
    scheme = "http" if plain_http(host) else "https"
    key = (host, auth.repo, auth.actions, auth.who)
    sent = {"User-Agent": AGENT, **(headers or {})}
    granted = _granted.get(key)
    answer = _exchange(_Request(method, scheme, host, path, _with(sent, granted), body), timeout)
    if answer.status == 401:
        fresh = _authorize(scheme, host, answer, auth, timeout)
        if fresh != granted:
            with _granted_lock:
                _granted[key] = fresh
            answer = _exchange(_Request(method, scheme, host, path, _with(sent, fresh), body), timeout)
    asked = _Request(method, scheme, host, path, _with(sent, _granted.get(key)))
    for _ in range(MAX_REDIRECTS):
        if answer.status not in (301, 302, 303, 307, 308) or method != "GET":
            break
        asked = _redirect(answer, asked, sent)
        answer = _exchange(asked, timeout)
    if not 200 <= answer.status < 300:
        raise answer.refused()
    return answer


def _with(headers: Mapping[str, str], authorization: str | None) -> dict[str, str]:
    return {**headers, "Authorization": authorization} if authorization else dict(headers)


def _redirect(answer: Answer, asked: _Request, plain: Mapping[str, str]) -> _Request:
    """Where a redirect points (a blob store, often), relative to the request it answered: the
    credentials go along only to the same host, ``plain`` (the headers without them) elsewhere."""
    url = urlsplit(answer.header("Location"))
    there = url.netloc or asked.host
    headers = asked.headers if there == asked.host else plain
    return _Request("GET", url.scheme or asked.scheme, there, _target(url), headers)


def _target(url: SplitResult) -> str:
    """The path and query of ``url``: what a request names on its host."""
    return url.path + (f"?{url.query}" if url.query else "")


_CHALLENGE = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]*))')


def _authorize(scheme: str, host: str, answer: Answer, auth: Auth, timeout: float) -> str:
    """The Authorization header a 401 asks for: Basic credentials, or a token from the realm it names."""
    challenge = answer.header("WWW-Authenticate")
    kind = challenge.split(" ", 1)[0].lower()
    if kind not in ("basic", "bearer"):
        raise answer.refused()
    if scheme != "https":
        raise InsecureAuth("the registry asks for credentials over plain HTTP")
    creds = auth.credentials()
    basic = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode() if creds else None
    if kind == "basic":
        if basic is None:
            raise answer.refused()
        return basic
    params = {m.group(1).lower(): m.group(2) or m.group(3) or "" for m in _CHALLENGE.finditer(challenge)}
    if not urlsplit(params.get("realm", "")).netloc:  # a challenge naming no token server: a refusal
        raise answer.refused()
    return "Bearer " + _token(params, auth, basic, timeout)


def _token(params: Mapping[str, str], auth: Auth, basic: str | None, timeout: float) -> str:
    """A token from the realm a Bearer challenge names, asked over TLS for the repository and actions."""
    realm = urlsplit(params.get("realm", ""))
    query = [*([("service", params["service"])] if "service" in params else [])]
    scope = f"repository:{auth.repo}:{','.join(auth.actions)}" if auth.repo else params.get("scope", "")
    query += [("scope", s) for s in scope.split()]
    target = realm.path + "?" + "&".join(p for p in (realm.query, urlencode(query)) if p)
    headers = _with({"User-Agent": AGENT}, basic)
    answer = _exchange(_Request("GET", "https", realm.netloc, target, headers), timeout)
    if answer.status != 200:
        raise HttpStatus(401 if answer.status in (401, 403) else answer.status, answer.headers, answer.body)
    try:
        doc = json.loads(answer.body)
        return str(doc.get("access_token") or doc["token"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise WireError(f"the token server at {realm.netloc} answered no token") from exc


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    scheme: str
    host: str
    target: str  # the path and query
    headers: Mapping[str, str]
    body: bytes | None = None


def _exchange(request: _Request, timeout: float) -> Answer:
    """``request`` on this thread's connection to its host; a kept-alive connection the server closed
    meanwhile is opened again once (the request never reached it)."""
    conn, prefix = _connection(request.scheme, request.host)
    while True:  # at most twice: a stale connection is closed, so the second try is on a new one
        reused = conn.sock is not None
        try:
            return _send(conn, prefix, request, timeout)
        except _Stale as exc:
            if not reused:
                raise Dropped(str(exc)) from exc


class _Stale(Exception):
    """The server closed the connection before it answered."""


def _send(conn: http.client.HTTPConnection, prefix: str, request: _Request, timeout: float) -> Answer:
    try:
        if conn.sock is None:
            _connect(conn, timeout)
        else:
            conn.sock.settimeout(timeout)
        try:
            conn.request(request.method, prefix + request.target, body=request.body, headers=dict(request.headers))
            response = conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
            conn.close()
            raise _Stale(type(exc).__name__) from exc
        data = response.read(MAX_BODY + 1)
        if not response.isclosed():  # not read to its end: the connection cannot carry another request
            conn.close()
    except TimeoutError as exc:
        conn.close()
        raise TimedOut("timed out") from exc
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise Dropped(type(exc).__name__) from exc
    if len(data) > MAX_BODY:
        raise WireError(f"an answer larger than {MAX_BODY // 2**20} MiB")
    return Answer(response.status, response.headers, data)


def _connect(conn: http.client.HTTPConnection, timeout: float) -> None:
    conn.timeout = timeout
    try:
        conn.connect()
    except TimeoutError as exc:
        conn.close()
        raise TimedOut("timed out while connecting") from exc
    except ssl.SSLCertVerificationError as exc:
        conn.close()
        raise Untrusted(f"certificate verify failed: {exc.verify_message}") from exc
    except ssl.SSLError as exc:
        conn.close()
        if "WRONG_VERSION_NUMBER" in str(exc) or "wrong version number" in str(exc):
            raise Untrusted("wrong version number (plain HTTP on the other end?)") from exc
        raise Dropped(type(exc).__name__) from exc
    except OSError as exc:
        conn.close()
        raise Unreachable(type(exc).__name__) from exc


def _connection(scheme: str, host: str) -> tuple[http.client.HTTPConnection, str]:
    """This thread's connection to ``host`` (and the prefix a plain-HTTP proxy needs on each target)."""
    conns: dict[tuple[str, str], tuple[http.client.HTTPConnection, str]] = _local.__dict__.setdefault("conns", {})
    if (scheme, host) not in conns:
        conns[scheme, host] = _open(scheme, host)
    return conns[scheme, host]


def _open(scheme: str, host: str) -> tuple[http.client.HTTPConnection, str]:
    proxy = _proxy(scheme, host)
    if scheme == "https":
        if proxy is None:
            return http.client.HTTPSConnection(host, context=_tls(host)), ""
        tunnel = http.client.HTTPSConnection(proxy.hostname or "", proxy.port or 3128, context=_tls(host))
        tunnel.set_tunnel(host, headers=_proxy_auth(proxy))
        return tunnel, ""
    if proxy is None:
        return http.client.HTTPConnection(host), ""
    return http.client.HTTPConnection(proxy.hostname or "", proxy.port or 3128), f"http://{host}"


@functools.cache
def _tls(host: str) -> ssl.SSLContext:
    """Trust as docker's: ``/etc/docker/certs.d/<host>/ca.crt``, else the system's store."""
    return ssl.create_default_context(cafile=ca_bundle(host))


@functools.cache
def _proxy(scheme: str, host: str) -> SplitResult | None:
    """The proxy the environment names for ``scheme`` (``HTTPS_PROXY``…), unless ``NO_PROXY`` exempts ``host``."""
    found = urllib.request.getproxies_environment().get(scheme)
    if not found or urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]  # untyped in typeshed
        host.rsplit(":", 1)[0]
    ):
        return None
    return urlsplit(found if "://" in found else f"http://{found}")


def _proxy_auth(proxy: SplitResult) -> dict[str, str]:
    if proxy.username is None:
        return {}
    pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
    return {"Proxy-Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def next_page(answer: Answer, host: str) -> str | None:
    """The next page of a paginated list (its ``Link: <…>; rel="next"``), on the same registry only."""
    for part in answer.header("Link").split(","):
        found = re.match(r'\s*<([^>]*)>\s*;.*\brel="?next"?', part)
        if found:
            url = urlsplit(found.group(1))
            if url.netloc and url.netloc != host:
                raise RegistryError(f"the registry's next page is on another host ({url.netloc[:80]})", transient=False)
            return _target(url)
    return None
