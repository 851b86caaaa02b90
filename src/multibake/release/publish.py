"""publish and verify: point public tags at complete staged indexes, then read back what the registry holds.

``build --push`` never pushes a public tag directly. On the docker driver buildx pushes twice, the
second time through dockerd, which writes each platform's manifest to the tag before the index: the
public tag would point at a single platform for a while, or for good if that push fails. So bake
pushes to a private staging tag per cell; here every staged index is first checked to hold exactly
its planned platforms, and only then are public tags written, one manifest write each through the
registry API (registry.py): multi-arch tags get the index, per-platform tags get that platform's
manifest itself, byte for byte (same digest as its entry in the index, a plain manifest that old ARM
boards and manifest-tool accept).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

from multibake.errors import BuildError
from multibake.kinds import PlatformSize, Status
from multibake.plan import buildid
from multibake.plan.attest import wants_sbom
from multibake.plan.model import Cell, Plan
from multibake.registry import attestations
from multibake.registry.client import Registry
from multibake.registry.manifest import RawManifest
from multibake.release import referrers
from multibake.release.shards import ShardCell
from multibake.release.signing import Signing, job_for, sign_release
from multibake.release.tags import Read, held_now, holds, platform_refs, read_all, read_one, together, write_tags

if TYPE_CHECKING:
    from multibake.bake.run import BuildReport

T = TypeVar("T")
R = TypeVar("R")
# Registry round-trips are I/O bound: a few at a time keep a release's publish step short.
WORKERS = 8


_pool: ThreadPoolExecutor | None = None


def _parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``fn`` over ``items`` on a few threads, results in input order. Never nested: the pool is shared,
    so its threads keep their registry connections from one step of a release to the next."""
    global _pool
    work = list(items)
    if len(work) <= 1:
        return [fn(x) for x in work]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="registry")
    return list(_pool.map(fn, work))


@dataclass(frozen=True, kw_only=True, slots=True)
class TagCheck:
    """What the registry holds for one planned tag, compared with the plan."""

    ref: str
    target: str
    platform: str | None = None  # a per-platform tag's platform; None: a multi-arch tag (an index)
    ok: bool
    digest: str | None = None
    platforms: tuple[tuple[str, str], ...] = ()  # platform → digest, attestations aside
    attestations: int = 0
    problem: str | None = None
    sizes: tuple[PlatformSize, ...] = ()  # per platform image of the cell's first index
    # (what: "index" or a platform, digest, signature state): each image the tag serves, when its family is signed
    signatures: tuple[tuple[str, str, str], ...] = ()

    @property
    def is_index(self) -> bool:
        return self.platform is None

    @property
    def kind(self) -> str:
        """How ``verify --json`` and the journal name it: ``index``, or the per-platform tag's platform."""
        return self.platform or "index"


@dataclass(frozen=True, kw_only=True, slots=True)
class Published:
    promoted: tuple[str, ...] = ()  # targets whose public tags now point at the release
    unchanged: tuple[str, ...] = ()  # promoted targets whose tags already held exactly this release
    held_back: Mapping[str, str] = field(default_factory=dict)  # target → why its tags were left alone
    failed: Mapping[str, str] = field(default_factory=dict)  # target → the tag write the registry kept failing
    before: Mapping[str, str | None] = field(default_factory=dict)  # public tag → its digest before (None: new)
    signed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # target → images signed (repo@digest)


def _index_problem(cell: Cell, held: RawManifest | None) -> str | None:
    if held is None:
        return "not in the registry"
    if not held.is_index:
        return f"a single manifest ({held.media_type}), not a multi-arch index"
    have, want = set(held.entries()), set(cell.platforms)
    if have != want:
        parts = []
        if want - have:
            parts.append("missing " + ", ".join(sorted(want - have)))
        if have - want:
            parts.append("unplanned " + ", ".join(sorted(have - want)))
        return "; ".join(parts)
    return None


