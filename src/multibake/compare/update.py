"""update: newer values for matrix axes, from the tags a registry lists.

An ``update:`` rule (top level, by axis name; a family's own ``update:`` replaces it, ``null`` turns
it off) names a repository and a regular expression. The plan of changes is a pure function of the
rules, the current matrix and the tag lists (``propose``); so is the list of references the change
would leave stale (``stale``). Reading the tags (``read_tags``) and writing the file (``run``) are
thin wrappers around them.

Versions are ordered by their numbers (``3.9`` < ``3.10``, ``3.2.9.0`` < ``3.2.10.0``), a
pre-release (``3.22.0-rc1``, ``24-alpha``, ``1.0_beta2``) before its release; pre-releases are left
out unless the rule says ``prerelease: true``, and a matched value that does not start with a
number (``latest``, ``edge``) is never a version.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from multibake.config.load import Loaded, from_text, read_text
from multibake.config.schema import Config, UpdateRule
from multibake.config.yamlpos import KeyPath
from multibake.errors import EXIT_FAILED, EXIT_OK, BuildError, Location, config_error
from multibake.release.signing import is_signature_tag

if TYPE_CHECKING:
    from multibake.registry.client import Api, Registry

TIMEOUT = 10.0  # seconds per request: an unreachable registry fails the command in seconds, not minutes
ATTEMPTS = 3
VALUE_GROUP = "version"  # a match's named group that is the value (v3.2.0.2 → 3.2.0.2); else the whole tag
THREADS = 4
_VERSION = re.compile(r"[vV]?(\d+(?:\.\d+)*)(.*)", re.DOTALL)
_TOKEN = re.compile(r"\d+|[A-Za-z]+")
NO_RULES_HINT = "add rules by axis name, e.g. update: {alpine: {source: docker.io/library/alpine, match: '^3\\.\\d+$'}}"
_PRE_WORDS = frozenset(
    {"a", "alpha", "b", "beta", "c", "rc", "pre", "preview", "dev", "snapshot", "nightly", "canary", "ea"}
)


class Version(NamedTuple):
    """A value's sort key: its numbers, then release after pre-release, then the rest, then the text."""

    numbers: tuple[int, ...]
    final: bool  # False for a pre-release
    rest: tuple[tuple[int, int, str], ...]
    text: str


def version(value: str) -> Version | None:
    """``value`` as a version, or None when it does not start with a number (``latest``, ``edge``)."""
    found = _VERSION.fullmatch(value)
    if not found:
        return None
    tokens = _TOKEN.findall(found[2])
    pre = any(t.lower() in _PRE_WORDS for t in tokens)
    rest = tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in tokens)
    return Version(tuple(int(n) for n in found[1].split(".")), not pre, rest, value)


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """One axis of one family and the rule that updates it."""

    family: str
    axis: str
    rule: UpdateRule


def targets(config: Config) -> list[Target]:
    """Every (family, axis) an update rule applies to, in file order."""
    out: list[Target] = []
    for name, fam in config.images.items():
        for axis in fam.matrix:
            rule = fam.update[axis] if axis in fam.update else config.update.get(axis)
            if rule is not None:
                out.append(Target(family=name, axis=axis, rule=rule))
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class AxisUpdate:
    """The proposed values of one axis of one family."""

    family: str
    axis: str
    source: str
    old: tuple[str, ...]
    new: tuple[str, ...]
    missing: tuple[str, ...] = ()  # current values the registry does not list (any more)
    problem: str | None = None  # why no value could be proposed (the axis is then left as it is)

    @property
    def changed(self) -> bool:
        return self.new != self.old

    @property
    def added(self) -> tuple[str, ...]:
        return tuple(v for v in self.new if v not in self.old)

    @property
    def removed(self) -> tuple[str, ...]:
        return tuple(v for v in self.old if v not in self.new)

    @property
    def path(self) -> KeyPath:
        return ("images", self.family, "matrix", self.axis)


