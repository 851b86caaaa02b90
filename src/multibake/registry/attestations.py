"""The attestations of a published image, read through the registry API.

BuildKit puts one attestation manifest per platform image into the multi-arch index: an entry of
platform ``unknown/unknown`` whose annotations name the image it describes
(``vnd.docker.reference.digest``) and ``vnd.docker.reference.type: attestation-manifest``. Its
layers are in-toto statements, each annotated with its predicate type (``in-toto.io/predicate-type``:
``https://slsa.dev/provenance/v0.2`` or ``v1``, ``https://spdx.dev/Document``). An attestation manifest
moved out of the index is found by the standard referrers tag fallback instead
(``<repository>:sha256-<hex of the image digest>``, an index of the manifests whose ``subject`` is it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from multibake.errors import BuildError
from multibake.refs import untagged
from multibake.registry.client import Registry
from multibake.registry.manifest import RawManifest

SPDX = "https://spdx.dev/Document"
PREDICATE = "in-toto.io/predicate-type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
REFERENCE_TYPE = "vnd.docker.reference.type"
ATTESTATION_MANIFEST = "attestation-manifest"


@dataclass(frozen=True, kw_only=True, slots=True)
class Attestation:
    """One attestation manifest of a platform image: where it is and what its statements are about."""

    image: str  # the platform image's digest
    manifest: str  # the attestation manifest's digest
    predicate_types: tuple[str, ...]
    placement: str  # "index" or "referrers"


def repository(ref: str) -> str:
    """``host/name`` of a reference with a tag or a digest."""
    return untagged(ref.partition("@")[0])


def in_index(index: RawManifest) -> dict[str, str]:
    """image digest → the digest of its attestation manifest in the index."""
    out: dict[str, str] = {}
    for entry in index.doc.get("manifests", []):
        notes = entry.get("annotations") or {}
        if notes.get(REFERENCE_TYPE) == ATTESTATION_MANIFEST and notes.get(REFERENCE_DIGEST):
            out[str(notes[REFERENCE_DIGEST])] = str(entry["digest"])
    return out


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for a subject digest (OCI distribution spec 1.1)."""
    algorithm, _, hex_digest = digest.partition(":")
    return f"{algorithm}-{hex_digest}"[:128]


def referrers(reg: Registry, repo: str, image: str) -> list[dict[str, Any]]:
    """The referrers of ``image`` in ``repo`` through the tag fallback; none when there is no such tag."""
    held = reg.manifest(f"{repo}:{fallback_tag(image)}")
    if held is None or not held.is_index:
        return []
    return list(held.doc.get("manifests", []))


def _types(manifest: RawManifest) -> tuple[str, ...]:
    return tuple(str((layer.get("annotations") or {}).get(PREDICATE, "")) for layer in manifest.doc.get("layers", []))


def of_image(reg: Registry, repo: str, image: str, index: RawManifest | None) -> list[Attestation]:
    """The attestation manifests of platform image ``image``: in ``index``, else among its referrers."""
    found: list[Attestation] = []
    listed = in_index(index) if index is not None else {}
    candidates = [(listed[image], "index")] if image in listed else []
    if not candidates:
        candidates = [
            (str(r["digest"]), "referrers")
            for r in referrers(reg, repo, image)
            if (r.get("annotations") or {}).get(REFERENCE_TYPE) == ATTESTATION_MANIFEST or r.get("artifactType")
        ]
    for digest, placement in candidates:
        held = reg.manifest(f"{repo}@{digest}")
        if held is not None and not held.is_index:
            found.append(Attestation(image=image, manifest=digest, predicate_types=_types(held), placement=placement))
    return found


def statements(reg: Registry, repo: str, attestation: Attestation, predicate_type: str) -> list[dict[str, Any]]:
    """The in-toto statements of ``predicate_type`` in an attestation manifest, parsed."""
    held = reg.manifest(f"{repo}@{attestation.manifest}")
    if held is None:
        raise BuildError(f"{repo}@{attestation.manifest}: the attestation manifest is not in the registry")
    out = []
    for layer in held.doc.get("layers", []):
        if (layer.get("annotations") or {}).get(PREDICATE) != predicate_type:
            continue
        body = reg.blob(f"{repo}@{attestation.manifest}", str(layer["digest"]))
        try:
            out.append(json.loads(body))
        except ValueError as exc:
            raise BuildError(f"{repo}@{layer['digest']}: the attestation is not JSON") from exc
    return out


def has_sbom(attestations: list[Attestation]) -> bool:
    return any(SPDX in a.predicate_types for a in attestations)
