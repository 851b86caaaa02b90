"""Whether a ``tcp://`` BuildKit node answers, and if its TLS is refused, why, in one line.

buildx hides the reason: a node whose certificate is refused (either way) only ever reports
``context deadline exceeded`` after its timeout. So before asking buildx, multibake makes the
connection itself with the node's own files: a TCP connect, a TLS handshake verifying the node's
certificate with ``cacert`` under ``servername``, and, since TLS 1.3 tells the client of a refused
client certificate only after the handshake, an HTTP/2 preface (BuildKit speaks gRPC) and the
first frame of the answer. The reasons name the files, never what they hold.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from multibake.config.nodes import NodeSpec, TlsOption

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # preface + empty SETTINGS


class Verdict(StrEnum):
    ANSWERS = "answers"
    UNREACHABLE = "unreachable"  # nothing listens, or no route: a host that is down
    REFUSED = "refused"  # TLS failed: a certificate was refused, by the node or by us


@dataclass(frozen=True, kw_only=True, slots=True)
class Probe:
    verdict: Verdict
    reason: str = ""


Connect = Callable[[tuple[str, int], float], socket.socket]


def address(endpoint: str) -> tuple[str, int] | None:
    """``tcp://HOST:PORT`` → (host, port); None for other endpoints."""
    parts = urlsplit(endpoint)
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
        return None
    return parts.hostname, parts.port


def _context(node: NodeSpec) -> ssl.SSLContext:
    tls = node.tls
    context = ssl.create_default_context(cafile=tls.get(TlsOption.CACERT))
    if TlsOption.CERT in tls:
        context.load_cert_chain(tls[TlsOption.CERT], tls[TlsOption.KEY])
    context.set_alpn_protocols(["h2"])  # gRPC refuses a TLS connection without it
    return context


def probe(node: NodeSpec, timeout: float = 10.0, connect: Connect = socket.create_connection) -> Probe | None:
    """How a ``tcp://`` node answers multibake's own connection; None for other endpoints."""
    where = address(node.endpoint or "")
    if where is None:
        return None
    try:
        raw = connect(where, timeout)
    except OSError as exc:
        return Probe(verdict=Verdict.UNREACHABLE, reason=_os_reason(exc, timeout))
    with raw:
        if not node.tls:
            return Probe(verdict=Verdict.ANSWERS)
        return _handshake(node, raw, where[0], timeout)


def _handshake(node: NodeSpec, raw: socket.socket, host: str, timeout: float) -> Probe:
    tls = node.tls
    name = tls.get(TlsOption.SERVERNAME) or host
    try:
        with _context(node).wrap_socket(raw, server_hostname=name) as conn:
            conn.settimeout(timeout)
            conn.sendall(_PREFACE)
            if not conn.recv(9):
                return Probe(verdict=Verdict.REFUSED, reason=_refused_client(node, "it closed the connection"))
    except ssl.SSLCertVerificationError as exc:
        return Probe(verdict=Verdict.REFUSED, reason=_refused_server(node, name, exc))
    except ssl.SSLError as exc:
        said = exc.reason or type(exc).__name__.removeprefix("SSL").removesuffix("Error") or "TLS alert"
        return Probe(verdict=Verdict.REFUSED, reason=_refused_client(node, said))
    except OSError as exc:
        return Probe(verdict=Verdict.REFUSED, reason=_refused_client(node, _os_reason(exc, timeout)))
    return Probe(verdict=Verdict.ANSWERS)


def _os_reason(exc: OSError, timeout: float) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    return (exc.strerror or str(exc)).lower()


def _refused_server(node: NodeSpec, name: str, exc: ssl.SSLCertVerificationError) -> str:
    cacert = node.tls.get(TlsOption.CACERT, "the system's CAs")
    said = (exc.verify_message or "verification failed").lower()
    if "expired" in said:
        return f"the node's certificate has expired ({said})"
    if "hostname" in said or "ip address mismatch" in said:
        return f"the node's certificate is not for {name} ({said}); set servername to the name it carries"
    return f"the node's certificate is not signed by cacert {cacert} ({said})"


def _refused_client(node: NodeSpec, said: str) -> str:
    cert = node.tls.get(TlsOption.CERT)
    if cert is None:
        return f"the node asks for a client certificate ({said.lower()}); set cert and key"
    said = said.lower().replace("_", " ")
    why = "it has expired" if "expired" in said else "expired, or not signed by a CA the node trusts"
    return f"the node refused the client certificate {cert} ({said}): {why}"
