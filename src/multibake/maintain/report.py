"""The release report's data: families by matrix values by platforms, as the registry holds them now.

Per cell: verify's verdict on every tag; per platform image (read once, through the cell's first
tag): digest, compressed size, layers, the base it was built on, its per-platform tags, whether a
signature (cosign's ``sha256-<digest>.sig`` tag) and SBOM and provenance attestations exist; and,
with ``previous``, what the last release changed (``multibake diff --previous``: size deltas). The
page itself is a template (cli/html.py): this module only gathers and shapes the facts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from multibake import __version__
from multibake.compare import diff
from multibake.compare.changes import DiffOptions
from multibake.compare.changes import diff as compare_previous
from multibake.config.upkeep import Limit, parse_limit
from multibake.errors import UsageError
from multibake.kinds import Change
from multibake.maintain.graph import subject
from multibake.plan.model import Cell, Plan
from multibake.plan.transforms import select
from multibake.registry.client import Registry
from multibake.release import shards
from multibake.release.publish import TagCheck, _parallel, verify
from multibake.release.tools import Tools, logged_in, registry_for

SPDX = "https://spdx.dev/Document"
PROVENANCE = "https://slsa.dev/provenance/"


@dataclass(frozen=True, kw_only=True, slots=True)
class PlatformCell:
    platform: str
    status: str  # ok | missing | failed
    digest: str | None = None
    bytes: int | None = None
    layers: int | None = None
    base: str | None = None
    tags: tuple[str, ...] = ()  # per-platform tags (the tag part)
    signed: bool | None = None  # None: nothing in the repository is signed
    sbom: bool | None = None  # None: no image of the release has an SBOM
    provenance: bool = False
    change: str | None = None  # with --previous: new, changed, unchanged
    bytes_delta: int = 0
    layers_delta: int = 0
    over_gate: bool = False  # grew past limits.max_growth


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    target: str
    values: tuple[str, ...]  # the cell's value of each of the family's axes
    tags: tuple[str, ...]
    status: str  # ok | failed
    problem: str | None
    change: str | None
    cells: tuple[PlatformCell | None, ...]  # one per column of the family; None: not planned


@dataclass(frozen=True, kw_only=True, slots=True)
class FamilyGrid:
    name: str
    image: str
    base: str | None
    axes: tuple[str, ...]
    platforms: tuple[str, ...]
    rows: tuple[Row, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Page:
    title: str
    registry: str
    generated: str
    revision: str | None
    compared_with: str | None
    families: tuple[FamilyGrid, ...]
    notes: tuple[str, ...] = ()
    version: str = __version__

    @property
    def rows(self) -> list[Row]:
        return [r for f in self.families for r in f.rows]

    @property
    def cells(self) -> int:
        return len(self.rows)

    @property
    def ok(self) -> int:
        return sum(r.status == "ok" for r in self.rows)

    @property
    def failed(self) -> int:
        return self.cells - self.ok

    @property
    def changed(self) -> int:
        return sum(r.change in (Change.CHANGED, Change.NEW) for r in self.rows)


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportOptions:
    config: Path
    registry: str | None = None
    selectors: tuple[str, ...] = ()
    previous: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class _Facts:
    checks: Sequence[TagCheck]
    images: Mapping[str, diff.TagFacts | None]  # a cell's first tag → what it holds
    listed: Mapping[str, frozenset[str]]  # repository → its tags
    attested: Mapping[str, frozenset[str]]  # image digest → predicate types of its attestations
    diffs: Mapping[tuple[str, str], diff.PlatformDiff]  # (ref, platform) → what the last release changed
    limit: Limit | None


def gather(opts: ReportOptions, tools: Tools) -> Page:
    """Read the registry for the release report of ``opts.config``'s plan."""
    release = shards.resolve(opts.config, opts.registry, None, check_files=False)
    p = select(release.plan, list(opts.selectors))
    notes: list[str] = []
    diffs: dict[tuple[str, str], diff.PlatformDiff] = {}
    compared = None
    if opts.previous:
        try:
            found = compare_previous(
                DiffOptions(config=opts.config, registry=opts.registry, selectors=opts.selectors, previous=True), tools
            )
        except UsageError as exc:
            notes.append(str(exc))
        else:
            compared, notes = found.old, [*notes, *found.notes]
            diffs = {(t.ref, row.platform): row for t in found.tags for row in t.platforms}
    limit_text = release.loaded.config.limits.max_growth
    with logged_in(tools, release.plan.registry) as with_login:
        reg = registry_for(release, with_login)
        facts = _read(reg, p, diffs, parse_limit(limit_text) if limit_text else None)
    return Page(
        title=f"Release report: {p.registry}",
        registry=p.registry,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        revision=release.meta.revision,
        compared_with=compared,
        families=tuple(_grid(p, fam.name, facts) for fam in p.families),
        notes=tuple(notes),
    )


