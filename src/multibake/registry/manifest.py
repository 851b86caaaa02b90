"""A manifest as the registry serves it: its exact bytes, their digest, the parsed document."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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

    def annotated(self, annotations: Mapping[str, str]) -> RawManifest:
        """This index with ``annotations`` added (new bytes, new digest); itself when there are none."""
        if not annotations:
            return self
        doc = {**self.doc, "annotations": {**self.doc.get("annotations", {}), **annotations}}
        body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        return RawManifest(media_type=self.media_type, digest=digest_of(body), doc=doc, body=body)

    def attestations(self) -> int:
        return sum((m.get("platform") or {}).get("os") == "unknown" for m in self.doc.get("manifests", []))


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def platform_name(p: Mapping[str, Any]) -> str:
    """``os/architecture[/variant]`` of an index entry's platform or an image config."""
    return f"{p['os']}/{p['architecture']}" + (f"/{p['variant']}" if p.get("variant") else "")