def versions(rule: UpdateRule, tags: Sequence[str]) -> dict[str, Version]:
    """The values ``rule`` takes from ``tags`` (its ``(?P<version>…)`` group, else the tag), as versions."""
    pattern = re.compile(rule.match)
    out: dict[str, Version] = {}
    for tag in tags:
        if is_signature_tag(tag):  # cosign's sha256-<hex>.sig (and .att, .sbom) beside an image: never a version
            continue
        found = pattern.search(tag)
        value = (found.group(VALUE_GROUP) if VALUE_GROUP in pattern.groupindex else found.group(0)) if found else None
        parsed = version(value) if value else None
        if value and parsed is not None:
            out[value] = parsed
    return out


def _descending(values: Sequence[str]) -> bool:
    keys = [version(v) for v in values]
    return len(keys) > 1 and all(a is not None and b is not None and a > b for a, b in itertools.pairwise(keys))


def axis_update(target: Target, current: Sequence[str], tags: Sequence[str]) -> AxisUpdate:
    """The newest ``keep`` versions ``target``'s rule finds in ``tags``, in the axis's order (ascending
    unless it is written newest first); the current values when they are the same set."""
    rule = target.rule
    old = tuple(current)
    found = versions(rule, tags)
    missing = tuple(v for v in old if v not in found)
    usable = sorted(v for v in found.values() if rule.prerelease or v.final)
    base = AxisUpdate(family=target.family, axis=target.axis, source=rule.source, old=old, new=old, missing=missing)
    if not usable:
        left_out = " (only pre-releases; set prerelease: true to take them)" if found else ""
        return dataclasses.replace(base, problem=f"no tag of {rule.source} matches {rule.match!r}{left_out}")
    chosen = [v.text for v in usable[-(rule.keep or len(old)) :]]
    if set(chosen) == set(old):
        return base
    return dataclasses.replace(base, new=tuple(reversed(chosen) if _descending(old) else chosen))


def propose(config: Config, found: Sequence[Target], tags: Mapping[str, Sequence[str]]) -> tuple[AxisUpdate, ...]:
    """The plan of changes: one entry per (family, axis) with a rule, from each rule's source's tags."""
    return tuple(axis_update(t, config.images[t.family].matrix[t.axis], tags[t.rule.source]) for t in found)


# --- what the change would leave stale ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Stale:
    """A reference the proposed change would leave behind: warned about, never edited."""

    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


_CONSEQUENCE = {
    "exclude": "the exclude would match fewer cells (none at all is an error); edit or remove it",
    "include": "the include would then add that cell on its own; edit or remove it",
    "when": "no cell would have it, which is an error; edit the condition",
}


def stale(loaded: Loaded, updates: Sequence[AxisUpdate]) -> tuple[Stale, ...]:
    """Excludes, includes and tag conditions naming a value the update removes, and child families
    whose cells would lose their parent: the update does not guess how to edit them."""
    out: list[Stale] = []
    for u in updates:
        if not u.removed:
            continue
        fam = loaded.config.images[u.family]
        fpath: KeyPath = ("images", u.family)
        after = set(u.new) | {str(e[u.axis]) for e in fam.include if isinstance(e.get(u.axis), str)}
        named: list[tuple[str, KeyPath, str | list[str] | None]] = [
            *(("exclude", (*fpath, "exclude", i), e.get(u.axis)) for i, e in enumerate(fam.exclude)),
            *(("include", (*fpath, "include", i), e.get(u.axis)) for i, e in enumerate(fam.include)),
            *(
                ("when", (*fpath, "tags", i, "when"), r.when.get(u.axis))
                for i, r in enumerate(fam.tags)
                if not isinstance(r, str)
            ),
        ]
        for kind, path, value in named:
            for where, v in _values_at(path, u.axis, value):
                if v in u.removed and not (kind == "when" and v in after):
                    message = f"names {u.axis} {v!r}, which the update removes from the matrix: {_CONSEQUENCE[kind]}"
                    out.append(Stale(location=loaded.loc(where), message=message))
    out.extend(_orphans(loaded, updates))
    return tuple(out)