def local_sources(plan: Plan, report: BuildReport) -> dict[str, list[str]]:
    """What each cell built by this machine staged: its index, or one image per platform.

    Pinned by the digest BuildKit pushed where the build output says it: the staging tag itself
    may have been left on a single platform by a failed second push (see above).
    """
    built = {c.target for c in report.cells if c.status is Status.BUILT}

    def pinned(target: str, staging: str) -> str:
        return report.pushed.get(target, staging)

    return {
        c.target: [pinned(piece.target, piece.staging) for piece in c.split]
        if c.split
        else [pinned(c.target, c.staging)]
        for c in plan.cells
        if c.target in built
    }


def promote(
    reg: Registry,
    plan: Plan,
    sources: Mapping[str, list[str]],
    *,
    partial: bool,
    detach: bool = False,
    signing: Signing | None = None,
) -> Published:
    """Point public tags at complete staged indexes: all cells or none, unless ``partial``.

    ``sources`` gives, per cell, the staged index or the per-platform images to merge into one
    (a cell built per platform, or a release whose platforms were built on several machines).
    ``detach``: the attestation manifests go out of the index, as referrers of their images (referrers.py).
    ``signing``: every image a tag will point at is signed first; a cell whose signing fails moves no tag.
    """
    held_back = {c.target: "not built" for c in plan.cells if c.target not in sources}
    candidates = [c for c in plan.cells if c.target in sources]
    staged, now = _staged_and_tags(reg, candidates, sources, held_back)
    ready = [c for c in plan.cells if c.target in staged]
    signed: dict[str, tuple[str, ...]] = {}
    if signing is not None:  # signed by digest before any tag of the cell moves
        final, held, moving = _moves(ready, staged, now, detach=detach)
        to_sign = [job_for(c, staged[c.target], final[c.target], held, moving[c.target]) for c in ready]
        signed, refused = sign_release(reg, signing, to_sign if partial or not held_back else [])
        held_back.update(refused)
        ready = [c for c in ready if c.target not in refused]
    if held_back and not partial:
        reason = "the release is incomplete, so no public tag was changed"
        return Published(held_back={c.target: held_back.get(c.target, reason) for c in plan.cells})
    moved_by, failed = write_tags(reg, ready, staged, now, parallel=_parallel, detach=detach)
    promoted = tuple(c.target for c in ready if c.target not in failed)
    before: dict[str, str | None] = {}  # each moved tag → what it pointed at (None: it is new)
    for moved in moved_by.values():
        before.update((ref, held.digest if held else None) for ref, held in moved.items())
    unchanged = tuple(t for t in promoted if not moved_by.get(t))
    signed = {t: refs for t, refs in signed.items() if t in promoted}
    return Published(
        promoted=promoted, unchanged=unchanged, held_back=held_back, failed=failed, before=before, signed=signed
    )


def _staged_and_tags(
    reg: Registry, cells: Sequence[Cell], sources: Mapping[str, list[str]], held_back: dict[str, str]
) -> tuple[dict[str, RawManifest], dict[str, Read]]:
    """Each cell's complete staged index (why not, into ``held_back``), and what every public and
    per-platform tag holds now: one round of reads, so a flaky registry is waited on once."""
    tags = [ref for c in cells for ref in (*c.tags, *platform_refs(c))]
    stages, read = together(
        _parallel,
        [functools.partial(_stage, reg, c, sources[c.target]) for c in cells],
        [functools.partial(read_one, reg, ref) for ref in tags],
    )
    staged: dict[str, RawManifest] = {}
    for cell, got in zip(cells, stages, strict=True):
        if isinstance(got, NotStaged):
            held_back[cell.target] = got.reason
        else:
            staged[cell.target] = got
    return staged, dict(zip(tags, read, strict=True))


def _moves(
    ready: Sequence[Cell], staged: Mapping[str, RawManifest], now: Mapping[str, Read], *, detach: bool
) -> tuple[dict[str, RawManifest], dict[str, RawManifest | None], dict[str, frozenset[str]]]:
    """What each cell's multi-arch tags will serve (the staged index, its attestations out when ``detach``,
    annotated), what every public tag holds now, and the tags that do not hold the release yet."""
    public = {c.target: referrers.clean(staged[c.target]) if detach else staged[c.target] for c in ready}
    final = {c.target: public[c.target].annotated(dict(c.annotations)) for c in ready}
    held = {ref: held_now(now, ref) for c in ready for ref in (*c.tags, *platform_refs(c))}

    def moving(cell: Cell) -> frozenset[str]:
        entries, annotations = public[cell.target].entries(), dict(cell.annotations)
        index = [t for t in cell.tags if not holds(held[t], public[cell.target], annotations)]
        singles = [
            r for p, refs in cell.platform_tags for r in refs if (was := held[r]) is None or was.digest != entries[p]
        ]
        return frozenset([*index, *singles])

    return final, held, {c.target: moving(c) for c in ready}


@dataclass(frozen=True, slots=True)
class NotStaged:
    """Why a cell has no complete staged index (its public tags stay where they are)."""

    reason: str


def _stage(reg: Registry, cell: Cell, refs: list[str]) -> RawManifest | NotStaged:
    """The complete staged index of ``cell``, or why there is none."""
    ref = refs[0] if len(refs) == 1 and not cell.split else None  # one staged index: used as it is
    try:
        held = reg.manifest(ref) if ref else None
        if ref is None or (held is not None and not held.is_index):
            # per-platform images, or a lone image: their index is made here, pushed by digest
            held = reg.merge(refs)
            ref = f"{cell.image}@{held.digest}"
    except BuildError as exc:
        return NotStaged(str(exc))
    problem = _index_problem(cell, held)
    return NotStaged(f"staged {ref}: {problem}") if problem or held is None else held


def verify(plan: Plan, reg: Registry) -> list[TagCheck]:
    """Read every planned tag back from the registry and compare it with the plan.

    Multi-arch tags must be indexes of exactly the planned platforms; per-platform tags must be plain
    manifests of their platform whose digest is that platform's entry in the cell's first index.
    """
    # every tag in one round of reads; a check reads more only for an SBOM or a digest it cannot place
    held = read_all(reg, [ref for cell in plan.cells for ref in (*cell.tags, *platform_refs(cell))], _parallel)
    indexes = [(cell, ref) for cell in plan.cells for ref in cell.tags]
    index_checks = _parallel(lambda item: _check_index_tag(reg, item[0], item[1], held[item[1]]), indexes)
    entries: dict[str, dict[str, str]] = {}  # target → platform → digest, from the cell's first index found
    for (cell, _), check in zip(indexes, index_checks, strict=True):
        if check.platforms and cell.target not in entries:
            entries[cell.target] = dict(check.platforms)
    singles = [(cell, platform, ref) for cell in plan.cells for platform, refs in cell.platform_tags for ref in refs]
    single_checks = _parallel(
        lambda item: _check_platform_tag(
            reg, (item[0], item[1], item[2]), held[item[2]], entries.get(item[0].target, {}).get(item[1])
        ),
        singles,
    )
    index_checks = _with_sizes(reg, plan, index_checks)
    by_target: dict[str, list[TagCheck]] = {}
    for check in [*index_checks, *single_checks]:
        by_target.setdefault(check.target, []).append(check)
    return [check for cell in plan.cells for check in by_target.get(cell.target, [])]


def _with_sizes(reg: Registry, plan: Plan, checks: list[TagCheck]) -> list[TagCheck]:
    """The first index check of each cell, with each platform image's compressed size and layer count.

    What release engineers ask after a base bump ("what grew?"): the sum of the layer sizes the registry
    serves, as ``docker pull`` downloads them, and the number of layers.
    """
    first: dict[str, int] = {}
    for i, check in enumerate(checks):
        if check.platforms and check.target not in first:
            first[check.target] = i
    image = {c.target: c.image for c in plan.cells}
    wanted = [(i, p, d) for i in first.values() for p, d in checks[i].platforms]

    def size(item: tuple[int, str, str]) -> PlatformSize:
        held = reg.manifest(f"{image[checks[item[0]].target]}@{item[2]}")
        # an image of metadata only (FROM scratch, LABEL) may say "layers": null
        layers = (held.doc.get("layers") or []) if held is not None else []
        return PlatformSize(
            platform=item[1], compressed=sum(int(lay.get("size", 0)) for lay in layers), layers=len(layers)
        )

    out = list(checks)
    for (i, _, _), measured in zip(wanted, _parallel(size, wanted), strict=True):
        out[i] = replace(out[i], sizes=(*out[i].sizes, measured))
    return out


