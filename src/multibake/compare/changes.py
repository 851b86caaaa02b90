"""``multibake diff``: the published release against what its tags held before, or another namespace.

The comparison itself is pure (diff.py); this module reads the release record (journal.py) and the
registry, through the release's own registry client and credentials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from multibake import refs
from multibake.compare import diff as compare
from multibake.errors import BuildError, UsageError
from multibake.plan.model import Plan
from multibake.plan.transforms import select
from multibake.registry.client import Registry
from multibake.release import journal, publish, shards
from multibake.release.signing import signature_ref
from multibake.release.tools import Tools, logged_in, registry_for


@dataclass(frozen=True, kw_only=True, slots=True)
class DiffOptions:
    """``multibake diff``'s options, as given."""

    config: Path
    registry: str | None = None
    selectors: tuple[str, ...] = ()
    against: str | None = None  # another registry namespace holding the same repositories
    previous: bool = False


def diff(opts: DiffOptions, tools: Tools) -> compare.Report:
    """The published release against what the registry held before it (--previous) or against another
    namespace (--against); without either, --previous when a release is recorded."""
    if opts.against and opts.previous:
        raise UsageError("choose one of --against and --previous")
    release = shards.resolve(opts.config, opts.registry, None, check_files=False)
    p = select(release.plan, list(opts.selectors))
    with logged_in(tools, release.plan.registry) as with_login:
        return _diff(opts, release, p, registry_for(release, with_login))


def _diff(opts: DiffOptions, release: shards.Resolved, p: Plan, reg: Registry) -> compare.Report:
    if opts.against:
        return _diff_against(opts, p, reg)
    entry = journal.last(release.loaded.root)
    if entry is None:
        where = journal.folder(release.loaded.root)
        if opts.previous:
            raise UsageError(f"no release recorded in {where}: `multibake build --push` records each release there")
        raise UsageError(
            f"nothing to compare with: no release recorded in {where}; pass --against REGISTRY/NAMESPACE "
            "(another namespace holding the same images), or publish with `multibake build --push` first"
        )
    return _diff_previous(entry, p, reg, selected=bool(opts.selectors))


def _diff_previous(entry: journal.Release, p: Plan, reg: Registry, *, selected: bool) -> compare.Report:
    targets = {c.target for c in p.cells}
    records = [t for t in entry.tags if not selected or t.target in targets]
    pairs = compare.previous_pairs((t.ref, t.before) for t in records)
    facts = compare.read_tags(reg, [ref for pair in pairs for ref in (pair.old, pair.new) if ref])
    notes: list[str] = []
    kept: list[compare.Pair] = []
    for t, pair in zip(records, pairs, strict=True):
        if pair.old is not None and facts.get(pair.old) is None:  # deleted, or garbage-collected
            notes.append(f"{t.ref}: what it pointed at before ({t.before}) is no longer in the registry")
            continue
        now = facts.get(t.ref)
        if now is not None and t.after is not None and now.digest != t.after:
            notes.append(f"{t.ref} moved since that release (to {now.digest})")
        kept.append(pair)
    notes += signature_notes(reg, kept, facts)
    return compare.Report(
        mode="previous",
        registry=entry.registry,
        old=f"before the release of {entry.time}",
        new=f"{entry.registry} now",
        tags=compare.compare(kept, facts, facts),
        notes=tuple(notes),
    )


def _diff_against(opts: DiffOptions, p: Plan, reg: Registry) -> compare.Report:
    against = (opts.against or "").rstrip("/")
    problem = refs.repository_problem(against)
    if problem:
        raise UsageError(f"--against {against!r}: {problem}")
    if against == p.registry:
        raise UsageError(f"--against {against}: that is the configured registry itself; name another namespace")
    theirs = select(shards.resolve(opts.config, against, None, check_files=False).plan, list(opts.selectors))
    ours_refs, their_refs, notes = [], [], []
    for mine, other in zip(p.cells, theirs.cells, strict=True):
        if mine.image == other.image:  # image: host/name is not under the registry: the same on both sides
            notes.append(f"{mine.target}: {mine.image} is not under the registry; not compared")
            continue
        ours_refs.append([*mine.tags, *(r for _, rs in mine.platform_tags for r in rs)])
        their_refs.append([*other.tags, *(r for _, rs in other.platform_tags for r in rs)])
    repos = sorted({compare.repository(r) for refs_ in (*ours_refs, *their_refs) for r in refs_})
    # a repository only one side has is all new (or all removed) tags
    lists = publish._parallel(lambda repo: sorted(reg.tags(repo, missing_ok=True)), repos)
    listed = dict(zip(repos, lists, strict=True))
    pairs = compare.against_pairs(ours_refs, their_refs, listed)
    facts = compare.read_tags(reg, [ref for pair in pairs for ref in (pair.old, pair.new) if ref])
    notes += signature_notes(reg, pairs, facts)
    return compare.Report(
        mode="against",
        registry=p.registry,
        old=against,
        new=p.registry,
        tags=compare.compare(pairs, facts, facts),
        notes=tuple(notes),
    )


def signature_notes(
    reg: Registry, pairs: Sequence[compare.Pair], facts: Mapping[str, compare.TagFacts | None]
) -> list[str]:
    """A note for each tag whose image carries a cosign signature on one side only (appeared, or vanished)."""

    def signed(ref: str | None) -> bool | None:
        held = facts.get(ref) if ref else None
        if ref is None or held is None:
            return None
        image = f"{compare.repository(ref)}@{held.digest}"
        try:
            return reg.manifest(signature_ref(image)) is not None
        except BuildError:
            return None

    sides = publish._parallel(lambda pair: (signed(pair.old), signed(pair.new)), pairs)
    notes = []
    for pair, (old, new) in zip(pairs, sides, strict=True):
        if old is not None and new is not None and old != new:
            notes.append(f"{pair.ref}: a signature {'appeared' if new else 'vanished'} (its cosign .sig tag)")
    return notes
