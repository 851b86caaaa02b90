"""The release journal: what each release did to the public tags, for ``multibake diff --previous``.

When a release moves at least one public tag, publish records every tag it released with the digest
the tag pointed at before and the one it points at after, in ``.multibake/releases/`` beside
platforms.yaml: ``last.json`` and a copy named by the release's time, the newest ``KEEP`` kept.
The registry still holds the earlier images by digest, so ``diff --previous`` can read both sides.
A release that moved no tag leaves the journal alone: the last release is the last that changed
something. The file holds references and digests only, never a credential (platforms.yaml refuses
them in image names). Read back into a frozen model: a malformed file is a usage error naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from multibake.release.publish import TagCheck
from multibake.release.shards import read_model

SCHEMA = "multibake.release/v1"
DIRECTORY = Path(".multibake") / "releases"
LAST = "last.json"
KEEP = 10  # releases kept besides last.json


class _File(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class TagRecord(_File):
    """One public tag of a release: what it pointed at before the release, and after."""

    ref: str
    target: str  # the cell it belongs to
    kind: str  # "index" (a multi-arch tag) or the platform of a per-platform tag
    before: str | None  # None: the release made the tag
    after: str | None  # None: the tag could not be read back


class Release(_File):
    schema_id: Literal["multibake.release/v1"] = Field(alias="schema")
    time: str  # when the tags moved, RFC 3339, UTC
    registry: str
    config: str
    revision: str | None = None
    created: str | None = None  # the images' creation time (SOURCE_DATE_EPOCH or the commit time)
    build_ids: dict[str, str] = Field(default_factory=dict)  # target → build id
    tags: list[TagRecord]

    @property
    def moved(self) -> list[TagRecord]:
        return [t for t in self.tags if t.before != t.after]


def folder(root: Path) -> Path:
    return root / DIRECTORY


def record(root: Path, release: Release) -> Path | None:
    """Write ``release`` as the last one (and keep a copy); nothing when it moved no tag."""
    if not release.moved:
        return None
    where = folder(root)
    where.mkdir(parents=True, exist_ok=True)
    text = json.dumps(release.model_dump(by_alias=True), indent=2) + "\n"
    stamp = release.time.replace("-", "").replace(":", "")
    copy = where / f"release-{stamp}.json"
    for path in (copy, where / LAST):
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)  # a reader sees the old file or the new one, never half of one
    for old in sorted(where.glob("release-*.json"))[:-KEEP]:
        old.unlink(missing_ok=True)
    return where / LAST


def last(root: Path) -> Release | None:
    """The last recorded release, or None when there is none."""
    path = folder(root) / LAST
    if not path.is_file():
        return None
    return read_model(path, Release, "release journal (delete it to start afresh)")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def release_of(
    *,
    registry: str,
    config: str,
    tags: Sequence[TagCheck],
    before: Mapping[str, str | None],
    after: Mapping[str, str | None],
    revision: str | None = None,
    created: str | None = None,
    build_ids: Mapping[str, str] | None = None,
    time: str | None = None,
) -> Release:
    """A journal entry: ``tags`` are the checks of every public tag the release wrote or kept."""
    return Release(
        schema_id=SCHEMA,
        time=time or now(),
        registry=registry,
        config=config,
        revision=revision,
        created=created,
        build_ids=dict(build_ids or {}),
        tags=[
            TagRecord(ref=t.ref, target=t.target, kind=t.kind, before=before.get(t.ref), after=after.get(t.ref))
            for t in tags
        ],
    )
