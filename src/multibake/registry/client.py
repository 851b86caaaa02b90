"""The registry API in process: manifests read and written as exact bytes, blobs read.

Publishing is dozens of small registry round-trips (staged indexes read back, public and
per-platform tags written, every tag verified); one HTTP session per registry, its connections kept
alive and shared by the few threads that publish, makes each a round-trip on an open connection.
python-dxf speaks the API and its auth flows (Basic, Bearer tokens); credentials come from
``$MULTIBAKE_REGISTRY_USER``/``PASSWORD`` for the release's registry host (auth.py), else from
docker's own config, as docker and buildx find them.
Failures are classified once (``RegistryError.transient``); ``Registry`` wraps every call a release
makes in the one retry rule (retry.py), including merging images into one index.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from multibake import __version__
from multibake.config.schema import Retry
from multibake.errors import BuildError
from multibake.failures import Failure, Kind
from multibake.registry.auth import Login
from multibake.registry.connect import Ref, ca_bundle, credentials_for, next_page, parse, plain_http, session
from multibake.registry.errors import (
    DELETES_REFUSED,
    NoSuchRepository,
    RegistryError,
    failure_of,
    request_errors,
    status_of,
)
from multibake.registry.manifest import RawManifest, digest_of, platform_name
from multibake.registry.patience import Patience
from multibake.retry import Budget, GaveUp, RetryPolicy, Transient

if TYPE_CHECKING:  # the HTTP libraries load at the first request (a build starts bake without them)
    import requests
    from dxf import DXF, DXFBase

T = TypeVar("T")
HTTP_LIBRARIES = ("requests", "dxf", "tenacity")  # what the first request imports (preload.py)

_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
TIMEOUT = 60.0  # seconds per request: a registry that stalls longer is treated as a transient failure
IMPATIENT_WINDOW = 10.0  # seconds an impatient read is retried while its registry answers others
MAX_TAGS = 100_000  # a tag list longer than this (or a pagination loop) is refused, not read forever
_local = threading.local()


def _client(
    ref: Ref, timeout: float = TIMEOUT, login: Login | None = None, actions: tuple[str, ...] = ("pull", "push")
) -> DXF:
    """One client per repository, thread and token scope (``delete`` is asked for by gc's deletes only)."""
    clients: dict[tuple[str, str, float, Login | None, tuple[str, ...]], DXF] = _local.__dict__.setdefault(
        "clients", {}
    )
    key = (ref.host, ref.repo, timeout, login, actions)
    if key not in clients:
        from dxf import DXF

        def auth(dxf: DXFBase, response: requests.Response) -> None:
            user, secret = credentials_for(ref.host, login) or (None, None)
            dxf.authenticate(
                user, secret, response=response, actions=list(actions), user_agent=f"multibake/{__version__}"
            )

        made = DXF(
            ref.api_host,
            ref.repo,
            auth=auth,
            insecure=plain_http(ref.host),
            tlsverify=ca_bundle(ref.api_host),
            timeout=timeout,
        )
        made._sessions = [session(ref.api_host)]  # dxf alone opens a new connection for every request
        clients[key] = made
    return clients[key]


class Http:
    """The registry API over HTTP(S), one session per repository and thread."""

    def __init__(self, timeout: float = TIMEOUT, login: Login | None = None) -> None:
        self.timeout = timeout  # seconds per request (connect, and each read)
        self.login = login  # credentials for login.host, beating docker's config

    def with_timeout(self, timeout: float) -> Http:
        return Http(timeout, self.login)

    def with_login(self, login: Login) -> Http:
        return Http(self.timeout, login)

    def get_manifest(self, ref: str) -> tuple[bytes, str] | None:
        """The manifest ``ref`` names, exact bytes and media type, or None when the registry has none."""
        parsed = parse(ref)
        try:
            _, response = _client(parsed, self.timeout, self.login).get_manifest_and_response(parsed.reference)
        except request_errors() as exc:
            if status_of(exc) == 404:
                return None
            raise failure_of(f"reading {ref}", exc) from exc
        media = response.headers.get("Content-Type", "").split(";")[0].strip()
        return response.content, media

    def get_blob(self, ref: str, digest: str) -> bytes:
        """A blob (an image config) of ``ref``'s repository, checked against its digest."""
        parsed = parse(ref)
        try:
            return b"".join(cast(Iterable[bytes], _client(parsed, self.timeout, self.login).pull_blob(digest)))
        except request_errors() as exc:
            raise failure_of(f"reading blob {digest} of {ref}", exc) from exc

    def put_manifest(self, ref: str, body: bytes, media_type: str) -> None:
        """Write ``body`` as the manifest ``ref`` names, byte for byte (so its digest is kept)."""
        parsed = parse(ref)
        try:
            _client(parsed, self.timeout, self.login)._request(  # type: ignore[no-untyped-call]  # dxf's set_manifest re-encodes text
                "put", f"manifests/{parsed.reference}", data=body, headers={"Content-Type": media_type}
            )
        except request_errors() as exc:
            raise failure_of(f"writing {ref}", exc) from exc

    def delete_manifest(self, ref: str) -> bool:
        """Delete the manifest ``ref`` (``repo@digest``) names, and every tag on it; False when there was none."""
        parsed = parse(ref)
        try:
            # a token registry grants deletes only to a token asked for them
            client = _client(parsed, self.timeout, self.login, ("pull", "push", "delete"))
            client._request("delete", f"manifests/{parsed.reference}")  # type: ignore[no-untyped-call]
        except request_errors() as exc:
            status = status_of(exc)
            if status == 404:
                return False
            if status == 405:
                raise RegistryError(f"deleting {ref}: {DELETES_REFUSED}", transient=False) from exc
            raise failure_of(f"deleting {ref}", exc) from exc
        return True

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of ``repository`` (``host/name``), following the registry's pages (its ``Link`` headers)."""
        parsed = parse(f"{repository}:latest")
        what = f"listing the tags of {repository}"
        client = _client(parsed, self.timeout, self.login)
        tags: list[str] = []
        path: str | None = "tags/list"
        try:
            while path:
                response = client._request("get", path)  # type: ignore[no-untyped-call]  # dxf's own paging follows any host
                tags.extend(str(t) for t in (response.json().get("tags") or []))
                path = next_page(response, parsed.api_host)
                if len(tags) > MAX_TAGS:
                    raise RegistryError(f"{what}: more than {MAX_TAGS:,} tags", transient=False)
        except request_errors() as exc:
            failure = failure_of(what, exc)
            if status_of(exc) == 404:
                raise NoSuchRepository(str(failure), transient=False) from exc
            raise failure from exc
        except ValueError as exc:  # not JSON
            raise RegistryError(f"{what}: the answer is not a tag list", transient=False) from exc
        return tags


class Api(Protocol):
    """The registry calls a release makes (Http in use, an in-memory registry in tests)."""

    def get_manifest(self, ref: str) -> tuple[bytes, str] | None: ...

    def list_tags(self, repository: str) -> list[str]: ...

    def get_blob(self, ref: str, digest: str) -> bytes: ...

    def put_manifest(self, ref: str, body: bytes, media_type: str) -> None: ...

    def delete_manifest(self, ref: str) -> bool: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class Registry:
    """Every registry read and write of a release, each retried on transient failures.

    A failure that is not transient, or still failing when its budget ran out (retry.py), is a
    BuildError. A host that answered nothing while one request used up its attempts is not tried
    again by this client: a registry that is down ends a release (or a verify of hundreds of tags)
    within one request's budget, not one per tag; one that answers other requests is flaky, and only
    the request that failed fails.
    """

    policy: RetryPolicy
    api: Api = field(default_factory=Http)
    budget: Budget = field(default_factory=Budget)  # what this client's requests share (retry.py)
    # manifests read by digest: their content cannot change, so promote's reads serve verify's sizes
    by_digest: dict[str, RawManifest] = field(default_factory=dict)
    patience: Patience = field(default_factory=Patience)  # how long one try waits (patience.py)

    def _call(self, ref: str, what: str, call: Callable[[Api], T]) -> T:
        host = parse(ref).host
        down = self.budget.down(host)
        if down is not None:
            raise BuildError(f"{what}: not tried, registry {host} {down}")
        tries = itertools.count(1)

        def once() -> T:
            api, began = self._patient(host, next(tries)), self.budget.clock()
            try:
                got = call(api)
            except RegistryError as exc:
                if exc.transient:
                    raise Transient(Failure(Kind.TRANSIENT, str(exc), ()), retry_after=exc.retry_after) from exc
                raise BuildError(str(exc)) from exc
            self.patience.answered(host, self.budget.clock() - began)
            return got

        started = self.budget.clock()
        try:
            return self.policy.request(what, host, once, self.budget)
        except GaveUp as exc:
            if not self.budget.answered_since(host, started):  # nothing answered meanwhile: down, not flaky
                self.budget.give_up(host, f"was still failing {exc.why}")
            reason = str(exc).removeprefix(f"{what}: ")  # the failure names the call already
            raise BuildError(f"{what}: still failing {exc.why}: {reason}") from exc

    def _patient(self, host: str, attempt: int) -> Api:
        """The API for one try: over HTTP, waiting no longer than patience.py allows."""
        wait = self.patience.timeout(host, attempt)
        if isinstance(self.api, Http) and wait is not None and wait < self.api.timeout:
            return self.api.with_timeout(wait)
        return self.api

    def manifest(self, ref: str) -> RawManifest | None:
        """What ``ref`` points at in the registry, or None when there is no such tag."""
        if ref in self.by_digest:
            return self.by_digest[ref]
        got = self._call(ref, f"reading {ref}", lambda api: api.get_manifest(ref))
        if got is None:
            return None
        body, served = got
        doc = json.loads(body)
        media = str(doc.get("mediaType") or served or "application/vnd.docker.distribution.manifest.v2+json")
        held = RawManifest(media_type=media, digest="sha256:" + hashlib.sha256(body).hexdigest(), doc=doc, body=body)
        if ref.endswith(f"@{held.digest}"):  # the bytes it names, checked: served again without asking
            self.by_digest[ref] = held
        return held

    def tags(self, repository: str, *, missing_ok: bool = False) -> list[str]:
        """Every tag of ``repository`` (``host/name``, docker's rules for the host), as the registry lists them.

        A repository the registry does not know is an error, or no tags with ``missing_ok``.
        """

        def listed(api: Api) -> list[str]:
            try:
                return api.list_tags(repository)
            except NoSuchRepository:
                if missing_ok:
                    return []
                raise

        return self._call(repository, f"listing the tags of {repository}", listed)

    def blob(self, ref: str, digest: str) -> bytes:
        """A blob of ``ref``'s repository (an attestation's statement)."""
        return self._call(ref, f"reading blob {digest} of {ref}", lambda api: api.get_blob(ref, digest))

    def delete(self, ref: str) -> bool:
        """Delete the manifest ``repo@digest`` and every tag on it; False when the registry had none."""
        return self._call(ref, f"deleting {ref}", lambda api: api.delete_manifest(ref))

    def image_config(self, ref: str) -> dict[str, Any]:
        """The config (platform, labels, ...) of a single-platform image."""
        return self.config_of(ref, self.manifest(ref))

    def config_of(self, ref: str, held: RawManifest | None) -> dict[str, Any]:
        """The config of ``held``, the single-platform image ``ref`` was read as."""
        if held is None or held.is_index or "config" not in held.doc:
            raise BuildError(f"{ref}: not a single-platform image in the registry")
        digest = str(held.doc["config"]["digest"])
        body = self._call(ref, f"reading the config of {ref}", lambda api: api.get_blob(ref, digest))
        config: dict[str, Any] = json.loads(body)
        return config

    def image_platform(self, ref: str) -> str:
        """The platform a single-platform image's config declares."""
        return platform_name(self.image_config(ref))

    def write(self, held: RawManifest, tags: Sequence[str], annotations: Mapping[str, str] | None = None) -> None:
        """Point ``tags`` (in ``held``'s repository) at ``held``: the same bytes and digest, unless annotated."""
        body = held.annotated(annotations or {}).body
        for tag in tags:
            self._put(tag, f"tagging {tag}", body, held.media_type)

    def put_by_digest(self, repository: str, held: RawManifest) -> None:
        """Write ``held`` into ``repository`` by its digest, no tag (to sign it before a tag points at it)."""
        ref = f"{repository}@{held.digest}"
        self._put(ref, f"writing {ref}", held.body, held.media_type)

    def _put(self, ref: str, what: str, body: bytes, media_type: str) -> None:
        self._call(ref, what, lambda api: api.put_manifest(ref, body, media_type))

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
        digest = digest_of(body)
        (host, repo) = repos.pop()
        ref = f"{host}/{repo}@{digest}"
        self._put(ref, f"writing the index {ref}", body, media)
        return RawManifest(media_type=media, digest=digest, doc=doc, body=body)

    def _entry(self, source: str, held: RawManifest) -> dict[str, Any]:
        """An index entry for a single-platform image: its digest, size and the platform of its config."""
        config = self.image_config(source)
        platform = {"architecture": config["architecture"], "os": config["os"]}
        if config.get("variant"):
            platform["variant"] = config["variant"]
        return {"mediaType": held.media_type, "digest": held.digest, "size": len(held.body), "platform": platform}


def impatient(
    api: Api,
    retry: Retry,
    sleep: Callable[[float], None],
    echo: Callable[[str], None],
    *,
    timeout: float,
    attempts: int,
) -> Registry:
    """A client with short timeouts and few attempts, for reads a command must not hang on (a dead host).

    ``retry`` (platforms.yaml's) still caps the attempts and the first delay; an ``Http`` api is
    replaced by one with ``timeout``, an injected one (tests) is kept.
    """
    limits = Retry(
        attempts=min(attempts, retry.attempts),
        initial_delay=min(1.0, retry.initial_delay),
        max_delay=2.0,
        per_request=min(retry.per_request, IMPATIENT_WINDOW),
    )
    return Registry(
        policy=RetryPolicy(limits=limits, sleep=sleep, echo=echo),
        api=api.with_timeout(timeout) if isinstance(api, Http) else api,
    )
