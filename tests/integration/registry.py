"""Reading what a registry really holds, over its HTTP API.

Plain HTTP without credentials (the registries on 127.0.0.1), or, for a host made reachable with
``allow``, HTTPS verified with the given CA and Basic credentials (the TLS registry with a password).
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")


@dataclass(frozen=True)
class Manifest:
    media_type: str
    digest: str
    doc: dict[str, Any]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def platforms(self) -> dict[str, str]:
        """platform → digest of an index's image entries; attestations (unknown/unknown) left out."""
        out = {}
        for m in self.doc.get("manifests", []):
            p = m.get("platform") or {}
            if p.get("os") in (None, "unknown"):
                continue
            name = f"{p['os']}/{p['architecture']}" + (f"/{p['variant']}" if p.get("variant") else "")
            out[name] = m["digest"]
        return out

    def attestations(self) -> int:
        return sum(1 for m in self.doc.get("manifests", []) if (m.get("platform") or {}).get("os") == "unknown")


@dataclass(frozen=True)
class _Access:
    context: ssl.SSLContext
    authorization: str


_ACCESS: dict[str, _Access] = {}


def allow(host: str, *, ca: Path, user: str | None = None, password: str = "") -> None:
    """Read ``host`` over HTTPS, verified with ``ca``, as ``user`` (no credentials without one)."""
    basic = base64.b64encode(f"{user}:{password}".encode()).decode() if user else ""
    _ACCESS[host] = _Access(ssl.create_default_context(cafile=str(ca)), f"Basic {basic}" if basic else "")


def forget(host: str) -> None:
    _ACCESS.pop(host, None)


def _open(host: str, path: str, accept: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """The body and content type of ``GET path`` on ``host``."""
    access = _ACCESS.get(host)
    headers = {"Accept": ", ".join(accept)} if accept else {}
    if access is not None and access.authorization:
        headers["Authorization"] = access.authorization
    scheme = "https" if access is not None else "http"
    req = urllib.request.Request(f"{scheme}://{host}{path}", headers=headers)
    with urllib.request.urlopen(req, timeout=30, context=access.context if access else None) as resp:
        return resp.read(), str(resp.headers["Content-Type"])


def split(ref: str) -> tuple[str, str, str]:
    host, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")
    return host, repo, tag


def get(ref: str) -> Manifest | None:
    """The manifest ``ref`` points at, or None when the registry has no such tag."""
    host, repo, tag = split(ref)
    try:
        body, media = _open(host, f"/v2/{repo}/manifests/{tag}", INDEX_TYPES + MANIFEST_TYPES)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return Manifest(media, "sha256:" + hashlib.sha256(body).hexdigest(), json.loads(body))


def config_of(host: str, repo: str, manifest_digest: str) -> dict[str, Any]:
    """The image config (os, architecture, variant, labels) of a platform manifest."""
    manifest = json.loads(_open(host, f"/v2/{repo}/manifests/{manifest_digest}", MANIFEST_TYPES)[0])
    config: dict[str, Any] = json.loads(_open(host, f"/v2/{repo}/blobs/{manifest['config']['digest']}")[0])
    return config


def tags(host: str, repo: str) -> list[str]:
    """Every tag of ``repo``, as the registry lists them (empty when the repository does not exist)."""
    try:
        doc = json.loads(_open(host, f"/v2/{repo}/tags/list")[0])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise
    return sorted(doc.get("tags") or [])


def blob(host: str, repo: str, digest: str) -> bytes:
    """A blob of ``repo`` (a config, a layer, an attestation's in-toto statement)."""
    with urllib.request.urlopen(f"http://{host}/v2/{repo}/blobs/{digest}", timeout=30) as resp:
        body: bytes = resp.read()
    return body


def manifest(host: str, repo: str, digest: str) -> dict[str, Any]:
    """The manifest ``digest`` of ``repo`` (an image or attestation manifest of an index)."""
    req = urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{digest}", headers={"Accept": ", ".join(INDEX_TYPES + MANIFEST_TYPES)}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc
