"""What ``multibake gc`` may delete in one repository, given the tags a policy wants gone: pure.

A registry deletes manifests, not tags (distribution 2.8 refuses ``DELETE`` of a tag), and deleting
a manifest deletes every tag on it. A manifest is also referenced without any tag: an index names
its platform images and attestation manifests by digest, and deleting one of those breaks the index
(the registry does not check). So the tags a policy wants gone are turned into steps here, on the
repository's graph (tag → manifest → the manifests an index references):

- everything reachable from a kept tag is kept: its manifest, and, for an index, every manifest it
  references (platform images, attestation manifests), at any depth;
- a doomed tag whose manifest is kept is removed alone (``UNTAG``: repointed at an empty index of
  its own, which is then deleted by digest), so a staging tag sharing its digest with a public tag
  never takes the public tag with it;
- any other doomed manifest is deleted (``DELETE``), and with it every manifest it references that
  no kept tag reaches, the per-platform tags naming those images, and the signatures and
  attestations stored as ``sha256-<digest>`` tags (cosign's ``.sig``/``.att``/``.sbom``, the OCI
  referrers tag schema) of every deleted manifest.

Indexes are deleted before the images they reference: a run stopped midway leaves no kept tag on
a broken index, and the next run finishes the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

ARTIFACT_TAG = re.compile(r"^sha256-([0-9a-f]{64})(?:\.[A-Za-z0-9_.-]+)?$")


class Action(StrEnum):
    UNTAG = "untag"  # the tag alone: a kept tag needs its manifest
    DELETE = "delete"  # the manifest, and every tag on it


@dataclass(frozen=True, kw_only=True, slots=True)
class Node:
    """One manifest of the repository as read from the registry."""

    digest: str
    children: tuple[str, ...] = ()  # manifests an index references (platform images, attestation manifests)
    blobs: tuple[tuple[str, int], ...] = ()  # (digest, size) of an image's config and layers


@dataclass(frozen=True, kw_only=True, slots=True)
class Repo:
    name: str  # host/repository
    tags: Mapping[str, str]  # tag → digest
    nodes: Mapping[str, Node]  # digest → manifest; every manifest a tag reaches


@dataclass(frozen=True, kw_only=True, slots=True)
class Step:
    action: Action
    repository: str
    digest: str
    tags: tuple[str, ...]  # the tags that go with it
    why: str
    freed: int = 0  # bytes of blobs no kept manifest uses (the registry's blob gc frees them)


def subject(tag: str) -> str | None:
    """The manifest a ``sha256-<hex>[.sig|.att|.sbom|…]`` tag is about, None for other tags."""
    found = ARTIFACT_TAG.match(tag)
    return f"sha256:{found.group(1)}" if found else None


def reach(repo: Repo, roots: Iterable[str]) -> set[str]:
    """Every manifest ``roots`` reference, themselves included, at any depth."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        digest = todo.pop()
        if digest in seen:
            continue
        seen.add(digest)
        node = repo.nodes.get(digest)
        todo.extend(node.children if node else ())
    return seen


def _children_of(repo: Repo, digests: Iterable[str]) -> set[str]:
    return {c for d in digests for c in (repo.nodes[d].children if d in repo.nodes else ())}


def close(repo: Repo, doomed: Mapping[str, str]) -> dict[str, str]:
    """``doomed`` (tag → why) grown to a fixed point with what goes with it.

    The per-platform tags of a doomed index (a tag naming one of its images that no kept index
    holds), and the signature and attestation tags of every manifest that is deleted.
    """
    out = {t: why for t, why in doomed.items() if t in repo.tags}
    while True:
        kept = reach(repo, (d for t, d in repo.tags.items() if t not in out))
        gone = reach(repo, (repo.tags[t] for t in out)) - kept
        platform_images = _children_of(repo, (repo.tags[t] for t in out)) - kept_indexes_reach(repo, out)
        grown = dict(out)
        for tag, digest in repo.tags.items():
            if tag in grown:
                continue
            about = subject(tag)
            if about is not None and about in gone:
                grown[tag] = f"signature or attestation of {about[:19]}, deleted"
            elif about is None and digest in platform_images:
                owner = next(t for t in out if digest in reach(repo, [repo.tags[t]]))
                grown[tag] = f"per-platform tag of {owner}"
        if grown == out:
            return out
        out = grown


def kept_indexes_reach(repo: Repo, doomed: Mapping[str, str]) -> set[str]:
    """What the kept tags that name an index reach (a per-platform tag alone keeps only itself)."""
    roots = [d for t, d in repo.tags.items() if t not in doomed and repo.nodes.get(d, Node(digest=d)).children]
    return reach(repo, roots)


def steps(repo: Repo, doomed: Mapping[str, str]) -> list[Step]:
    """The deletes that remove ``doomed`` (and what goes with it) and nothing any other tag needs."""
    everything = close(repo, doomed)
    kept = reach(repo, (d for t, d in repo.tags.items() if t not in everything))
    out: list[Step] = []
    for tag in sorted(everything):
        if repo.tags[tag] in kept:
            digest = repo.tags[tag]
            out.append(Step(action=Action.UNTAG, repository=repo.name, digest=digest, tags=(tag,), why=everything[tag]))
    gone = reach(repo, (repo.tags[t] for t in everything)) - kept
    counted = {blob for d in kept if d in repo.nodes for blob, _ in repo.nodes[d].blobs}  # kept blobs free nothing
    for digest in _parents_first(repo, gone):
        tags = tuple(sorted(t for t, d in repo.tags.items() if d == digest))
        why = everything[tags[0]] if tags else "referenced only by what is deleted"
        freed = 0
        for blob, size in repo.nodes[digest].blobs if digest in repo.nodes else ():
            if blob not in counted:  # two deleted images may share a layer: counted once
                counted.add(blob)
                freed += size
        out.append(Step(action=Action.DELETE, repository=repo.name, digest=digest, tags=tags, why=why, freed=freed))
    return out


def _parents_first(repo: Repo, digests: set[str]) -> list[str]:
    """``digests`` ordered so that an index comes before the manifests it references."""
    order: list[str] = []
    placed: set[str] = set()

    def place(digest: str, parents: dict[str, set[str]]) -> None:
        if digest in placed:
            return
        for parent in sorted(parents.get(digest, ())):
            place(parent, parents)
        placed.add(digest)
        order.append(digest)

    parents: dict[str, set[str]] = {}
    for d in digests:
        for child in repo.nodes[d].children if d in repo.nodes else ():
            if child in digests:
                parents.setdefault(child, set()).add(d)
    for d in sorted(digests):
        place(d, parents)
    return order
