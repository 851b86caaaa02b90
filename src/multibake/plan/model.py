"""The plan as data: frozen cells, per-platform pieces, views and families (what render and execute read)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Meta:
    """Facts about the checkout, resolved once per run so every cell (and every CI shard) agrees."""

    created: str  # RFC 3339, from SOURCE_DATE_EPOCH or the commit time
    revision: str | None = None
    source: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PlatformTarget:
    """One platform of a cell built as a bake target of its own.

    Bake cannot vary build args by platform inside one target, so a cell with per-platform args
    (or whose parent has them) is built one target per platform and multibake assembles the index.
    """

    target: str  # <cell target>--<short platform name>
    platform: str
    args: Pairs  # the cell's args plus the per-platform values
    base_context: str | None
    staging: str
    cache_from: tuple[str, ...]
    cache_to: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Cell:
    """One image to build: a family at one point of its matrix."""

    family: str
    target: str
    axes: Pairs
    platforms: tuple[str, ...]
    context: str  # relative to the config's directory, POSIX separators
    dockerfile: str  # relative to the context
    stage: str | None
    image: str
    args: Pairs
    labels: Pairs
    tags: tuple[str, ...]  # full references of the multi-arch index
    staging: str  # private tag a push lands on first; public tags are pointed at it once it is complete
    platform_tags: tuple[tuple[str, tuple[str, ...]], ...]  # platform → single-platform references
    parent: str | None  # target name of the parent cell
    base_context: str | None  # bake target the child's `FROM base` resolves to (the parent or a view)
    cache_from: tuple[str, ...]
    cache_to: tuple[str, ...]
    annotations: Pairs = ()
    split: tuple[PlatformTarget, ...] = ()  # non-empty: built one target per platform
    base_image: str | None = None  # FROM base is this published image (its parent was not rebuilt)
    secrets: tuple[str, ...] = ()  # bake's secret specs: id=NAME,env=VAR or id=NAME,src=/abs/path
    attest: tuple[str, ...] = ()  # bake's attest specs (type=provenance,mode=max); empty: buildx's default

    @property
    def bake_targets(self) -> tuple[str, ...]:
        """The bake targets that build this cell."""
        return tuple(t.target for t in self.split) if self.split else (self.target,)


@dataclass(frozen=True, kw_only=True, slots=True)
class View:
    """A parent cell narrowed to a child's platforms.

    Bake refuses a ``target:`` context built for other platforms than the child, so a child with
    fewer platforms than its parent gets the parent through a view: same build, fewer platforms,
    no tags, nothing pushed, no cache export (one cache ref has one writer).
    """

    target: str
    parent: str
    platforms: tuple[str, ...]
    base_context: str | None = None  # the parent's own base, narrowed alike (bake checks every link)


@dataclass(frozen=True, kw_only=True, slots=True)
class FamilyPlan:
    name: str
    image: str
    base: str | None
    targets: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    registry: str
    families: tuple[FamilyPlan, ...]
    cells: tuple[Cell, ...]
    views: tuple[View, ...] = ()
    _by_target: dict[str, Cell] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_target.update((c.target, c) for c in self.cells)

    def cell(self, target: str) -> Cell:
        return self._by_target[target]

    def ancestors(self, cell: Cell) -> Iterator[Cell]:
        while cell.parent is not None:
            cell = self._by_target[cell.parent]
            yield cell
