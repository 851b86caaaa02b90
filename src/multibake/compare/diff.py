"""diff: what a release changed, tag by tag and platform by platform.

Two sides of facts are gathered (thin registry reads, ``read_tags``) and compared by a pure function
(``compare``): per tag, whether it is new, removed, changed or unchanged; per platform, the image
digest, its compressed size (the sum of its layer sizes, as ``docker pull`` downloads them and as
``verify`` counts them), its layer count and its base image (the OCI ``base.name``/``base.digest``
labels multibake writes). A tag is changed when one of its platform images is: attestation manifests
alone (they record when the build ran) change nothing, as for publish.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from multibake.compare.sbom import Package, PackageChange, packages, sbom_document
from multibake.compare.sbom import compare as compare_packages
from multibake.errors import BuildError
from multibake.kinds import Change
from multibake.refs import untagged
from multibake.release.publish import _parallel

if TYPE_CHECKING:
    from multibake.registry.client import Registry
    from multibake.registry.manifest import RawManifest

BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"


@dataclass(frozen=True, kw_only=True, slots=True)
class Image:
    """One platform image, as the registry holds it."""

    digest: str
    bytes: int  # compressed: the sum of its layers' sizes
    layers: int
    base: str | None = None  # base.name[@base.digest] from its labels
    content: str = ""  # its config and layer digests: equal for the same image written with other media types
    sizes: tuple[tuple[str, int], ...] = ()  # (layer digest, compressed size), in the manifest's order
    packages: tuple[Package, ...] | None = None  # from its SBOM attestation; None: it has none


@dataclass(frozen=True, kw_only=True, slots=True)
class TagFacts:
    """What a tag (or a digest) points at: an index of platform images, or one image."""

    ref: str  # where it was read
    digest: str
    images: tuple[tuple[str, Image], ...]  # platform → image, attestation manifests left out


@dataclass(frozen=True, kw_only=True, slots=True)
class PlatformDiff:
    platform: str
    change: Change
    old: Image | None = None
    new: Image | None = None

    @property
    def bytes_delta(self) -> int:
        return (self.new.bytes if self.new else 0) - (self.old.bytes if self.old else 0)

    @property
    def layers_delta(self) -> int:
        return (self.new.layers if self.new else 0) - (self.old.layers if self.old else 0)

    @property
    def same_content(self) -> bool:
        """Another manifest of the same config and layers (BuildKit writes Docker media types without
        attestations, OCI ones with them)."""
        return (
            self.change is Change.CHANGED
            and self.old is not None
            and self.new is not None
            and bool(self.old.content)
            and self.old.content == self.new.content
        )

    @property
    def packages(self) -> tuple[PackageChange, ...]:
        """Packages added, removed and changed, when both sides have an SBOM."""
        if self.old is None or self.new is None or self.old.packages is None or self.new.packages is None:
            return ()
        return tuple(compare_packages(self.old.packages, self.new.packages))

    @property
    def base_changed(self) -> bool:
        return self.old is not None and self.new is not None and self.old.base != self.new.base


@dataclass(frozen=True, kw_only=True, slots=True)
class TagDiff:
    ref: str  # the tag, as named in the configured registry
    change: Change
    old: TagFacts | None = None
    new: TagFacts | None = None
    platforms: tuple[PlatformDiff, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Pair:
    """One tag to compare: where its old side and its new side are read (None: that side has none)."""

    ref: str
    old: str | None
    new: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Report:
    """A comparison and what it compared: ``old``/``new`` describe the two sides for people."""

    mode: str  # "previous" or "against"
    registry: str  # the configured registry: tables name tags relative to it
    old: str
    new: str
    tags: tuple[TagDiff, ...]
    notes: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return any(t.change is not Change.UNCHANGED for t in self.tags)

    def count(self, change: Change) -> int:
        return sum(t.change is change for t in self.tags)


# --- the comparison, pure ------------------------------------------------------------------------


def compare_images(old: TagFacts, new: TagFacts) -> tuple[PlatformDiff, ...]:
    """Platform by platform, in the new side's order, then platforms only the old side has."""
    before, after = dict(old.images), dict(new.images)
    out = []
    for platform, image in new.images:
        was = before.get(platform)
        if was is None:
            out.append(PlatformDiff(platform=platform, change=Change.NEW, new=image))
        else:
            same = was.digest == image.digest
            out.append(
                PlatformDiff(platform=platform, change=Change.UNCHANGED if same else Change.CHANGED, old=was, new=image)
            )
    out += [PlatformDiff(platform=p, change=Change.REMOVED, old=i) for p, i in old.images if p not in after]
    return tuple(out)


def compare_tag(ref: str, old: TagFacts | None, new: TagFacts | None) -> TagDiff:
    if old is None and new is None:
        raise ValueError(f"{ref}: neither side holds it")
    if old is None:
        assert new is not None
        rows = tuple(PlatformDiff(platform=p, change=Change.NEW, new=i) for p, i in new.images)
        return TagDiff(ref=ref, change=Change.NEW, new=new, platforms=rows)
    if new is None:
        rows = tuple(PlatformDiff(platform=p, change=Change.REMOVED, old=i) for p, i in old.images)
        return TagDiff(ref=ref, change=Change.REMOVED, old=old, platforms=rows)
    rows = compare_images(old, new)
    same = all(row.change is Change.UNCHANGED for row in rows)
    return TagDiff(ref=ref, change=Change.UNCHANGED if same else Change.CHANGED, old=old, new=new, platforms=rows)


