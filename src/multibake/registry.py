"""The registry API in process: manifests read and written as exact bytes, blobs read.

Publishing is dozens of small registry round-trips (staged indexes read back, public and
per-platform tags written, every tag verified); one HTTP session per repository and thread makes
each a few milliseconds instead of a process start. python-dxf speaks the API and its auth flows
(Basic, Bearer tokens); credentials come from docker's own config, as docker and buildx find them.
Failures are classified once (``RegistryError.transient``); ``Registry`` wraps every call a release
makes in the one retry rule (retry.py), including merging images into one index.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import requests
from dxf import DXF, DXFBase
from dxf.exceptions import DXFError, DXFUnauthorizedError

from multibake.errors import BuildError
from multibake.failures import Failure, Kind
from multibake.plan import is_host, untagged
from multibake.retry import RetryPolicy, Transient

T = TypeVar("T")

_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
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


def _client(ref: Ref, timeout: float = TIMEOUT) -> DXF:
    clients: dict[tuple[str, str, float], DXF] = _local.__dict__.setdefault("clients", {})
    key = (ref.host, ref.repo, timeout)
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
            timeout=timeout,
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


class Http:
    """The registry API over HTTP(S), one session per repository and thread."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout  # seconds per request (connect, and each read)

    def get_manifest(self, ref: str) -> tuple[bytes, str] | None:
        """The manifest ``ref`` names, exact bytes and media type, or None when the registry has none."""
        parsed = parse(ref)
        try:
            _, response = _client(parsed, self.timeout).get_manifest_and_response(parsed.reference)
        except _ERRORS as exc:
            if isinstance(exc, requests.HTTPError) and exc.response is not None and exc.response.status_code == 404:
                return None
            raise _failure(f"reading {ref}", exc) from exc
        media = response.headers.get("Content-Type", "").split(";")[0].strip()
        return response.content, media

    def get_blob(self, ref: str, digest: str) -> bytes:
        """A blob (an image config) of ``ref``'s repository, checked against its digest."""
        parsed = parse(ref)
        try:
            return b"".join(cast(Iterable[bytes], _client(parsed, self.timeout).pull_blob(digest)))
        except _ERRORS as exc:
            raise _failure(f"reading blob {digest} of {ref}", exc) from exc

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of ``repository`` (``host/name``, no tag), following the registry's pages; [] when absent."""
        parsed = parse(repository)
        try:
            return sorted(cast(list[str], _client(parsed, self.timeout).list_aliases()) or [])
        except _ERRORS as exc:
            if isinstance(exc, requests.HTTPError) and exc.response is not None and exc.response.status_code == 404:
                return []
            raise _failure(f"listing the tags of {repository}", exc) from exc

    def put_manifest(self, ref: str, body: bytes, media_type: str) -> None:
        """Write ``body`` as the manifest ``ref`` names, byte for byte (so its digest is kept)."""
        parsed = parse(ref)
        try:
            _client(parsed, self.timeout)._request(  # type: ignore[no-untyped-call]  # dxf's set_manifest re-encodes text
                "put", f"manifests/{parsed.reference}", data=body, headers={"Content-Type": media_type}
            )
        except _ERRORS as exc:
            raise _failure(f"writing {ref}", exc) from exc


class Api(Protocol):
    """The registry calls a release makes (Http in use, an in-memory registry in tests)."""

    def get_manifest(self, ref: str) -> tuple[bytes, str] | None: ...

    def get_blob(self, ref: str, digest: str) -> bytes: ...

    def put_manifest(self, ref: str, body: bytes, media_type: str) -> None: ...

    def list_tags(self, repository: str) -> list[str]: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class RawManifest:
    """A manifest as the registry serves it; ``digest`` is the sha256 of its exact bytes."""

    media_type: str
    digest: str
    doc: dict[str, Any]
    body: bytes = field(default=b"", repr=False)  # the exact bytes, to tag them elsewhere unchanged

    @property
    def is_index(self) -> bool:
        return "index" in self.media_type or "manifest.list" in self.media_type

    def entries(self) -> dict[str, str]:
        """platform → digest of an index's images; attestation manifests (unknown/unknown) left out."""
        out: dict[str, str] = {}
        for m in self.doc.get("manifests", []):
            p = m.get("platform") or {}
            if p.get("os") in (None, "unknown"):
                continue
            out[platform_name(p)] = m["digest"]
        return out

    def attestations(self) -> int:
        return sum((m.get("platform") or {}).get("os") == "unknown" for m in self.doc.get("manifests", []))


def platform_name(p: Mapping[str, Any]) -> str:
    """``os/architecture[/variant]`` of an index entry's platform or an image config."""
    return f"{p['os']}/{p['architecture']}" + (f"/{p['variant']}" if p.get("variant") else "")


