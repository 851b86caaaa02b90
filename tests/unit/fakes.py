"""In-memory stand-ins for the registry API and the docker client, for release tests without docker.

``FakeRegistry`` implements ``registry.Api`` (manifests by tag and digest, config blobs, tag lists) and can be
told to fail the next calls. ``FakeDocker`` answers the few docker calls a release makes:
``buildx.inspect``, ``system.info`` and a bake argv run through ``run_bake`` (streamed progress in
BuildKit's plain format, pushes to staging tags, scripted failures).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multibake.docker import DockerFailure
from multibake.dockerfacts import BuilderFacts, EngineFacts, NodeFacts
from multibake.plan.model import Plan
from multibake.registry import connect
from multibake.registry.errors import DELETES_REFUSED, NoSuchRepository, RegistryError
from multibake.registry.manifest import platform_name

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _key(ref: str) -> tuple[str, str]:
    parsed = connect.parse(ref)
    return f"{parsed.host}/{parsed.repo}", parsed.reference


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _platform(name: str) -> dict[str, str]:
    os_, arch, *variant = name.split("/")
    return {"os": os_, "architecture": arch, **({"variant": variant[0]} if variant else {})}


@dataclass
class FakeRegistry:
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    fail_next: list[RegistryError] = field(default_factory=list)  # raised by the next calls, in order
    writes: list[str] = field(default_factory=list)  # refs written through the API
    manifest_reads: list[str] = field(default_factory=list)  # manifests read through the API, in order
    refuse_writes: RegistryError | None = None  # raised by every manifest write (a registry that stopped taking pushes)
    refuse_tags: RegistryError | None = None  # raised by writes to a public tag only (staging and digests pass)
    deletes: bool = True  # False: a registry without storage.delete.enabled
    deleted: list[str] = field(default_factory=list)  # refs deleted through the API
    refuse_refs: dict[str, RegistryError] = field(default_factory=dict)  # raised by every write of these refs

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    def get_manifest(self, ref: str) -> tuple[bytes, str] | None:
        self._maybe_fail()
        self.manifest_reads.append(ref)
        return self.manifests.get(_key(ref))

    def get_blob(self, ref: str, digest: str) -> bytes:
        self._maybe_fail()
        return self.blobs[digest]

    def list_tags(self, repository: str) -> list[str]:
        """The tags of ``repository`` in the order they were stored (a registry's order is its own)."""
        self._maybe_fail()
        repo, _ = _key(f"{repository}:latest")
        tags = [ref for (r, ref) in self.manifests if r == repo and not ref.startswith("sha256:")]
        if not tags:
            raise NoSuchRepository(f"listing the tags of {repository}: HTTP 404 NAME_UNKNOWN", transient=False)
        return tags

    def tag(self, repository: str, *tags: str) -> None:
        """Give ``repository`` these tags (each a tiny image): a registry's tag list for update tests."""
        for tag in tags:
            self.store(f"{repository}:{tag}", json.dumps({"schemaVersion": 2, "tag": tag}).encode(), MANIFEST)

    def put_manifest(self, ref: str, body: bytes, media_type: str) -> None:
        self._maybe_fail()
        if self.refuse_writes is not None:
            raise self.refuse_writes
        if ref in self.refuse_refs:
            raise self.refuse_refs[ref]
        tag = ref.rsplit(":", 1)[-1] if "@" not in ref else ""
        if self.refuse_tags is not None and tag and not tag.startswith("multibake-staging-"):
            raise self.refuse_tags
        self.writes.append(ref)
        self.store(ref, body, media_type)

    def delete_manifest(self, ref: str) -> bool:
        """As distribution: the manifest goes, and every tag on it; 405 where deletes are off."""
        self._maybe_fail()
        if not self.deletes:
            raise RegistryError(f"deleting {ref}: {DELETES_REFUSED}", transient=False)
        repo, digest = _key(ref)
        if (repo, digest) not in self.manifests:
            return False
        self.deleted.append(ref)
        body = self.manifests[(repo, digest)][0]
        for key in [k for k, (b, _) in self.manifests.items() if k[0] == repo and b == body]:
            del self.manifests[key]
        return True

    def store(self, ref: str, body: bytes, media_type: str) -> str:
        repo, reference = _key(ref)
        digest = _digest(body)
        self.manifests[(repo, reference)] = (body, media_type)
        self.manifests[(repo, digest)] = (body, media_type)
        return digest

    def image(self, ref: str, platform: str, labels: Mapping[str, str] | None = None, more: int = 0) -> str:
        """Push a single-platform image to ``ref`` (two layers, ``more`` layers of 100 bytes on top); its digest."""
        config = json.dumps({**_platform(platform), "config": {"Labels": dict(labels or {})}, "more": more}).encode()
        self.blobs[_digest(config)] = config
        layers = [{"digest": _digest(config + b"layer"), "size": 1000}, {"digest": _digest(config), "size": 234}]
        layers += [{"digest": _digest(config + b"%d" % n), "size": 100} for n in range(more)]
        doc = {"schemaVersion": 2, "mediaType": MANIFEST, "config": {"digest": _digest(config)}, "layers": layers}
        return self.store(ref, json.dumps(doc).encode(), MANIFEST)

    def index(self, ref: str, entries: Mapping[str, str]) -> str:
        """Push an index of ``entries`` (platform → digest) to ``ref``; its digest."""
        manifests = [{"mediaType": MANIFEST, "digest": d, "platform": _platform(p)} for p, d in entries.items()]
        doc = {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}
        return self.store(ref, json.dumps(doc).encode(), INDEX)

    def publish(self, ref: str, platforms: Sequence[str], labels: Mapping[str, str] | None = None) -> str:
        """A complete multi-arch image at ``ref``; the index digest."""
        repo = ref.rsplit(":", 1)[0]
        return self.index(ref, {p: self.image(f"{repo}:img-{p.replace('/', '-')}", p, labels) for p in platforms})

    def held(self, ref: str) -> dict[str, Any] | None:
        got = self.manifests.get(_key(ref))
        return json.loads(got[0]) if got else None

    def platforms(self, ref: str) -> list[str]:
        doc = self.held(ref) or {}
        names = (platform_name(m["platform"]) for m in doc.get("manifests", []))
        return sorted(n for n in names if n != "unknown/unknown")  # attestation manifests left out


@dataclass(frozen=True)
class Built:
    """What a bake target makes: its image repository, staging tag and platforms."""

    image: str
    staging: str
    platforms: tuple[str, ...]


def targets_of(*plans: Plan) -> dict[str, Built]:
    """bake target → what it builds, for every cell (and every per-platform piece) of ``plans``."""
    out: dict[str, Built] = {}
    for p in plans:
        for c in p.cells:
            out[c.target] = Built(c.image, c.staging, c.platforms)
            out.update((s.target, Built(c.image, s.staging, (s.platform,))) for s in c.split)
    return out


_TRANSIENT = "ERROR: failed to push: unexpected status from PUT request: 503 Service Unavailable"


@dataclass
class FakeDocker:
    """A docker client whose bake "builds" by pushing images into a FakeRegistry."""

    registry: FakeRegistry
    targets: dict[str, Built]
    broken: set[str] = field(default_factory=set)  # targets whose RUN step fails, every time
    transient: list[int] = field(default_factory=list)  # per coming run: fail with a 503 after this many targets
    platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64", "linux/arm/v7")
    runs: list[list[str]] = field(default_factory=list)  # the targets of every bake run
    argvs: list[list[str]] = field(default_factory=list)  # the full argv of every bake run
    pushes: int = 0
    driver: str = "remote"  # "docker": staging tags; BuildKit's own drivers: push by digest
    attestations: bool = True  # each pushed index carries a provenance attestation manifest
    grown: dict[str, int] = field(default_factory=dict)  # target → layers its images have on top of the usual two
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # target → labels of its images
    docker_cmd: list[str] = field(default_factory=lambda: ["docker"])

    def inspect(self, name: str | None, *, bootstrap: bool = False) -> BuilderFacts:
        node = NodeFacts(name="fake0", endpoint="", platforms=self.platforms, status="running")
        return BuilderFacts(name=name or "fake", driver=self.driver, nodes=(node,))

    def engine(self) -> EngineFacts:
        return EngineFacts(buildx_version="0.29.1", snapshotter=True)  # the containerd image store

    def run_bake(self, argv: Sequence[str]) -> Iterator[str]:
        """Run a ``docker buildx bake`` argv as multibake builds it."""
        assert list(argv[:3]) == ["docker", "buildx", "bake"], argv
        self.argvs.append(list(argv))
        targets, sets, metadata, args = [], {}, None, iter(argv[3:])
        for arg in args:
            if arg in ("--file", "--progress", "--builder"):
                next(args)
            elif arg == "--metadata-file":
                metadata = Path(next(args))
            elif arg == "--set":
                key, _, value = next(args).partition("=")
                sets[key] = value
            elif not arg.startswith("--"):
                targets.append(arg)
        assert metadata is not None
        return self._bake(targets=targets, set=sets, metadata_file=metadata)

    def _bake(self, *, targets: list[str], set: Mapping[str, str], metadata_file: Path, **_: Any) -> Iterator[str]:
        self.runs.append(list(targets))
        fail_after = self.transient.pop(0) if self.transient else None
        return self._progress(targets, set, metadata_file, fail_after)

    def _progress(
        self, targets: list[str], sets: Mapping[str, str], metadata_file: Path, fail_after: int | None
    ) -> Iterator[str]:
        lines: list[str] = []
        metadata: dict[str, Any] = {}
        for n, target in enumerate(targets):
            if fail_after is not None and n == fail_after:
                self._fail([*lines, _TRANSIENT])
            step = 2 * n + 1
            lines += [f"#{step} [{target} 1/1] RUN make", f"#{step} DONE 0.1s"]
            if target in self.broken:
                lines[-1] = f"#{step} ERROR: process did not complete successfully: exit code: 1"
                yield from lines[-2:]
                continue
            output = sets.get(f"{target}.output", "")
            by_digest = "push-by-digest=true" in output
            pushed = self._push(target, tagged=not by_digest) if output == "type=registry" or by_digest else None
            if pushed:
                lines += [f"#{step + 1} [{target}] exporting to image"]
                lines += [f"#{step + 1} pushing manifest for {pushed} 0.0s done", f"#{step + 1} DONE 0.1s"]
                metadata[target] = {
                    "containerimage.digest": pushed.rsplit("@", 1)[1],
                    "image.name": self.targets[target].staging,
                    "buildx.build.ref": f"fake/{self.node_of(target)}/ref{step}",
                }
            yield from lines[-5:] if pushed else lines[-2:]
        if fail_after is not None and fail_after >= len(targets):  # dockerd's second push failed
            self._fail([*lines, _TRANSIENT])
        if any(t in self.broken for t in targets):
            self._fail([*lines, "ERROR: failed to solve: process did not complete successfully: exit code: 1"])
        metadata_file.write_text(json.dumps(metadata))

    def node_of(self, target: str) -> str:
        """The node that builds ``target``: ``arm`` for a target of arm platforms only, else ``amd64``."""
        return "arm" if all("arm" in p for p in self.targets[target].platforms) else "amd64"

    def _push(self, target: str, tagged: bool = True) -> str:
        built = self.targets[target]
        entries = {
            p: self.registry.image(
                f"{built.image}:{target}-{p.replace('/', '-')}", p, self.labels.get(target), self.grown.get(target, 0)
            )
            for p in built.platforms
        }
        # like BuildKit's provenance, an attestation manifest that records when the build ran
        self.pushes += 1
        stamp = {"buildTime": str(self.pushes)}
        attestation = self.registry.image(f"{built.image}:att-{self.pushes}", "unknown/unknown", stamp)
        attested = {"unknown/unknown": attestation} if self.attestations else {}
        if len(built.platforms) == 1:
            (digest,) = entries.values()
            body, media = self.registry.manifests[_key(f"{built.image}@{digest}")]
            self.registry.store(built.staging, body, media)
        else:
            digest = self.registry.index(built.staging, {**entries, **attested})
        if not tagged:  # pushed by digest: the staging tag was never written
            del self.registry.manifests[_key(built.staging)]
        return f"{built.image}@{digest}"

    @staticmethod
    def _fail(lines: list[str]) -> None:
        raise DockerFailure(["docker", "buildx", "bake"], "\n".join(lines))
