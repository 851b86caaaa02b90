"""diff.py and journal.py: the pure comparison of two sides of facts, what is paired, the release journal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multibake.cli import report
from multibake.compare.diff import Image, Pair, TagFacts, against_pairs, compare, compare_tag, previous_pairs
from multibake.compare.diff import Report as DiffReport
from multibake.errors import UsageError
from multibake.kinds import Change
from multibake.release import journal
from multibake.release.publish import TagCheck

AMD, ARM = "linux/amd64", "linux/arm64"
REG = "r.example.com/team"


def image(digest: str, size: int = 1000, layers: int = 3, base: str | None = None) -> Image:
    return Image(digest=f"sha256:{digest}", bytes=size, layers=layers, base=base)


def facts(index: str, **images: Image) -> TagFacts:
    plats = {"amd64": AMD, "arm64": ARM}
    return TagFacts(
        ref=f"{REG}/app@sha256:{index}",
        digest=f"sha256:{index}",
        images=tuple((plats[k], v) for k, v in images.items()),
    )


def test_a_changed_platform_image_gives_its_size_and_layer_deltas() -> None:
    old = facts("i1", amd64=image("a1"), arm64=image("b1", size=2000, layers=4))
    new = facts("i2", amd64=image("a1"), arm64=image("b2", size=2350, layers=5))
    diff = compare_tag(f"{REG}/app:1.0", old, new)
    assert diff.change is Change.CHANGED
    amd, arm = diff.platforms
    assert (amd.platform, amd.change, amd.bytes_delta, amd.layers_delta) == (AMD, Change.UNCHANGED, 0, 0)
    assert (arm.platform, arm.change, arm.bytes_delta, arm.layers_delta) == (ARM, Change.CHANGED, 350, 1)
    assert not arm.base_changed


def test_new_attestations_alone_change_nothing() -> None:
    """Another index digest (its attestation manifests record when the build ran), the same images."""
    old = facts("i1", amd64=image("a1"), arm64=image("b1"))
    new = facts("i2", amd64=image("a1"), arm64=image("b1"))
    diff = compare_tag(f"{REG}/app:1.0", old, new)
    assert diff.change is Change.UNCHANGED
    assert [row.change for row in diff.platforms] == [Change.UNCHANGED, Change.UNCHANGED]


def test_the_same_config_and_layers_in_another_manifest_is_the_same_content() -> None:
    """BuildKit writes Docker media types without attestations and OCI ones with them: other digests."""
    old = facts("i1", amd64=Image(digest="sha256:docker", bytes=10, layers=1, content="c1"))
    new = facts("i2", amd64=Image(digest="sha256:oci", bytes=10, layers=1, content="c1"))
    (row,) = compare_tag(f"{REG}/app:1.0", old, new).platforms
    assert row.change is Change.CHANGED and row.same_content
    shown = DiffReport(mode="previous", registry=REG, old="a", new="b", tags=(compare_tag("r/app:1", old, new),))
    assert "changed (manifest only)" in report.diff_table(shown)


def test_a_base_change_is_shown_old_to_new() -> None:
    old = facts("i1", amd64=image("a1", base="docker.io/library/alpine:3.20"))
    new = facts("i2", amd64=image("a2", base="docker.io/library/alpine:3.21"))
    (row,) = compare_tag(f"{REG}/app:1.0", old, new).platforms
    assert row.base_changed and row.old is not None and row.new is not None
    assert (row.old.base, row.new.base) == ("docker.io/library/alpine:3.20", "docker.io/library/alpine:3.21")


def test_platforms_added_and_removed() -> None:
    old = facts("i1", amd64=image("a1"))
    new = facts("i2", arm64=image("b1"))
    rows = compare_tag(f"{REG}/app:1.0", old, new).platforms
    assert [(r.platform, r.change) for r in rows] == [(ARM, Change.NEW), (AMD, Change.REMOVED)]
    assert rows[0].bytes_delta == 1000 and rows[1].bytes_delta == -1000


def test_pairs_are_looked_up_by_where_each_side_was_read() -> None:
    one = facts("i1", amd64=image("a1"))
    two = facts("i2", amd64=image("a2", layers=4))
    pairs = [
        Pair(ref=f"{REG}/app:1.0", old="old:1.0", new="new:1.0"),
        Pair(ref=f"{REG}/app:2.0", old=None, new="new:2.0"),  # new
        Pair(ref=f"{REG}/app:0.9", old="old:0.9", new=None),  # removed
        Pair(ref=f"{REG}/app:nowhere", old="old:x", new="new:x"),  # on neither side: left out
    ]
    read = {"old:1.0": one, "new:1.0": two, "new:2.0": two, "old:0.9": one, "old:x": None, "new:x": None}
    diffs = compare(pairs, read, read)
    assert [(d.ref.rsplit(":", 1)[1], d.change) for d in diffs] == [
        ("1.0", Change.CHANGED),
        ("2.0", Change.NEW),
        ("0.9", Change.REMOVED),
    ]
    assert diffs[0].platforms[0].layers_delta == 1


def test_against_pairs_planned_tags_then_what_either_repository_holds_besides() -> None:
    ours = [[f"{REG}/app:1.0", f"{REG}/app:1.0-amd64"]]
    theirs = [["r.example.com/prod/app:1.0", "r.example.com/prod/app:1.0-amd64"]]
    listed = {
        f"{REG}/app": ["1.0", "1.0-amd64", "2.0", "multibake-staging-app-1_0"],
        "r.example.com/prod/app": ["1.0", "0.9"],
    }
    pairs = against_pairs(ours, theirs, listed)
    assert pairs == [
        Pair(ref=f"{REG}/app:1.0", old="r.example.com/prod/app:1.0", new=f"{REG}/app:1.0"),
        Pair(ref=f"{REG}/app:1.0-amd64", old=None, new=f"{REG}/app:1.0-amd64"),  # not under prod: not read there
        Pair(ref=f"{REG}/app:0.9", old="r.example.com/prod/app:0.9", new=None),  # removed
        Pair(ref=f"{REG}/app:2.0", old=None, new=f"{REG}/app:2.0"),  # new; staging tags are never compared
    ]


def test_previous_pairs_read_the_image_a_tag_pointed_at_by_digest() -> None:
    pairs = previous_pairs([(f"{REG}/app:1.0", "sha256:old"), ("localhost:5000/x/app:2.0", None)])
    assert pairs == [
        Pair(ref=f"{REG}/app:1.0", old=f"{REG}/app@sha256:old", new=f"{REG}/app:1.0"),
        Pair(ref="localhost:5000/x/app:2.0", old=None, new="localhost:5000/x/app:2.0"),
    ]


# --- rendering ------------------------------------------------------------------------------------


def _report() -> DiffReport:
    changed = compare_tag(
        f"{REG}/app:1.0",
        facts("i1", amd64=image("a1", size=1_500_000, layers=5, base="alpine:3.20")),
        facts("i2", amd64=image("a2", size=1_500_339, layers=6, base="alpine:3.21")),
    )
    same = compare_tag(f"{REG}/app:2.0", facts("i3", amd64=image("a3")), facts("i4", amd64=image("a3")))
    new = compare_tag(f"{REG}/app:3.0", None, facts("i5", amd64=image("a5", size=512)))
    return DiffReport(mode="against", registry=REG, old="r.example.com/prod", new=REG, tags=(changed, same, new))


def test_the_table_shows_changes_and_a_summary() -> None:
    text = report.diff_table(_report())
    assert text.startswith(f"comparing r.example.com/prod → {REG}\n")
    assert "app:1.0  amd64     changed  1.5 MB → 1.5 MB (+339 B)  5 → 6 (+1)  alpine:3.20 → alpine:3.21" in text
    assert "app:3.0  amd64     new      512 B" in text
    assert "app:2.0" not in text
    assert text.endswith("3 tags compared: 1 changed, 1 new, 0 removed, 1 unchanged (hidden; --all shows them)\n")
    assert "app:2.0  amd64     unchanged" in report.diff_table(_report(), show_all=True)


def test_the_json_document() -> None:
    doc = report.diff_json(_report())
    assert doc["schema"] == "multibake.diff/v1" and doc["changed"] is True
    assert doc["summary"] == {"compared": 3, "new": 1, "removed": 0, "changed": 1, "unchanged": 1}
    assert [t["ref"] for t in doc["tags"]] == [f"{REG}/app:1.0", f"{REG}/app:3.0"]
    row = doc["tags"][0]["platforms"][0]
    assert row == {
        "platform": AMD,
        "change": "changed",
        "old": {"digest": "sha256:a1", "bytes": 1_500_000, "layers": 5, "base": "alpine:3.20"},
        "new": {"digest": "sha256:a2", "bytes": 1_500_339, "layers": 6, "base": "alpine:3.21"},
        "bytes_delta": 339,
        "layers_delta": 1,
        "base_changed": True,
        "same_content": False,
        "packages": [],
    }
    assert len(report.diff_json(_report(), show_all=True)["tags"]) == 3
    json.dumps(doc)


# --- the journal ----------------------------------------------------------------------------------


def _entry(before: str | None, after: str, time: str = "2025-01-02T03:04:05Z") -> journal.Release:
    return journal.release_of(
        registry=REG,
        config="platforms.yaml",
        tags=[TagCheck(ref=f"{REG}/app:1.0", target="app-1_0", ok=True)],
        before={f"{REG}/app:1.0": before},
        after={f"{REG}/app:1.0": after},
        time=time,
    )


def test_a_release_that_moved_a_tag_is_recorded_and_read_back(tmp_path: Path) -> None:
    assert journal.last(tmp_path) is None
    written = journal.record(tmp_path, _entry("sha256:a", "sha256:b"))
    assert written == tmp_path / ".multibake" / "releases" / "last.json"
    got = journal.last(tmp_path)
    assert got is not None and got.tags[0].before == "sha256:a" and got.tags[0].after == "sha256:b"
    assert json.loads(written.read_text())["schema"] == "multibake.release/v1"


def test_a_release_that_moved_nothing_leaves_the_journal_alone(tmp_path: Path) -> None:
    journal.record(tmp_path, _entry(None, "sha256:b"))
    assert journal.record(tmp_path, _entry("sha256:b", "sha256:b", time="2025-02-01T00:00:00Z")) is None
    got = journal.last(tmp_path)
    assert got is not None and got.time == "2025-01-02T03:04:05Z"


def test_the_journal_keeps_the_newest_releases(tmp_path: Path) -> None:
    for n in range(journal.KEEP + 3):
        journal.record(tmp_path, _entry(None, f"sha256:{n}", time=f"2025-01-01T00:00:{n:02d}Z"))
    copies = sorted((tmp_path / ".multibake" / "releases").glob("release-*.json"))
    assert len(copies) == journal.KEEP
    assert copies[-1].name == f"release-20250101T0000{journal.KEEP + 2:02d}Z.json"


def test_a_malformed_journal_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    where = tmp_path / ".multibake" / "releases"
    where.mkdir(parents=True)
    (where / "last.json").write_text('{"schema": "multibake.release/v1"}')
    with pytest.raises(UsageError, match=r"last.json: not a valid release journal .*delete it"):
        journal.last(tmp_path)
