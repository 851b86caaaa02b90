"""What ``multibake gc`` reads from the registry: a repository's graph, and when images were built.

Every tag's manifest is read, then every manifest an index references (platform images,
attestation manifests), a few at a time; each manifest once. A tag that vanished between the
listing and the read is left out. A manifest an index names but the registry does not hold is
kept as a node without children: nothing reachable from a kept tag is ever deleted, known or not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from multibake.maintain import age
from multibake.maintain.graph import Node, Repo
from multibake.registry.client import Registry
from multibake.registry.manifest import RawManifest
from multibake.release.publish import _parallel


def node_of(held: RawManifest) -> Node:
    children = tuple(str(m["digest"]) for m in held.doc.get("manifests", []) if m.get("digest"))
    blobs = [held.doc["config"]] if isinstance(held.doc.get("config"), dict) else []
    blobs += [layer for layer in held.doc.get("layers", []) if isinstance(layer, dict)]
    return Node(
        digest=held.digest,
        children=children,
        blobs=tuple((str(b.get("digest")), int(b.get("size", 0))) for b in blobs if b.get("digest")),
    )


def graph(reg: Registry, repository: str, tags: Sequence[str]) -> tuple[Repo, dict[str, RawManifest]]:
    """The repository's tags, the manifests they reach, and those manifests as read (by digest)."""
    held = _parallel(lambda tag: reg.manifest(f"{repository}:{tag}"), list(tags))
    manifests = {m.digest: m for m in held if m is not None}
    tag_digests = {t: m.digest for t, m in zip(tags, held, strict=True) if m is not None}
    todo = sorted({c for m in manifests.values() for c in node_of(m).children} - set(manifests))
    missing: set[str] = set()
    while todo:
        found = _parallel(lambda d: reg.manifest(f"{repository}@{d}"), todo)
        for digest, m in zip(todo, found, strict=True):
            if m is None:
                missing.add(digest)
            else:
                manifests[digest] = m
        todo = sorted({c for m in found if m is not None for c in node_of(m).children} - set(manifests) - missing)
    nodes = {d: node_of(m) for d, m in manifests.items()}
    return Repo(name=repository, tags=tag_digests, nodes=nodes), manifests


def built(reg: Registry, repository: str, held: RawManifest, manifests: Mapping[str, RawManifest]) -> datetime | None:
    """When the images behind ``held`` were built: the newest time their configs and provenance give."""
    times: list[datetime | None] = []
    entries: list[dict[str, Any]] = (
        held.doc.get("manifests", []) if held.is_index else [{"digest": held.digest, "platform": {}}]
    )
    for entry in entries:
        image = manifests.get(str(entry.get("digest")))
        if image is None or image.is_index:
            continue
        if (entry.get("platform") or {}).get("os") == "unknown":  # an attestation manifest
            for layer in age.provenance_layers(image.doc):
                body = reg.blob(f"{repository}@{image.digest}", layer)
                times.append(age.from_provenance(json.loads(body)))
        elif "config" in image.doc:
            times.append(age.from_config(reg.config_of(f"{repository}@{image.digest}", image)))
    return age.newest(times)
