"""Which tags of a repository ``multibake gc`` wants gone, and why: pure.

Three rules, each off unless configured, except the first:

- **staging leftovers**: ``multibake-staging-*`` tags built longer ago than the grace period (a day
  by default, so a release still running is never touched). A tag whose images say nothing about
  when they were built (``SOURCE_DATE_EPOCH`` and no provenance) is kept, with a note.
- **keep the last N values of an axis** (``retention: {keep_last: {node: 2}}``): every tag of the
  family naming an older value of that axis (version order), per-platform tags included.
- **tags not in the current plan after D days** (``retention: {unplanned_after: 30d}``): a tag of
  the family (one its templates read) that no planned cell has, built longer ago than D.

Tags no rule names (another tool's, a template no longer read) are never touched here; graph.py
adds what has to go with a deleted manifest, and keeps what a kept tag needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from multibake.maintain.graph import subject
from multibake.maintain.naming import Naming, Parsed, version_order

STAGING = "multibake-staging-"


@dataclass(frozen=True, kw_only=True, slots=True)
class Rules:
    """One family's retention (``retention:`` of the family)."""

    keep_last: tuple[tuple[str, int], ...] = ()  # axis → how many of its newest values to keep
    unplanned_after: timedelta | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Family:
    name: str
    naming: Naming
    rules: Rules = field(default_factory=Rules)


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    doomed: Mapping[str, str]  # tag → why
    notes: tuple[str, ...] = ()


def ago(age: timedelta) -> str:
    """``3d 4h``, ``5h 2m``, ``12m``: an age in the two largest units."""
    minutes = int(age.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    return f"{hours}h {mins}m" if hours else f"{mins}m"


def staging(tags: Sequence[str], built: Mapping[str, datetime | None], now: datetime, grace: timedelta) -> Verdict:
    """Staging tags past the grace period."""
    doomed: dict[str, str] = {}
    notes: list[str] = []
    for tag in tags:
        if not tag.startswith(STAGING):
            continue
        when = built.get(tag)
        if when is None and grace > timedelta(0):
            notes.append(
                f"{tag}: kept, its images do not say when they were built (SOURCE_DATE_EPOCH without provenance); "
                "gc --grace 0 deletes it"
            )
            continue
        age = now - when if when is not None else timedelta(0)
        if age >= grace:
            doomed[tag] = f"staging leftover, built {ago(age)} ago" if when else "staging leftover"
    return Verdict(doomed=doomed, notes=tuple(notes))


def retention(
    family: Family,
    tags: Sequence[str],
    planned: set[str],
    built: Mapping[str, datetime | None],
    now: datetime,
) -> Verdict:
    """The family's tags its ``retention:`` no longer keeps."""
    parsed = {t: p for t in tags if _ours(t) and (p := family.naming.parse(t)) is not None}
    doomed: dict[str, str] = {}
    notes: list[str] = []
    for axis, count in family.rules.keep_last:
        values = {dict(p.values)[axis] for p in parsed.values() if axis in dict(p.values)}
        values |= set(family.naming.known.get(axis, ()))
        ordered = version_order(sorted(values))
        kept = ordered[-count:] if count else []
        old = set(ordered) - set(kept)
        notes += [
            f"{family.name}: {axis}={v} is still in the matrix: the next release pushes it again"
            for v in ordered
            if v in old and v in family.naming.known.get(axis, ())
        ]
        for tag, p in parsed.items():
            value = dict(p.values).get(axis)
            if value in old:
                doomed.setdefault(tag, f"retention: {axis}={value} is older than the last {count} ({', '.join(kept)})")
    after = family.rules.unplanned_after
    if after is not None:
        for tag in parsed:
            when = built.get(tag)
            if tag not in planned and when is not None and now - when > after:
                doomed.setdefault(tag, f"not in the plan, built {ago(now - when)} ago (retention: {ago(after)})")
    return Verdict(doomed=doomed, notes=tuple(notes))


def _ours(tag: str) -> bool:
    return not tag.startswith(STAGING) and subject(tag) is None


def parse(family: Family, tag: str) -> Parsed | None:
    return family.naming.parse(tag) if _ours(tag) else None


def doomed(
    tags: Sequence[str],
    families: Sequence[Family],
    planned: set[str],
    built: Mapping[str, datetime | None],
    *,
    now: datetime,
    grace: timedelta,
) -> Verdict:
    """Every rule over one repository's tags: tag → the first reason found."""
    verdicts = [staging(tags, built, now, grace), *(retention(f, tags, planned, built, now) for f in families)]
    out: dict[str, str] = {}
    for v in verdicts:
        for tag, why in v.doomed.items():
            out.setdefault(tag, why)
    return Verdict(doomed=out, notes=tuple(n for v in verdicts for n in v.notes))


def candidates(tags: Sequence[str], families: Sequence[Family], planned: set[str]) -> list[str]:
    """The tags whose build time a rule needs: staging tags, and unplanned tags of families with a time rule."""
    timed = [f for f in families if f.rules.unplanned_after is not None]
    return [
        t for t in tags if t.startswith(STAGING) or (t not in planned and any(parse(f, t) is not None for f in timed))
    ]