@dataclass(frozen=True, kw_only=True, slots=True)
class Registry:
    """Every registry read and write of a release, each retried on transient failures.

    A failure that is not transient, or still failing after the last attempt, is a BuildError.
    """

    policy: RetryPolicy
    api: Api = field(default_factory=Http)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        def once() -> T:
            try:
                return call()
            except RegistryError as exc:
                if exc.transient:
                    raise Transient(Failure(Kind.TRANSIENT, str(exc), ())) from exc
                raise BuildError(str(exc)) from exc

        try:
            return self.policy.call(what, once)
        except Transient as exc:
            raise BuildError(f"{what}: still failing after {self.policy.limits.attempts} attempts: {exc}") from exc

    def manifest(self, ref: str) -> RawManifest | None:
        """What ``ref`` points at in the registry, or None when there is no such tag."""
        got = self._call(f"reading {ref}", lambda: self.api.get_manifest(ref))
        if got is None:
            return None
        body, served = got
        doc = json.loads(body)
        media = str(doc.get("mediaType") or served or "application/vnd.docker.distribution.manifest.v2+json")
        return RawManifest(media_type=media, digest="sha256:" + hashlib.sha256(body).hexdigest(), doc=doc, body=body)

    def image_config(self, ref: str) -> dict[str, Any]:
        """The config (platform, labels, ...) of a single-platform image."""
        return self.config_of(ref, self.manifest(ref))

    def config_of(self, ref: str, held: RawManifest | None) -> dict[str, Any]:
        """The config of ``held``, the single-platform image ``ref`` was read as."""
        if held is None or held.is_index or "config" not in held.doc:
            raise BuildError(f"{ref}: not a single-platform image in the registry")
        digest = str(held.doc["config"]["digest"])
        body = self._call(f"reading the config of {ref}", lambda: self.api.get_blob(ref, digest))
        config: dict[str, Any] = json.loads(body)
        return config

    def tags(self, repository: str) -> list[str]:
        """Every tag of ``repository`` (``host/name``), sorted; [] when the registry has no such repository."""
        return self._call(f"listing the tags of {repository}", lambda: self.api.list_tags(repository))

    def image_platform(self, ref: str) -> str:
        """The platform a single-platform image's config declares."""
        return platform_name(self.image_config(ref))

    def write(self, held: RawManifest, tags: Sequence[str], annotations: Mapping[str, str] | None = None) -> None:
        """Point ``tags`` (in ``held``'s repository) at ``held``: the same bytes and digest, unless annotated."""
        body = held.body
        if annotations:
            doc = {**held.doc, "annotations": {**held.doc.get("annotations", {}), **annotations}}
            body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        for tag in tags:
            self._call(f"tagging {tag}", functools.partial(self.api.put_manifest, tag, body, held.media_type))

    def merge(self, sources: Sequence[str]) -> RawManifest:
        """One index of ``sources`` (images, or indexes whose entries are taken), pushed by digest: no tag.

        Written here rather than by ``buildx imagetools create``: that needs a tag to push to (which
        would stay in the registry), wraps a lone image differently across buildx versions, and costs a
        process per cell. The same sources give the same bytes, so the same index digest.
        """
        repos = {(ref.host, ref.repo) for ref in map(parse, sources)}
        if len(repos) != 1:
            raise BuildError(f"cannot merge images of several repositories into one index: {', '.join(sources)}")
        entries: dict[str, dict[str, Any]] = {}
        for source in sources:
            held = self.manifest(source)
            if held is None:
                raise BuildError(f"{source} is not in the registry")
            for entry in held.doc.get("manifests", []) if held.is_index else [self._entry(source, held)]:
                entries.setdefault(entry["digest"], entry)
        docker_types = any("docker" in str(e.get("mediaType")) for e in entries.values())
        media = _DOCKER_LIST if docker_types else _OCI_INDEX
        doc = {"schemaVersion": 2, "mediaType": media, "manifests": list(entries.values())}
        body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        (host, repo) = repos.pop()
        ref = f"{host}/{repo}@{digest}"
        self._call(f"writing the index {ref}", functools.partial(self.api.put_manifest, ref, body, media))
        return RawManifest(media_type=media, digest=digest, doc=doc, body=body)

    def _entry(self, source: str, held: RawManifest) -> dict[str, Any]:
        """An index entry for a single-platform image: its digest, size and the platform of its config."""
        config = self.image_config(source)
        platform = {"architecture": config["architecture"], "os": config["os"]}
        if config.get("variant"):
            platform["variant"] = config["variant"]
        return {"mediaType": held.media_type, "digest": held.digest, "size": len(held.body), "platform": platform}
