"""A family's matrix → its raw cells: the product of the axes, minus every exclude, plus every include.

Linear in the number of cells: includes find their cell through an index, and the size of the product
is checked against ``limits.max_cells`` before a single cell is made.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from multibake import platforms as arch
from multibake.config.load import Loaded
from multibake.config.schema import Family
from multibake.config.yamlpos import KeyPath
from multibake.errors import config_error, did_you_mean


@dataclass(frozen=True, slots=True)
class RawCell:
    values: dict[str, str]
    platforms: tuple[str, ...] | None
    origin: KeyPath


def as_set(value: str | list[str]) -> frozenset[str]:
    return frozenset([value]) if isinstance(value, str) else frozenset(value)


def matches(cond: dict[str, frozenset[str]], values: dict[str, str]) -> bool:
    return all(values.get(k) in v for k, v in cond.items())


def platform_list(value: str | list[str], loaded: Loaded, path: KeyPath) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    out: list[str] = []
    for i, item in enumerate(items):
        try:
            p = arch.normalize(item)
        except ValueError as exc:
            raise config_error(loaded.loc((*path, i)), str(exc)) from None
        if p in out:
            raise config_error(loaded.loc((*path, i)), f"platform {p} is listed twice")
        out.append(p)
    if not out:
        raise config_error(loaded.loc(path), "platforms must not be empty")
    return tuple(out)


def check_values(
    cond: dict[str, str | list[str]], known: dict[str, set[str]], loaded: Loaded, path: KeyPath, what: str
) -> None:
    """Every axis and value of a ``when`` exists (a typo would silently match fewer cells)."""
    for axis, value in cond.items():
        if axis not in known:
            raise config_error(
                loaded.key_loc((*path, axis)), f"{what} names unknown axis {axis!r}", did_you_mean(axis, known)
            )
        for i, v in enumerate([value] if isinstance(value, str) else value):
            if v not in known[axis]:
                where = (*path, axis) if isinstance(value, str) else (*path, axis, i)
                values = ", ".join(sorted(known[axis]))
                raise config_error(
                    loaded.loc(where),
                    f"{what} names {v[:80]!r}, which axis {axis!r} does not have (values: {values[:200]})",
                    did_you_mean(v, known[axis]),
                )


def expand(name: str, fam: Family, loaded: Loaded, planned: int) -> list[RawCell]:
    """The family's cells, in order, once its size is known to fit ``limits.max_cells`` after ``planned`` cells."""
    base_path: KeyPath = ("images", name)
    _check_axes(fam, loaded, base_path)
    _check_size(name, fam, loaded, planned)
    axes = list(fam.matrix)
    cells: list[RawCell] = []
    if axes:
        origin = (*base_path, "matrix")
        cells = [
            RawCell(dict(zip(axes, combo, strict=True)), None, origin)
            for combo in itertools.product(*fam.matrix.values())
        ]
    cells = _exclude(fam, cells, loaded, base_path)
    cells = _include(fam, cells, loaded, base_path)
    if not axes and not fam.include:
        cells.append(RawCell({}, None, base_path))
    return cells


def _check_axes(fam: Family, loaded: Loaded, base_path: KeyPath) -> None:
    for axis, axis_values in fam.matrix.items():
        if not axis_values:
            raise config_error(loaded.loc((*base_path, "matrix", axis)), f"axis {axis!r} has no values")
        seen: set[str] = set()
        for i, value in enumerate(axis_values):
            if value in seen:
                raise config_error(loaded.loc((*base_path, "matrix", axis, i)), f"axis {axis!r} lists {value!r} twice")
            seen.add(value)


def _check_size(name: str, fam: Family, loaded: Loaded, planned: int) -> None:
    size = (math.prod(len(v) for v in fam.matrix.values()) if fam.matrix else 0) + len(fam.include)
    limit = loaded.config.limits.max_cells
    if planned + size > limit:
        before = f"; with the {planned:,} cells planned before it that is" if planned else ","
        raise config_error(
            loaded.loc(("images", name, "matrix") if fam.matrix else ("images", name, "include")),
            f"family {name!r} would expand to {size:,} cells{before} more than limits.max_cells ({limit:,})",
            "set limits: {max_cells: N} at the top of the file if this many cells are meant",
        )


def _exclude(fam: Family, cells: list[RawCell], loaded: Loaded, base_path: KeyPath) -> list[RawCell]:
    axes = list(fam.matrix)
    for i, entry in enumerate(fam.exclude):
        path = (*base_path, "exclude", i)
        unknown = [k for k in entry if k not in axes]
        if unknown:
            raise config_error(
                loaded.key_loc((*path, unknown[0])),
                f"exclude names unknown axis {unknown[0]!r}",
                did_you_mean(unknown[0], axes),
            )
        cond = {k: as_set(v) for k, v in entry.items()}
        before = len(cells)
        cells = [c for c in cells if not matches(cond, c.values)]
        if len(cells) == before:
            raise config_error(loaded.loc(path), "exclude matches no cell of the matrix (a typo in a value?)")
        if not cells and not fam.include:
            raise config_error(loaded.loc(path), "exclude removes every cell of the matrix: the family builds nothing")
    return cells


def _include(fam: Family, cells: list[RawCell], loaded: Loaded, base_path: KeyPath) -> list[RawCell]:
    axes: list[str] | None = list(fam.matrix) or None
    index = {tuple(c.values.values()): i for i, c in enumerate(cells)}
    included: dict[tuple[str, ...], int] = {}
    for i, entry in enumerate(fam.include):
        path = (*base_path, "include", i)
        values, plats = _include_entry(entry, axes, loaded, path)
        axes = axes or list(values)
        key = tuple(values.values())
        if key in included:
            raise config_error(loaded.loc(path), f"include repeats include [{included[key]}]; keep one")
        included[key] = i
        at = index.get(key)
        if at is None:
            index[key] = len(cells)
            cells.append(RawCell(values, plats, path))
        elif plats is None:
            raise config_error(loaded.loc(path), "include repeats a cell the matrix already has")
        else:
            cells[at] = RawCell(values, plats, path)
    return cells


def _include_entry(
    entry: dict[str, str | list[str]], axes: list[str] | None, loaded: Loaded, path: KeyPath
) -> tuple[dict[str, str], tuple[str, ...] | None]:
    """An include's values in axis order, and its platforms when it names some."""
    plats: tuple[str, ...] | None = None
    values: dict[str, str] = {}
    for k, v in entry.items():
        if k == "platforms":
            plats = platform_list(v, loaded, (*path, "platforms"))
        elif not isinstance(v, str):
            raise config_error(loaded.loc((*path, k)), "an include value must be a single string")
        else:
            values[k] = v
    axes = axes or list(values)
    extra = [k for k in values if k not in axes]
    if extra:
        raise config_error(
            loaded.key_loc((*path, extra[0])), f"include names unknown axis {extra[0]!r}", did_you_mean(extra[0], axes)
        )
    missing = [a for a in axes if a not in values]
    if missing:
        raise config_error(loaded.loc(path), f"include must give every axis; missing {', '.join(missing)}")
    return {a: values[a] for a in axes}, plats
