"""Moving a release's public tags: the multi-arch tags, then the per-platform ones.

``publish.promote`` reads what every tag holds (``read_all``, in the round that reads the staged
indexes) and decides which cells are ready; here their tags are pointed at the staged indexes, each
write retried by the registry client, and a tag that still fails fails its own cell.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from multibake.errors import BuildError
from multibake.plan.model import Cell
from multibake.registry.client import Registry
from multibake.registry.manifest import RawManifest
from multibake.release import referrers

A = TypeVar("A")
B = TypeVar("B")
Parallel = Callable[[Callable[[Any], Any], Iterable[Any]], list[Any]]  # publish._parallel: a few at a time


Moved = dict[str, RawManifest | None]  # each tag a cell moved → what it held before


def write_tags(
    reg: Registry,
    ready: list[Cell],
    staged: Mapping[str, RawManifest],
    now: Mapping[str, Read],
    *,
    parallel: Parallel,
    detach: bool = False,
) -> tuple[dict[str, Moved], dict[str, str]]:
    """Every public tag of ``ready`` pointed at its staged index: (target → tags moved, target → why it failed).

    ``now`` is what each public and per-platform tag held when promote read them (``read_all``).

    A tag write that fails past the retry budget fails its own cell only: the other cells' tags are
    written all the same. A cell whose multi-arch tags could not all move keeps its per-platform tags
    where they were, so none of them shows an image its index does not list.
    """

    moved_by: dict[str, Moved] = {}
    failed: dict[str, str] = {}

    def collect(owner: str, got: Moved | BuildError) -> None:
        if isinstance(got, BuildError):
            failed.setdefault(owner, str(got))
        else:
            moved_by.setdefault(owner, {}).update(got)

    # Two rounds of writes, never overlapping: a registry on a plain filesystem rewrites an image's
    # revision link on every write of that image, and an index write that checks its images at that
    # moment is refused ("blob unknown"). So no per-platform tag is written while an index is; the
    # platform images those tags get are read meanwhile (a read writes nothing).
    images = [s for c in ready for s in _sources(c, staged[c.target]).values()]
    indexed, read = together(
        parallel,
        [functools.partial(_write_index, reg, c, staged[c.target], now, detach=detach) for c in ready],
        [functools.partial(read_one, reg, ref) for ref in images],
    )
    for cell, got in zip(ready, indexed, strict=True):
        collect(cell.target, got)
    now = {**now, **dict(zip(images, read, strict=True))}
    singles = [(c, p, refs) for c in ready if c.target not in failed for p, refs in c.platform_tags if refs]
    written = parallel(lambda item: _write_platform(reg, item, staged[item[0].target], now), singles)
    for (cell, _, _), got in zip(singles, written, strict=True):
        collect(cell.target, got)
    return moved_by, failed


Read = RawManifest | None | BuildError  # what a reference held when promote read it, or why it could not


def together(
    parallel: Parallel, first: Sequence[Callable[[], A]], second: Sequence[Callable[[], B]]
) -> tuple[list[A], list[B]]:
    """Two lists of calls run as one round (a few at a time): one wait on the registry, not two."""
    done = parallel(lambda call: call(), [*first, *second])
    return done[: len(first)], done[len(first) :]


def read_one(reg: Registry, ref: str) -> Read:
    try:
        return reg.manifest(ref)
    except BuildError as exc:
        return exc


def read_all(reg: Registry, refs: list[str], parallel: Parallel) -> dict[str, Read]:
    """What each of ``refs`` holds, read in one round (a few at a time); a read that failed holds its error."""
    return dict(zip(refs, parallel(lambda ref: read_one(reg, ref), refs), strict=True))


def held_now(now: Mapping[str, Read], ref: str) -> RawManifest | None:
    """What ``ref`` held when it was read; the read's error, raised, when it could not be."""
    got = now[ref]
    if isinstance(got, BuildError):
        raise got
    return got


def platform_refs(cell: Cell) -> list[str]:
    return [ref for _, refs in cell.platform_tags for ref in refs]


def _sources(cell: Cell, staged: RawManifest) -> dict[str, str]:
    """platform → its image in ``staged``, by digest, for each platform with per-platform tags."""
    return {p: f"{cell.image}@{staged.entries()[p]}" for p, refs in cell.platform_tags if refs}


def _write_index(
    reg: Registry, cell: Cell, staged: RawManifest, now: Mapping[str, Read], *, detach: bool
) -> Moved | BuildError:
    """The cell's multi-arch tags pointed at ``staged`` (those that do not hold it yet), or why not.

    ``detach``: the attestation manifests go out of the index, as referrers of their images (referrers.py).
    """
    try:
        held = {t: held_now(now, t) for t in cell.tags}
        public = referrers.clean(staged) if detach else staged
        moved = [t for t in cell.tags if not holds(held[t], public, dict(cell.annotations))]
        if moved and detach:  # the attestations first: no public tag names an image whose are not there yet
            referrers.detach(reg, cell.image, staged)
        if moved:
            reg.write(public, moved, annotations=dict(cell.annotations))
    except BuildError as exc:
        return exc
    return {t: held[t] for t in moved}


def _write_platform(
    reg: Registry, item: tuple[Cell, str, tuple[str, ...]], staged: RawManifest, now: Mapping[str, Read]
) -> Moved | BuildError:
    """A platform's tags pointed at its image in ``staged``, byte for byte, or why not."""
    cell, platform, refs = item
    source = _sources(cell, staged)[platform]
    try:
        image = held_now(now, source)
        if image is None:
            raise BuildError(f"{source} ({platform}) is not in the registry")
        held = {ref: held_now(now, ref) for ref in refs}
        moved = [ref for ref in refs if (was := held[ref]) is None or was.digest != image.digest]
        if moved:
            reg.write(image, moved)
    except BuildError as exc:
        return exc
    return {ref: held[ref] for ref in moved}


def holds(current: RawManifest | None, staged: RawManifest, annotations: Mapping[str, str]) -> bool:
    """A public tag already holds the staged release: the same platform images and annotations.

    The attestation manifests' contents are left out: provenance records when the build ran (mode=max
    also every material and build arg), so a rebuild from cache that changed nothing still makes new
    attestation manifests and a new index digest, and moving the tag for it would tell every digest
    pin, tag watcher and mirror that a new image exists. Their number counts: provenance turned on or
    off is a change of what the tag serves (a registry that refuses attestation manifests, say).
    """
    if current is None or not current.is_index:
        return False
    want = {**staged.doc.get("annotations", {}), **annotations}
    return (
        current.entries() == staged.entries()
        and current.attestations() == staged.attestations()
        and current.doc.get("annotations", {}) == want
    )
