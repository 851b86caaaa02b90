"""Recording a release that moved tags in its journal (``diff --previous`` reads it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from multibake.kinds import Echo
from multibake.release import journal, publish, shards
from multibake.release.publish import TagCheck


@dataclass(frozen=True, kw_only=True, slots=True)
class Journal:
    """What a release's journal entry says besides its tags (journal.py)."""

    release: shards.Resolved
    ids: Mapping[str, str] = field(default_factory=dict)  # target → build id


def record(journal_to: Journal, published: publish.Published, checks: list[TagCheck], say: Echo) -> None:
    """Record: write the release into the journal (for ``diff --previous``) when it moved a tag.

    A tag the release did not move pointed before at what it points at now. A journal that cannot be
    written costs a warning, never the release.
    """
    after = {check.ref: check.digest for check in checks}
    before = {ref: published.before.get(ref, digest) for ref, digest in after.items()}
    meta = journal_to.release.meta
    entry = journal.release_of(
        registry=journal_to.release.plan.registry,
        config=journal_to.release.loaded.file,
        tags=checks,
        before=before,
        after=after,
        revision=meta.revision,
        created=meta.created,
        build_ids={t: i for t, i in journal_to.ids.items() if t in published.promoted},
    )
    try:
        written = journal.record(journal_to.release.loaded.root, entry)
    except OSError as exc:
        say(f"multibake: warning: the release journal was not written: {exc}")
        return
    if written is not None:
        say(f"multibake: {len(entry.moved)} tag(s) moved; recorded in {written} (multibake diff --previous)")
