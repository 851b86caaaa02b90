"""How a registry request failed: transient or not, and the one line that says why."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from http.client import HTTPMessage


class RegistryError(Exception):
    def __init__(self, message: str, *, transient: bool, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after  # seconds the registry asked us to wait (429/503 Retry-After)


class NoSuchRepository(RegistryError):
    """A tag list asked of a repository the registry does not know (404)."""


class WireError(Exception):
    """A request that got no usable answer (raised by wire.py, classified here)."""


class HttpStatus(WireError):
    """The registry answered, and not with a success."""

    def __init__(self, status: int, headers: HTTPMessage, body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.headers, self.body = status, headers, body


class Unreachable(WireError):
    """No connection: refused, reset, or the host does not resolve."""


class Dropped(WireError):
    """The connection broke after the request went out."""


class TimedOut(WireError):
    pass


class Untrusted(WireError):
    """TLS failed in a way a retry does not mend (an unknown CA, plain HTTP on the other end)."""


class InsecureAuth(WireError):
    """The registry asks for credentials over plain HTTP."""


DELETES_REFUSED = (
    "the registry does not allow deletes (HTTP 405 UNSUPPORTED); for distribution's registry set "
    "storage.delete.enabled: true (REGISTRY_STORAGE_DELETE_ENABLED=true) and restart it"
)


_UNAUTHORIZED = (
    "401 unauthorized: the registry refused the credentials, or got none "
    "(docker login, a credential helper, or $MULTIBAKE_REGISTRY_USER and $MULTIBAKE_REGISTRY_PASSWORD)"
)


def failure_of(what: str, exc: Exception) -> RegistryError:
    """One classification for every registry call: 5xx, 429, resets and timeouts are transient."""
    if isinstance(exc, HttpStatus):
        status = exc.status
        if status == 401:
            return RegistryError(f"{what}: {_UNAUTHORIZED}", transient=False)
        detail = _detail(exc.body.decode("utf-8", "replace"))
        transient = status >= 500 or status == 429
        wait = _retry_after(exc.headers.get("Retry-After"))
        return RegistryError(f"{what}: HTTP {status} {detail}".rstrip(), transient=transient, retry_after=wait)
    if isinstance(exc, InsecureAuth):
        return RegistryError(
            f"{what}: the registry asks for credentials over plain HTTP, and multibake sends them only over TLS "
            "(serve it over TLS, its CA in /etc/docker/certs.d/HOST/ca.crt)",
            transient=False,
        )
    if isinstance(exc, Untrusted):
        return RegistryError(
            f"{what}: the registry's TLS certificate is not trusted ({exc}); "
            "docker and multibake take a registry's CA from /etc/docker/certs.d/HOST/ca.crt",
            transient=False,
        )
    if isinstance(exc, TimedOut):
        return RegistryError(f"{what}: {exc}", transient=True)
    if isinstance(exc, Unreachable):
        return RegistryError(f"{what}: cannot connect ({exc}: refused, or the host does not resolve)", transient=True)
    if isinstance(exc, Dropped):
        return RegistryError(f"{what}: the connection dropped mid-answer ({exc})", transient=True)
    return RegistryError(f"{what}: {exc}", transient=False)


def status_of(exc: Exception) -> int | None:
    """The HTTP status of a failed request, None when it got no answer."""
    return exc.status if isinstance(exc, HttpStatus) else None


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
