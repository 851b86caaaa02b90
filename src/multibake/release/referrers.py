"""``attest: {placement: referrers}``: attestation manifests out of the index, as OCI referrers.

BuildKit puts each platform image's attestation manifest into the multi-arch index as an entry of
platform ``unknown/unknown``, which `crane validate`, `docker manifest` and registry UIs take for an
extra platform. With this placement, publish writes, for each platform image, a copy of its
attestation manifest whose ``subject`` names the image (the same config and layers: no blob is
copied), pushed by digest; then the referrers tag of the OCI distribution spec (``sha256-<hex of the
image digest>``, an index of the manifests that refer to it) for registries without the referrers API
(Debian's distribution 2.8 has none; one that has the API serves the same manifests through it);
and the public tags get the index without those entries: runnable platforms only.
"""

from __future__ import annotations

import json
from typing import Any

from multibake.registry.attestations import ATTESTATION_MANIFEST, REFERENCE_DIGEST, REFERENCE_TYPE, fallback_tag
from multibake.registry.client import Registry
from multibake.registry.manifest import RawManifest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.docker.attestation.manifest.v1+json"


def _body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _raw(doc: dict[str, Any], media_type: str) -> RawManifest:
    import hashlib

    body = _body(doc)
    return RawManifest(media_type=media_type, digest="sha256:" + hashlib.sha256(body).hexdigest(), doc=doc, body=body)


def clean(index: RawManifest) -> RawManifest:
    """The index without its attestation entries (the same bytes when it has none)."""
    kept = [m for m in index.doc.get("manifests", []) if (m.get("platform") or {}).get("os") != "unknown"]
    if len(kept) == len(index.doc.get("manifests", [])):
        return index
    return _raw({**index.doc, "manifests": kept}, index.media_type)


def _referrer(attestation: RawManifest, subject: dict[str, Any]) -> RawManifest:
    doc = {
        **attestation.doc,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "subject": {
            "mediaType": subject.get("mediaType", OCI_MANIFEST),
            "digest": subject["digest"],
            "size": subject["size"],
        },
    }
    return _raw(doc, OCI_MANIFEST)


def _listed(held: RawManifest, entry: dict[str, Any]) -> dict[str, Any]:
    annotations = {**(entry.get("annotations") or {})}
    for layer in held.doc.get("layers", []):
        predicate = (layer.get("annotations") or {}).get("in-toto.io/predicate-type")
        if predicate:
            annotations.setdefault("in-toto.io/predicate-type", predicate)
    return {
        "mediaType": OCI_MANIFEST,
        "digest": held.digest,
        "size": len(held.body),
        "artifactType": ARTIFACT_TYPE,
        "annotations": annotations,
    }


def detach(reg: Registry, repo: str, index: RawManifest) -> int:
    """Push every attestation manifest of ``index`` as a referrer of its image, with the fallback tag.

    Other referrers already listed for an image (signatures) are kept; its earlier attestations are
    replaced. Returns how many were pushed.
    """
    images = {str(m["digest"]): m for m in index.doc.get("manifests", [])}
    pushed = 0
    for entry in index.doc.get("manifests", []):
        notes = entry.get("annotations") or {}
        subject = images.get(str(notes.get(REFERENCE_DIGEST, "")))
        if notes.get(REFERENCE_TYPE) != ATTESTATION_MANIFEST or subject is None:
            continue
        attestation = reg.manifest(f"{repo}@{entry['digest']}")
        if attestation is None:
            continue
        if "size" not in subject:  # an index written without sizes: the image's own length
            image = reg.manifest(f"{repo}@{subject['digest']}")
            subject = {**subject, "size": len(image.body) if image is not None else 0}
        referrer = _referrer(attestation, subject)
        reg.write(referrer, [f"{repo}@{referrer.digest}"])
        tag = f"{repo}:{fallback_tag(str(subject['digest']))}"
        current = reg.manifest(tag)
        others = [
            m
            for m in (current.doc.get("manifests", []) if current is not None and current.is_index else [])
            if (m.get("annotations") or {}).get(REFERENCE_TYPE) != ATTESTATION_MANIFEST
        ]
        listing = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*others, _listed(referrer, entry)]}
        reg.write(_raw(listing, OCI_INDEX), [tag])
        pushed += 1
    return pushed
