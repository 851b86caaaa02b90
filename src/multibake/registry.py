"""The registry API in process: manifests read and written as exact bytes, blobs read.

Publishing is dozens of small registry round-trips (staged indexes read back, public and
per-platform tags written, every tag verified); one HTTP session per repository and thread makes
each a few milliseconds instead of a process start. python-dxf speaks the API and its auth flows
(Basic, Bearer tokens); credentials come from docker's own config, as docker and buildx find them.
Failures are raised as ``RegistryError`` with ``transient`` set; bake.py retries those.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import requests
from dxf import DXF, DXFBase
from dxf.exceptions import DXFError, DXFUnauthorizedError

from multibake.plan import is_host, untagged

_DOCKER_HUB = "registry-1.docker.io"
_HUB_AUTH_KEY = "https://index.docker.io/v1/"
TIMEOUT = 60.0  # seconds per request: a registry that stalls longer is treated as a transient failure
_local = threading.local()


class RegistryError(Exception):
    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class Ref:
    host: str  # as written in the reference (docker.io for Docker Hub)
    repo: str
    reference: str  # tag or digest

    @property
    def api_host(self) -> str:
        return _DOCKER_HUB if self.host == "docker.io" else self.host


def parse(ref: str) -> Ref:
    """``host/repo:tag`` or ``host/repo@sha256:…`` → its parts (docker's rules for the host part)."""
    name, at, reference = ref.partition("@")
    if not at:
        name = untagged(ref)
        reference = ref[len(name) + 1 :] or "latest"
    first, sep, rest = name.partition("/")
    if sep and is_host(first):
        host, repo = first, rest
    else:
        host, repo = "docker.io", name
    if host == "docker.io" and "/" not in repo:
        repo = f"library/{repo}"
    return Ref(host, repo, reference)


def plain_http(host: str) -> bool:
    # plain HTTP only for registries on this machine, as dockerd treats them
    return host.startswith(("localhost", "127."))


def ca_bundle(host: str, certs_root: Path = Path("/etc/docker/certs.d")) -> str | bool:
    """What to verify ``host``'s TLS certificate against, as docker does.

    docker's per-registry CA (``/etc/docker/certs.d/<host>/ca.crt``) first, then the system's trust
    store (where an in-house CA is installed), else requests' own bundle.
    """
    own = certs_root / host / "ca.crt"
    if own.is_file():
        return str(own)
    system = ssl.get_default_verify_paths().cafile
    return system if system and Path(system).is_file() else True


def credentials(host: str, config_dir: Path | None = None) -> tuple[str, str] | None:
    """(user, secret) for ``host`` from docker's config: a credential helper, else ``auths``."""
    folder = config_dir or Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    key = _HUB_AUTH_KEY if host == "docker.io" else host
    helper = (config.get("credHelpers") or {}).get(key) or config.get("credsStore")
    if helper:
        proc = subprocess.run(
            [f"docker-credential-{helper}", "get"], input=key, capture_output=True, text=True, check=False
        )
        if proc.returncode == 0:
            found = json.loads(proc.stdout)
            return str(found["Username"]), str(found["Secret"])
    # docker writes plain host names, but older clients wrote URLs: https://host or https://host/v1/
    auths = {_auth_host(k): v for k, v in (config.get("auths") or {}).items()}
    entry = auths.get(_auth_host(key)) or {}
    if entry.get("auth"):
        user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
        return user, secret
    return None


def _auth_host(key: str) -> str:
    if key == _HUB_AUTH_KEY:
        return key
    return key.removeprefix("https://").removeprefix("http://").split("/", 1)[0]


def _client(ref: Ref) -> DXF:
    clients: dict[tuple[str, str], DXF] = _local.__dict__.setdefault("clients", {})
    key = (ref.host, ref.repo)
    if key not in clients:

        def auth(dxf: DXFBase, response: requests.Response) -> None:
            user, secret = credentials(ref.host) or (None, None)
            dxf.authenticate(user, secret, response=response, actions=["pull", "push"])

        clients[key] = DXF(
            ref.api_host,
            ref.repo,
            auth=auth,
            insecure=plain_http(ref.host),
            tlsverify=ca_bundle(ref.api_host),
            timeout=TIMEOUT,
        )
    return clients[key]


_ERRORS = (requests.RequestException, DXFError)


def _failure(what: str, exc: Exception) -> RegistryError:
    """One classification for every registry call: 5xx, 429, resets and timeouts are transient."""
    if isinstance(exc, DXFUnauthorizedError):
        return RegistryError(f"{what}: 401 unauthorized (docker login?)", transient=False)
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        detail = exc.response.text.strip().splitlines()[0][:200] if exc.response.text.strip() else ""
        transient = status >= 500 or status == 429
        return RegistryError(f"{what}: HTTP {status} {detail}".rstrip(), transient=transient)
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return RegistryError(f"{what}: {type(exc).__name__}: connection reset or timed out", transient=True)
    return RegistryError(f"{what}: {exc}", transient=False)


def get_manifest(ref: str) -> tuple[bytes, str] | None:
    """The manifest ``ref`` names, exact bytes and media type, or None when the registry has none."""
    parsed = parse(ref)
    try:
        _, response = _client(parsed).get_manifest_and_response(parsed.reference)
    except _ERRORS as exc:
        if isinstance(exc, requests.HTTPError) and exc.response is not None and exc.response.status_code == 404:
            return None
        raise _failure(f"reading {ref}", exc) from None
    media = response.headers.get("Content-Type", "").split(";")[0].strip()
    return response.content, media


def get_blob(ref: str, digest: str) -> bytes:
    """A blob (an image config) of ``ref``'s repository, checked against its digest."""
    parsed = parse(ref)
    try:
        return b"".join(cast(Iterable[bytes], _client(parsed).pull_blob(digest)))
    except _ERRORS as exc:
        raise _failure(f"reading blob {digest} of {ref}", exc) from None


def put_manifest(ref: str, body: bytes, media_type: str) -> None:
    """Write ``body`` as the manifest ``ref`` names, byte for byte (so its digest is kept)."""
    parsed = parse(ref)
    try:
        _client(parsed)._request(  # type: ignore[no-untyped-call]  # dxf's set_manifest re-encodes text
            "put", f"manifests/{parsed.reference}", data=body, headers={"Content-Type": media_type}
        )
    except _ERRORS as exc:
        raise _failure(f"writing {ref}", exc) from None