def _read(reg: Registry, p: Plan, diffs: Mapping[tuple[str, str], diff.PlatformDiff], limit: Limit | None) -> _Facts:
    checks = verify(p, reg)
    images = diff.read_tags(reg, [c.tags[0] for c in p.cells if c.tags])
    repos = sorted({c.image for c in p.cells})
    listed = dict(
        zip(repos, (frozenset(t) for t in _parallel(lambda r: reg.tags(r, missing_ok=True), repos)), strict=True)
    )
    return _Facts(checks=checks, images=images, listed=listed, attested=_attestations(reg, p), diffs=diffs, limit=limit)


def _attestations(reg: Registry, p: Plan) -> dict[str, frozenset[str]]:
    """Image digest → the predicate types of the attestation manifests its index holds for it."""
    wanted: list[tuple[str, str]] = []  # (repository@attestation digest, the image it is about)
    for cell in p.cells:
        held = reg.manifest(cell.tags[0]) if cell.tags else None
        for m in held.doc.get("manifests", []) if held is not None and held.is_index else []:
            about = (m.get("annotations") or {}).get("vnd.docker.reference.digest")
            if (m.get("platform") or {}).get("os") == "unknown" and about:
                wanted.append((f"{cell.image}@{m['digest']}", str(about)))
    found = _parallel(lambda item: reg.manifest(item[0]), wanted)
    out: dict[str, set[str]] = {}
    for (_, about), manifest in zip(wanted, found, strict=True):
        layers = manifest.doc.get("layers", []) if manifest is not None else []
        kinds = {str((layer.get("annotations") or {}).get("in-toto.io/predicate-type", "")) for layer in layers}
        out.setdefault(about, set()).update(k for k in kinds if k)
    return {d: frozenset(k) for d, k in out.items()}


def _grid(p: Plan, family: str, facts: _Facts) -> FamilyGrid:
    cells = [c for c in p.cells if c.family == family]
    axes = tuple(dict.fromkeys(a for c in cells for a, _ in c.axes))
    platforms = tuple(dict.fromkeys(pl for c in cells for pl in c.platforms))
    fam = next(f for f in p.families if f.name == family)
    rows = tuple(_row(c, axes, platforms, facts) for c in cells)
    return FamilyGrid(name=family, image=fam.image, base=fam.base, axes=axes, platforms=platforms, rows=rows)


def _row(cell: Cell, axes: tuple[str, ...], platforms: tuple[str, ...], facts: _Facts) -> Row:
    checks = [c for c in facts.checks if c.target == cell.target]
    problems = [f"{c.ref.rpartition(':')[2]}: {c.problem}" for c in checks if not c.ok]
    first = facts.images.get(cell.tags[0]) if cell.tags else None
    images = dict(first.images) if first is not None else {}
    columns = tuple(
        _platform(cell, pl, images.get(pl), checks, facts) if pl in cell.platforms else None for pl in platforms
    )
    changes = {c.change for c in columns if c is not None and c.change}
    change = next((k for k in (Change.NEW, Change.CHANGED, Change.UNCHANGED) if k in changes), None)
    return Row(
        target=cell.target,
        values=tuple(dict(cell.axes).get(a, "") for a in axes),
        tags=tuple(t.rpartition(":")[2] for t in cell.tags),
        status="ok" if not problems else "failed",
        problem="; ".join(problems) or None,
        change=change,
        cells=columns,
    )


def _platform(
    cell: Cell, platform: str, image: diff.Image | None, checks: Sequence[TagCheck], facts: _Facts
) -> PlatformCell:
    tags = tuple(r.rpartition(":")[2] for pl, refs in cell.platform_tags if pl == platform for r in refs)
    mine = [c for c in checks if c.platform in (None, platform)]
    status = "missing" if image is None else "ok" if all(c.ok for c in mine) else "failed"
    if image is None:
        return PlatformCell(platform=platform, status=status, tags=tags)
    signatures = [t for t in facts.listed.get(cell.image, frozenset()) if t.endswith(".sig") and subject(t)]
    kinds = facts.attested.get(image.digest, frozenset())
    any_sbom = any(SPDX in k for k in facts.attested.values())
    row = facts.diffs.get((cell.tags[0], platform))
    grew = row is not None and row.old is not None and row.new is not None and facts.limit is not None
    return PlatformCell(
        platform=platform,
        status=status,
        digest=image.digest,
        bytes=image.bytes,
        layers=image.layers,
        base=image.base,
        tags=tags,
        signed=any(subject(t) == image.digest for t in signatures) if signatures else None,
        sbom=(SPDX in kinds) if any_sbom else None,
        provenance=any(k.startswith(PROVENANCE) for k in kinds),
        change=row.change.value if row is not None else None,
        bytes_delta=row.bytes_delta if row is not None else 0,
        layers_delta=row.layers_delta if row is not None else 0,
        over_gate=bool(grew and facts.limit and row and row.old and facts.limit.exceeded(row.old.bytes, image.bytes)),
    )