def _values_at(path: KeyPath, axis: str, value: str | list[str] | None) -> list[tuple[KeyPath, str]]:
    if value is None:
        return []
    if isinstance(value, str):
        return [((*path, axis), value)]
    return [((*path, axis, i), v) for i, v in enumerate(value)]


def _orphans(loaded: Loaded, updates: Sequence[AxisUpdate]) -> list[Stale]:
    """Child cells (``base:``) whose parent cell the update removes, where the child keeps the value."""
    config = loaded.config
    new = {(u.family, u.axis): u.new for u in updates}

    def known(family: str, axis: str, after: bool) -> set[str]:
        fam = config.images[family]
        values = new.get((family, axis), tuple(fam.matrix[axis])) if after else tuple(fam.matrix[axis])
        return set(values) | {str(e[axis]) for e in fam.include if isinstance(e.get(axis), str)}

    out: list[Stale] = []
    for name, fam in config.images.items():
        parent = config.images.get(fam.base) if fam.base else None
        if parent is None or fam.base is None:
            continue
        for axis in [a for a in fam.matrix if a in parent.matrix]:
            before, after = known(fam.base, axis, False), known(fam.base, axis, True)
            lost = [v for v in sorted(known(name, axis, True)) if v in before and v not in after]
            if lost:
                shown = ", ".join(lost)
                message = (
                    f"family {name!r} builds FROM {fam.base!r}, whose {axis} {shown} the update removes: "
                    f"those cells would have no parent; give both families the same rule"
                )
                out.append(Stale(location=loaded.loc(("images", name, "matrix", axis)), message=message))
    return out


# --- the command: read the tags, propose, write --------------------------------------------------


def read_tags(reg: Registry, sources: Sequence[str]) -> dict[str, list[str]]:
    """Each source's tags, a few registries at a time; the first failure ends the command (exit 1)."""
    with ThreadPoolExecutor(max_workers=max(1, min(THREADS, len(sources)))) as pool:
        return dict(zip(sources, pool.map(reg.tags, sources), strict=True))


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    file: str
    axes: tuple[AxisUpdate, ...]
    places: tuple[Location, ...]  # where each axis is written, for messages
    stale: tuple[Stale, ...] = ()
    written: bool = False

    @property
    def changed(self) -> bool:
        return any(a.changed for a in self.axes)

    @property
    def problems(self) -> tuple[AxisUpdate, ...]:
        return tuple(a for a in self.axes if a.problem)

    @property
    def exit_code(self) -> int:
        """1 when there is a change to make (or an axis could not be updated), so CI can open a pull request."""
        return EXIT_FAILED if self.changed or self.problems else EXIT_OK


def run(
    path: str | os.PathLike[str], *, write: bool, api: Api, sleep: Callable[[float], None], echo: Callable[[str], None]
) -> Outcome:
    """Read the rules and the tags, propose the change and, with ``write``, apply it to the file."""
    from multibake.registry.client import impatient

    file = os.fspath(path)
    text = read_text(file)
    loaded = from_text(text, file)
    found = targets(loaded.config)
    if not found:
        raise config_error(Location(file, 0, 0, ""), "no update: rules", NO_RULES_HINT)
    reg = impatient(api, loaded.config.retry, sleep, echo, timeout=TIMEOUT, attempts=ATTEMPTS)
    axes = propose(loaded.config, found, read_tags(reg, sorted({t.rule.source for t in found})))
    outcome = Outcome(file=file, axes=axes, places=tuple(loaded.loc(a.path) for a in axes), stale=stale(loaded, axes))
    if write and outcome.changed:
        from multibake.compare.roundtrip import replace_sequences

        write_in_place(Path(file), replace_sequences(text, {a.path: a.new for a in axes if a.changed}, file))
        outcome = dataclasses.replace(outcome, written=True)
    return outcome


def write_in_place(path: Path, text: str) -> None:
    """Replace the file's content at once (a temporary file beside it renamed over it), keeping its mode."""
    target = path.resolve()
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise BuildError(f"{path}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        Path(tmp).chmod(mode)
        Path(tmp).replace(target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise BuildError(f"{path}: cannot write: {exc.strerror}") from None
        raise