def compare(
    pairs: Sequence[Pair], old: Mapping[str, TagFacts | None], new: Mapping[str, TagFacts | None]
) -> tuple[TagDiff, ...]:
    """Each pair's sides looked up in the facts read (by where they were read); absent on both: left out."""
    out = []
    for pair in pairs:
        before = old.get(pair.old) if pair.old else None
        after = new.get(pair.new) if pair.new else None
        if before is not None or after is not None:
            out.append(compare_tag(pair.ref, before, after))
    return tuple(out)


# --- reading facts (thin I/O through registry.py) ---------------------------------------------------


@dataclass
class Reader:
    """Reads tags and their images once each (the same image is behind a multi-arch and a per-platform tag)."""

    reg: Registry
    images: dict[str, Image] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tag(self, ref: str) -> TagFacts | None:
        """What ``ref`` (a tag or ``repo@digest``) points at; None when the registry has no such tag."""
        from multibake.registry.manifest import platform_name

        held = self.reg.manifest(ref)
        if held is None:
            return None
        repo = repository(ref)
        if held.is_index:
            images = tuple((p, self.image(f"{repo}@{d}")) for p, d in held.entries().items())
        else:
            config = self.reg.config_of(ref, held)
            images = ((platform_name(config), self._image(held, config)),)
        index = held if held.is_index else None
        images = tuple((p, self.with_packages(repo, image, index)) for p, image in images)
        return TagFacts(ref=ref, digest=held.digest, images=images)

    def with_packages(self, repo: str, image: Image, index: RawManifest | None) -> Image:
        """``image`` with the packages of its SBOM (in ``index``, or among its referrers), once per image."""
        if image.packages is not None:
            return image
        found = sbom_document(self.reg, repo, image.digest, index)
        if found is None:
            return image
        image = replace(image, packages=packages(found[1]))
        with self.lock:
            self.images[image.digest] = image
        return image

    def image(self, ref: str) -> Image:
        digest = ref.rpartition("@")[2]
        with self.lock:
            if digest in self.images:
                return self.images[digest]
        held = self.reg.manifest(ref)
        if held is None:
            raise BuildError(f"{ref}: listed in its index but not in the registry")
        image = self._image(held, self.reg.config_of(ref, held))
        with self.lock:
            self.images[digest] = image
        return image

    @staticmethod
    def _image(held: RawManifest, config: Mapping[str, Any]) -> Image:
        layers = held.doc.get("layers") or []  # null in an image of metadata only
        labels = (config.get("config") or {}).get("Labels") or {}
        name, digest = labels.get(BASE_NAME), labels.get(BASE_DIGEST)
        base = f"{name}@{digest}" if name and digest else name or digest
        parts = [str(held.doc.get("config", {}).get("digest")), *(str(layer.get("digest")) for layer in layers)]
        return Image(
            digest=held.digest,
            bytes=sum(int(layer.get("size", 0)) for layer in layers),
            layers=len(layers),
            base=base,
            content=hashlib.sha256("\n".join(parts).encode()).hexdigest(),
            sizes=tuple((str(layer.get("digest")), int(layer.get("size", 0))) for layer in layers),
        )


def read_tags(reg: Registry, refs: Iterable[str]) -> dict[str, TagFacts | None]:
    """ref → its facts (None: no such tag), a few at a time."""
    reader = Reader(reg)
    wanted = list(dict.fromkeys(refs))
    return dict(zip(wanted, _parallel(reader.tag, wanted), strict=True))


# --- what to compare ---------------------------------------------------------------------------------


STAGING = "multibake-staging-"  # a release's private tags (the docker driver's route): never compared


def previous_pairs(tags: Iterable[tuple[str, str | None]]) -> list[Pair]:
    """The tags of the last release: the image each points at now against the one it pointed at before.

    ``tags`` are (ref, digest before the release, None for a tag the release made).
    """
    return [Pair(ref=ref, old=f"{repository(ref)}@{before}" if before else None, new=ref) for ref, before in tags]


def against_pairs(
    ours: Sequence[Sequence[str]], theirs: Sequence[Sequence[str]], listed: Mapping[str, Sequence[str]]
) -> list[Pair]:
    """Every planned tag against the same repository:tag under another namespace, then the tags either
    side's repositories hold besides (new: in ours only, removed: in theirs only).

    ``ours``/``theirs``: each planned image's references, the same cell in the same order in both;
    ``listed``: repository → the tags it holds (a side that does not hold a tag is not read).
    """
    held = {repo: set(tags) for repo, tags in listed.items()}

    def where(ref: str) -> str | None:
        return ref if ref.rpartition(":")[2] in held.get(repository(ref), set()) else None

    pairs: list[Pair] = []
    repos: dict[str, str] = {}
    planned: dict[str, set[str]] = {}
    for mine, other in zip(ours, theirs, strict=True):
        for a, b in zip(mine, other, strict=True):
            pairs.append(Pair(ref=a, old=where(b), new=where(a)))
            planned.setdefault(repository(a), set()).add(a.rpartition(":")[2])
            repos[repository(a)] = repository(b)
    for mine, other in repos.items():
        have, had = held.get(mine, set()), held.get(other, set())
        for tag in sorted((have | had) - planned[mine]):
            if not tag.startswith(STAGING):
                pairs.append(Pair(ref=f"{mine}:{tag}", old=where(f"{other}:{tag}"), new=where(f"{mine}:{tag}")))
    return pairs


def repository(ref: str) -> str:
    """The repository of a tag or digest reference."""
    return ref.partition("@")[0] if "@" in ref else untagged(ref)
