"""The registry API in process: manifests read and written as exact bytes, blobs read.

Publishing is hundreds of small registry round-trips (staged indexes read back, public and
per-platform tags written, every tag verified); each thread keeps its connection to a registry open
(wire.py, which also speaks the auth flows: Basic, Bearer tokens), so each is one round-trip.
Credentials come from ``$MULTIBAKE_REGISTRY_USER``/``PASSWORD`` for the release's registry host
(auth.py), else from docker's own config, as docker and buildx find them.
Failures are classified once (``RegistryError.transient``); ``Registry`` wraps every call a release
makes in the one retry rule (retry.py), including merging images into one index.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from multibake.config.schema import Retry
from multibake.errors import BuildError
from multibake.failures import Failure, Kind
from multibake.refs import untagged
from multibake.registry.auth import Login
from multibake.registry.connect import Ref, credentials_for, parse
from multibake.registry.errors import (
    DELETES_REFUSED,
    NoSuchRepository,
    RegistryError,
    WireError,
    failure_of,
    status_of,
)
from multibake.registry.manifest import RawManifest, digest_of, platform_name
from multibake.registry.patience import Patience
from multibake.retry import Budget, GaveUp, RetryPolicy, Transient

if TYPE_CHECKING:  # the HTTP client loads at the first request (a build starts bake without it)
    from multibake.registry import wire

T = TypeVar("T")
HTTP_LIBRARIES = ("multibake.registry.wire", "tenacity")  # what the first request imports (preload.py)

_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
TIMEOUT = 60.0  # seconds per request: a registry that stalls longer is treated as a transient failure
IMPATIENT_WINDOW = 10.0  # seconds an impatient read is retried while its registry answers others
MAX_TAGS = 100_000  # a tag list longer than this (or a pagination loop) is refused, not read forever


_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    )
)


class Http:
    """The registry API over HTTP(S) (wire.py), each request authorized for its repository."""

    def __init__(self, timeout: float = TIMEOUT, login: Login | None = None) -> None:
        self.timeout = timeout  # seconds per request (connect, and each read)
        self.login = login  # credentials for login.host, beating docker's config

    def with_timeout(self, timeout: float) -> Http:
        return Http(timeout, self.login)

    def with_login(self, login: Login) -> Http:
        return Http(self.timeout, login)

    def _call(
        self,
        method: str,
        ref: Ref,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        actions: tuple[str, ...] = ("pull", "push"),
    ) -> wire.Answer:
        """One request to ``ref``'s repository (``path`` below ``/v2/<repo>/``, or absolute), through wire.py."""
        from multibake.registry import wire  # with the first request: a build starts bake without it

        login = self.login

        def creds() -> tuple[str, str] | None:
            return credentials_for(ref.host, login)

        auth = wire.Auth(ref.repo, actions, creds, login)
        target = path if path.startswith("/") else f"/v2/{ref.repo}/{path}"
        return wire.call(method, ref.api_host, target, auth=auth, timeout=self.timeout, headers=headers, body=body)

    def get_manifest(self, ref: str) -> tuple[bytes, str] | None:
        """The manifest ``ref`` names, exact bytes and media type, or None when the registry has none."""
        parsed = parse(ref)
        try:
            answer = self._call("GET", parsed, f"manifests/{parsed.reference}", headers={"Accept": _ACCEPT})
        except WireError as exc:
            if status_of(exc) == 404:
                return None
            raise failure_of(f"reading {ref}", exc) from exc
        return answer.body, answer.header("Content-Type").split(";")[0].strip()

    def get_blob(self, ref: str, digest: str) -> bytes:
        """A blob (an image config) of ``ref``'s repository, checked against its digest."""
        parsed = parse(ref)
        what = f"reading blob {digest} of {ref}"
        try:
            body = self._call("GET", parsed, f"blobs/{digest}").body
        except WireError as exc:
            raise failure_of(what, exc) from exc
        if digest_of(body) != digest and digest.startswith("sha256:"):
            raise RegistryError(f"{what}: the registry served other bytes ({digest_of(body)})", transient=True)
        return body

    def put_manifest(self, ref: str, body: bytes, media_type: str) -> None:
        """Write ``body`` as the manifest ``ref`` names, byte for byte (so its digest is kept)."""
        parsed = parse(ref)
        try:
            self._call("PUT", parsed, f"manifests/{parsed.reference}", headers={"Content-Type": media_type}, body=body)
        except WireError as exc:
            raise failure_of(f"writing {ref}", exc) from exc

    def delete_manifest(self, ref: str) -> bool:
        """Delete the manifest ``ref`` (``repo@digest``) names, and every tag on it; False when there was none."""
        parsed = parse(ref)
        try:
            # a token registry grants deletes only to a token asked for them
            self._call("DELETE", parsed, f"manifests/{parsed.reference}", actions=("pull", "push", "delete"))
        except WireError as exc:
            status = status_of(exc)
            if status == 404:
                return False
            if status == 405:
                raise RegistryError(f"deleting {ref}: {DELETES_REFUSED}", transient=False) from exc
            raise failure_of(f"deleting {ref}", exc) from exc
        return True

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of ``repository`` (``host/name``), following the registry's pages (its ``Link`` headers)."""
        from multibake.registry import wire

        parsed = parse(f"{repository}:latest")
        what = f"listing the tags of {repository}"
        tags: list[str] = []
        path: str | None = "tags/list"
        try:
            while path:
                answer = self._call("GET", parsed, path)
                tags.extend(str(t) for t in (json.loads(answer.body).get("tags") or []))
                path = wire.next_page(answer, parsed.api_host)
                if len(tags) > MAX_TAGS:
                    raise RegistryError(f"{what}: more than {MAX_TAGS:,} tags", transient=False)
        except WireError as exc:
            failure = failure_of(what, exc)
            if status_of(exc) == 404:
                raise NoSuchRepository(str(failure), transient=False) from exc
            raise failure from exc
        except (ValueError, AttributeError) as exc:  # not JSON, or not an object
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
        # the bytes, checked, are what the repository serves by that digest, now and later: a read by
        # digest is served again without asking (a per-platform tag's read gives its platform image)
        self.by_digest.setdefault(f"{untagged(ref.partition('@')[0])}@{held.digest}", held)
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
