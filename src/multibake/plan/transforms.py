"""Plan transforms: a plan narrowed to selected cells, to some platforms, or minus what is published.

Each takes a Plan and returns a new one; planning itself (plan.py) never calls them. Views (a parent
narrowed to a child's platforms) are made here too, because restricting platforms remakes them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from multibake import platforms as arch
from multibake.errors import UsageError, did_you_mean
from multibake.plan.model import Cell, FamilyPlan, Plan, View


def narrowed(parent: Cell, plats: tuple[str, ...], cells: dict[str, Cell], views: dict[str, View]) -> str:
    """The bake target a child built for ``plats`` uses as ``base``: the parent, or a view of it.

    Bake checks every ``target:`` link, so a view of a parent that has a base of its own takes a
    view of that base too, up the chain.
    """
    if parent.platforms == plats:
        return parent.target
    name = _view_name(parent.target, plats)
    if name not in views:
        grand = cells.get(parent.parent) if parent.parent else None
        base = narrowed(grand, plats, cells, views) if grand is not None else None
        views[name] = View(target=name, parent=parent.target, platforms=plats, base_context=base)
    return name


def _view_name(parent: str, plats: tuple[str, ...]) -> str:
    return f"{parent}--" + "-".join(arch.name(p, arch.Scheme.SHORT) for p in plats)


def _families(p: Plan, keep: set[str] | dict[str, Cell]) -> tuple[FamilyPlan, ...]:
    """``p``'s families narrowed to the kept targets; families left empty are dropped."""
    return tuple(
        FamilyPlan(name=f.name, image=f.image, base=f.base, targets=tuple(t for t in f.targets if t in keep))
        for f in p.families
        if any(t in keep for t in f.targets)
    )


def _views_for(p: Plan, cells: Iterable[Cell]) -> tuple[View, ...]:
    """The views of ``p`` that ``cells`` still build FROM, directly or through another view."""
    used = {c.base_context for c in cells} | {piece.base_context for c in cells for piece in c.split}
    for view in reversed(p.views):  # a view's own base is created before it
        if view.target in used and view.base_context:
            used.add(view.base_context)
    return tuple(view for view in p.views if view.target in used)


def select_targets(p: Plan, targets: Iterable[str]) -> Plan:
    """Exactly the cells named (no ancestors added), in plan order."""
    keep = set(targets)
    cells = tuple(c for c in p.cells if c.target in keep)
    fams = _families(p, keep)
    return Plan(registry=p.registry, families=fams, cells=cells, views=())


def _miss_hint(p: Plan, pattern: str, conds: dict[str, str], names: list[str]) -> str:
    """Why a selector matched nothing: the name, or (when the name matches) the axis or the value."""
    named = [c for c in p.cells if not pattern or c.family == pattern or fnmatch.fnmatchcase(c.target, pattern)]
    if not named:
        hint = did_you_mean(pattern, names)
        return hint or "no family or target has that name (see `multibake plan`)"
    axes: dict[str, list[str]] = {}
    for c in named:
        for k, v in c.axes:
            if v not in axes.setdefault(k, []):
                axes[k].append(v)
    for k, v in conds.items():
        if k not in axes:
            return f"no axis {k!r}" + (f", {h}" if (h := did_you_mean(k, axes)) else f"; axes: {', '.join(axes)}")
        if v not in axes[k]:
            return f"{k} has no value {v!r}; values: {', '.join(axes[k])}"
    return "no cell has all of those values together"