def _check_index_tag(reg: Registry, cell: Cell, ref: str, read: Read) -> TagCheck:
    if isinstance(read, BuildError):
        return TagCheck(ref=ref, target=cell.target, ok=False, problem=str(read))
    held = read
    problem = _index_problem(cell, held)
    found = held.entries() if held is not None and held.is_index else {}
    if problem is None and held is not None and wants_sbom(cell.attest):
        try:
            problem = _missing_sbom(reg, cell, held, found)
        except BuildError as exc:
            problem = str(exc)
    return TagCheck(
        ref=ref,
        target=cell.target,
        ok=problem is None,
        digest=held.digest if held else None,
        platforms=tuple(sorted(found.items())),
        attestations=held.attestations() if held else 0,
        problem=problem,
    )


def _missing_sbom(reg: Registry, cell: Cell, held: RawManifest, found: Mapping[str, str]) -> str | None:
    """Which platform images lack the SBOM attestation the cell's attest: asks for (in the index or as referrers)."""
    missing = [
        f"{platform} ({digest})"
        for platform, digest in sorted(found.items())
        if not attestations.has_sbom(attestations.of_image(reg, cell.image, digest, held))
    ]
    return f"no SBOM attestation for {', '.join(missing)}" if missing else None


def _check_platform_tag(reg: Registry, tag: tuple[Cell, str, str], read: Read, expected: str | None) -> TagCheck:
    cell, platform, ref = tag

    def result(ok: bool, problem: str | None = None, digest: str | None = None) -> TagCheck:
        return TagCheck(ref=ref, target=cell.target, platform=platform, ok=ok, digest=digest, problem=problem)

    try:
        if isinstance(read, BuildError):
            raise read
        held = read
        if held is None:
            return result(False, "not in the registry")
        if held.is_index:
            return result(False, f"an index ({held.media_type}), not a single-platform manifest", held.digest)
        if expected is not None and held.digest == expected:
            # the index lists this digest under this platform: the platform is proven, no config read
            return result(True, None, held.digest)
        declared = reg.image_platform(ref)
    except BuildError as exc:
        return result(False, str(exc))
    if declared != platform:
        return result(False, f"its image is {declared}", held.digest)
    if expected is not None:
        return result(False, f"digest {held.digest} is not the index's {platform} entry {expected}", held.digest)
    return result(True, None, held.digest)


def staged_refs(
    reg: Registry, plan: Plan, members: set[str], report: BuildReport
) -> tuple[dict[str, ShardCell], list[str]]:
    """A shard's result: the staged images of its cells, pinned by digest, and the cells that failed."""
    status = {c.target: c.status for c in report.cells}
    failed = sorted(t for t in members if status.get(t) is not Status.BUILT)
    cells: dict[str, ShardCell] = {}

    def pin(target: str, ref: str, image: str) -> str:
        if target in report.pushed:
            return report.pushed[target]
        held = reg.manifest(ref)
        if held is None:
            raise BuildError(f"{ref} is not in the registry after the build")
        return f"{image}@{held.digest}"

    for cell in plan.cells:
        if cell.target not in members or cell.target in failed:
            continue
        if cell.split:
            cells[cell.target] = ShardCell(
                platforms={piece.platform: pin(piece.target, piece.staging, cell.image) for piece in cell.split}
            )
        else:
            cells[cell.target] = ShardCell(index=pin(cell.target, cell.staging, cell.image))
    return cells, failed


def already_published(reg: Registry, plan: Plan, ids: Mapping[str, str]) -> dict[str, str]:
    """Cells whose public image already holds their build id: target → image@index digest."""

    def check(cell: Cell) -> str | None:
        try:
            held = reg.manifest(cell.tags[0])
            if held is None or _index_problem(cell, held):
                return None
            first = next(iter(held.entries().values()))
            labels = reg.image_config(f"{cell.image}@{first}").get("config", {}).get("Labels") or {}
        except BuildError:
            return None
        return f"{cell.image}@{held.digest}" if labels.get(buildid.LABEL) == ids.get(cell.target) else None

    found = _parallel(check, plan.cells)
    return {c.target: ref for c, ref in zip(plan.cells, found, strict=True) if ref is not None}
