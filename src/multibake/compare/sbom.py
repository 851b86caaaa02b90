"""``multibake sbom``: a published image's SPDX SBOM per platform, and the packages in it.

The SBOM is read through the registry API from the image's attestation manifest (in the index, or
among its referrers); its packages are named by their package URL's type (``deb``, ``npm``, ``apk``,
``binary``…), name and version. ``diff`` compares two such lists per platform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from multibake.errors import BuildError, UsageError
from multibake.platforms import normalize
from multibake.registry import attestations
from multibake.registry.client import Registry
from multibake.registry.manifest import RawManifest


@dataclass(frozen=True, kw_only=True, slots=True, order=True)
class Package:
    kind: str  # the purl type (deb, npm, apk, golang, binary…), or "-" without a purl
    name: str
    version: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Found:
    """One platform image's SBOM: the SPDX document as the generator wrote it, and its packages."""

    platform: str
    image: str  # the platform image's digest
    placement: str  # where its attestation was: "index" or "referrers"
    document: dict[str, Any]

    @property
    def packages(self) -> tuple[Package, ...]:
        return packages(self.document)


@dataclass(frozen=True, kw_only=True, slots=True)
class PackageChange:
    name: str
    kind: str
    before: str | None  # None: added
    after: str | None  # None: removed


def _purl_type(pkg: dict[str, Any]) -> str:
    for ref in pkg.get("externalRefs") or []:
        locator = str(ref.get("referenceLocator", ""))
        if ref.get("referenceType") == "purl" and locator.startswith("pkg:"):
            return locator[4:].split("/", 1)[0]
    return "-"


def packages(document: dict[str, Any]) -> tuple[Package, ...]:
    """The packages an SPDX document lists, sorted; the document's own root (the scanned filesystem) left out."""
    described = set(document.get("documentDescribes") or [])
    out = set()
    for pkg in document.get("packages") or []:
        if pkg.get("SPDXID") in described or (
            pkg.get("primaryPackagePurpose") == "FILE" and not pkg.get("versionInfo")
        ):
            continue
        out.add(Package(kind=_purl_type(pkg), name=str(pkg.get("name", "")), version=str(pkg.get("versionInfo", ""))))
    return tuple(sorted(out))


def _platforms(reg: Registry, ref: str, held: RawManifest, wanted: str | None) -> dict[str, str]:
    """platform → image digest of the images ``ref`` names (one, for a single-platform image)."""
    found = held.entries() if held.is_index else {reg.image_platform(ref): held.digest}
    if wanted is not None:
        if wanted not in found:
            raise UsageError(f"{ref} has no {wanted} image; it has {', '.join(sorted(found)) or 'none'}")
        return {wanted: found[wanted]}
    return found


def read(reg: Registry, ref: str, platform: str | None = None) -> list[Found]:
    """The SBOM of each platform image of ``ref`` (or of ``platform`` only); BuildError when one has none."""
    try:
        wanted = normalize(platform) if platform else None
    except ValueError as exc:
        raise UsageError(f"--platform {platform}: {exc}") from exc
    held = reg.manifest(ref)
    if held is None:
        raise BuildError(f"{ref} is not in the registry")
    repo = attestations.repository(ref)
    index = held if held.is_index else None
    out = []
    for name, digest in _platforms(reg, ref, held, wanted).items():  # in the index's order
        found = sbom_document(reg, repo, digest, index)
        if found is None:
            where = (
                ""
                if index is not None
                else " (a per-platform tag: its attestations are listed by the multi-arch index)"
            )
            raise BuildError(f"{ref}: the {name} image ({digest}) has no SBOM attestation{where}")
        placement, document = found
        out.append(Found(platform=name, image=digest, placement=placement, document=document))
    return out


def sbom_document(
    reg: Registry, repo: str, digest: str, index: RawManifest | None
) -> tuple[str, dict[str, Any]] | None:
    """(placement, SPDX document) of platform image ``digest``, or None when it has no SBOM attestation."""
    for att in attestations.of_image(reg, repo, digest, index):
        if attestations.SPDX not in att.predicate_types:
            continue
        for statement in attestations.statements(reg, repo, att, attestations.SPDX):
            predicate = statement.get("predicate")
            if isinstance(predicate, dict):
                return att.placement, predicate
    return None


def compare(before: tuple[Package, ...], after: tuple[Package, ...]) -> list[PackageChange]:
    """Packages added, removed and changed (another version) between two SBOMs, by kind and name."""
    old: dict[tuple[str, str], set[str]] = {}
    new: dict[tuple[str, str], set[str]] = {}
    for pkg in before:
        old.setdefault((pkg.kind, pkg.name), set()).add(pkg.version)
    for pkg in after:
        new.setdefault((pkg.kind, pkg.name), set()).add(pkg.version)
    changes = []
    for key in sorted(old.keys() | new.keys()):
        was, now = old.get(key), new.get(key)
        if was == now:
            continue
        changes.append(
            PackageChange(
                kind=key[0],
                name=key[1],
                before=", ".join(sorted(was)) if was else None,
                after=", ".join(sorted(now)) if now else None,
            )
        )
    return changes