def select(p: Plan, selectors: Sequence[str]) -> Plan:
    """The cells that ``selectors`` pick, plus their ancestors (bake needs every target it refers to).

    A selector is a family name, a target name or a glob on target names, optionally followed by
    ``:axis=value[,axis=value]`` to narrow by matrix values (``alpine-s6-nodejs:node=22``).
    """
    if not selectors:
        return p
    names = [f.name for f in p.families] + [c.target for c in p.cells]
    chosen: set[str] = set()
    for sel in selectors:
        pattern, _, filt = sel.partition(":")
        conds: dict[str, str] = {}
        for part in filter(None, filt.split(",")):
            k, eq, v = part.partition("=")
            if not eq:
                raise UsageError(f"selector {sel!r}: expected axis=value after ':', got {part!r}")
            conds[k.strip()] = v.strip()
        hit = [
            c
            for c in p.cells
            if (not pattern or c.family == pattern or fnmatch.fnmatchcase(c.target, pattern))
            and all(dict(c.axes).get(k) == v for k, v in conds.items())
        ]
        if not hit:
            raise UsageError(f"selector {sel!r} matches no cell; {_miss_hint(p, pattern, conds, names)}")
        chosen.update(c.target for c in hit)
    for c in p.cells:
        if c.target in chosen:
            chosen.update(a.target for a in p.ancestors(c))
    cells = tuple(c for c in p.cells if c.target in chosen)
    views = _views_for(p, cells)
    fams = _families(p, chosen)
    return Plan(registry=p.registry, families=fams, cells=cells, views=views)


def restrict(p: Plan, wanted: Sequence[str]) -> Plan:
    """The plan narrowed to ``wanted`` platforms; cells left with none are dropped.

    Views are recomputed: a child and its parent narrowed alike need none.
    """
    keep = set(wanted)
    cells: dict[str, Cell] = {}
    views: dict[str, View] = {}
    for c in p.cells:
        plats = tuple(x for x in c.platforms if x in keep)
        if not plats:
            continue
        base_context = None
        parent = cells.get(c.parent) if c.parent is not None else None
        if c.parent is not None and parent is None:
            continue  # its parent is not built for any wanted platform
        split = tuple(piece for piece in c.split if piece.platform in keep)
        if parent is not None and not split:
            base_context = narrowed(parent, plats, cells, views)
        elif parent is not None and not parent.split:
            # per-platform pieces of a child whose parent is one multi-platform target: views again
            split = tuple(
                replace(piece, base_context=narrowed(parent, (piece.platform,), cells, views)) for piece in split
            )
        cells[c.target] = replace(
            c,
            platforms=plats,
            platform_tags=tuple((x, refs) for x, refs in c.platform_tags if x in keep),
            base_context=base_context,
            split=split,
        )
    fams = _families(p, cells)
    return Plan(registry=p.registry, families=fams, cells=tuple(cells.values()), views=tuple(views.values()))


def with_labels(p: Plan, labels: dict[str, tuple[str, str]]) -> Plan:
    """The plan with one more label on the cells named in ``labels`` (target → (key, value))."""
    cells = tuple(
        replace(c, labels=tuple(sorted((*c.labels, labels[c.target])))) if c.target in labels else c for c in p.cells
    )
    return Plan(registry=p.registry, families=p.families, cells=cells, views=p.views)


def map_attest(p: Plan, entries: Callable[[Cell], tuple[str, ...]]) -> Plan:
    """The plan with each cell's bake ``attest`` entries replaced by ``entries(cell)``."""
    cells = tuple(replace(c, attest=entries(c)) for c in p.cells)
    return Plan(registry=p.registry, families=p.families, cells=cells, views=p.views)


def without(p: Plan, published: dict[str, str]) -> Plan:
    """The plan minus cells already published (target → image@digest); their children build FROM those."""
    cells: list[Cell] = []
    for cell in p.cells:
        if cell.target in published:
            continue
        if cell.parent in published:
            cell = replace(  # noqa: PLW2901
                cell,
                base_context=None,
                base_image=published[cell.parent],
                split=tuple(replace(piece, base_context=None) for piece in cell.split),
            )
        cells.append(cell)
    keep = {c.target for c in cells}
    fams = _families(p, keep)
    views = tuple(v for v in _views_for(p, cells) if v.parent in keep)
    return Plan(registry=p.registry, families=fams, cells=tuple(cells), views=views)
