"""How a registry request failed: transient or not, and the one line that says why."""

from __future__ import annotations

import functools
import json
import re


class RegistryError(Exception):
    def __init__(self, message: str, *, transient: bool, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after  # seconds the registry asked us to wait (429/503 Retry-After)


class NoSuchRepository(RegistryError):
    """A tag list asked of a repository the registry does not know (404)."""


DELETES_REFUSED = (
    "the registry does not allow deletes (HTTP 405 UNSUPPORTED); for distribution's registry set "
    "storage.delete.enabled: true (REGISTRY_STORAGE_DELETE_ENABLED=true) and restart it"
)


@functools.cache
def request_errors() -> tuple[type[Exception], ...]:
    """What a failed request raises: the HTTP libraries are imported at the first request, not at start-up."""
    import requests
    import urllib3
    from dxf.exceptions import DXFError

    return (requests.RequestException, DXFError, urllib3.exceptions.HTTPError, ConnectionError)


@functools.cache
def _dropped() -> tuple[type[Exception], ...]:
    """A connection dropped while a body was read surfaces as any of these, depending on where it broke."""
    import requests
    import urllib3

    return (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)


_UNAUTHORIZED = (
    "401 unauthorized: the registry refused the credentials, or got none "
    "(docker login, a credential helper, or $MULTIBAKE_REGISTRY_USER and $MULTIBAKE_REGISTRY_PASSWORD)"
)

_TLS_REASON = re.compile(r"certificate verify failed[^()'\"]*|wrong version number|hostname mismatch[^()'\"]*")


def failure_of(what: str, exc: Exception) -> RegistryError:
    """One classification for every registry call: 5xx, 429, resets and timeouts are transient."""
    import requests
    from dxf.exceptions import DXFAuthInsecureError, DXFUnauthorizedError

    if isinstance(exc, DXFUnauthorizedError):
        return RegistryError(f"{what}: {_UNAUTHORIZED}", transient=False)
    if isinstance(exc, DXFAuthInsecureError):
        return RegistryError(
            f"{what}: the registry asks for credentials over plain HTTP, and multibake sends them only over TLS "
            "(serve it over TLS, its CA in /etc/docker/certs.d/HOST/ca.crt)",
            transient=False,
        )
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status == 401:
            return RegistryError(f"{what}: {_UNAUTHORIZED}", transient=False)
        detail = _detail(exc.response.text)
        transient = status >= 500 or status == 429
        wait = _retry_after(exc.response.headers.get("Retry-After"))
        return RegistryError(f"{what}: HTTP {status} {detail}".rstrip(), transient=transient, retry_after=wait)
    if isinstance(exc, requests.exceptions.SSLError):  # a ConnectionError to requests, but it lasts
        found = _TLS_REASON.search(str(exc))
        reason = found.group(0).strip() if found else "TLS handshake failed"
        return RegistryError(
            f"{what}: the registry's TLS certificate is not trusted ({reason}); "
            "docker and multibake take a registry's CA from /etc/docker/certs.d/HOST/ca.crt",
            transient=False,
        )
    if isinstance(exc, requests.Timeout):
        return RegistryError(f"{what}: {type(exc).__name__}: timed out", transient=True)
    if isinstance(exc, (*_dropped(), ConnectionError)):
        why = "cannot connect (refused, reset, or the host does not resolve)"
        if not isinstance(exc, requests.ConnectionError):
            why = "the connection dropped mid-answer"
        return RegistryError(f"{what}: {type(exc).__name__}: {why}", transient=True)
    return RegistryError(f"{what}: {exc}", transient=False)


def status_of(exc: Exception) -> int | None:
    """The HTTP status of a failed request, None when it got no answer."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code
    return None


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (delta-seconds; an HTTP date or garbage counts as none)."""
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


def _detail(body: str) -> str:
    """A registry's error body in a few words: ``CODE: message`` from its JSON errors, else its first line."""
    try:
        first = json.loads(body)["errors"][0]
        return f"{first['code']}: {first['message']}"[:200]
    except (ValueError, KeyError, IndexError, TypeError):
        return body.strip().splitlines()[0][:200] if body.strip() else ""
