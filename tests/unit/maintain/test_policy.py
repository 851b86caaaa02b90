"""gc's rules on fakes: staging leftovers past the grace period, keep_last, unplanned_after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from multibake.maintain.naming import Naming
from multibake.maintain.policy import Family, Rules, ago, candidates, doomed

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
APP = Naming(
    templates=((("app",), "-", ("flavor",)), (("app",),)),
    known={"app": ["1.0", "2.0", "3.0"], "flavor": ["slim", "full"]},
    affixes={"linux/amd64": "-amd64", "linux/arm/v7": "-armv7"},
)
TAGS = [
    "1.0",
    "1.0-slim",
    "1.0-slim-armv7",
    "1.0-amd64",
    "2.0",
    "2.0-slim",
    "3.0",
    "3.0-full-armv7",
    "latest",
    "multibake-staging-app-1_0",
    "multibake-staging-app-3_0",
    "sha256-" + "a" * 64 + ".sig",
]


def test_staging_leftovers_past_the_grace_period_only() -> None:
    built = {"multibake-staging-app-1_0": NOW - 2 * DAY, "multibake-staging-app-3_0": NOW - timedelta(hours=2)}
    v = doomed(TAGS, [], set(), built, now=NOW, grace=DAY)
    assert v.doomed == {"multibake-staging-app-1_0": "staging leftover, built 2d ago"}
    assert set(doomed(TAGS, [], set(), built, now=NOW, grace=timedelta(0)).doomed) == {
        "multibake-staging-app-1_0",
        "multibake-staging-app-3_0",
    }


def test_a_staging_tag_of_unknown_age_is_kept_unless_the_grace_is_zero() -> None:
    v = doomed(TAGS, [], set(), {}, now=NOW, grace=DAY)
    assert v.doomed == {}
    assert len(v.notes) == 2 and "gc --grace 0" in v.notes[0]
    assert len(doomed(TAGS, [], set(), {}, now=NOW, grace=timedelta(0)).doomed) == 2


def test_keep_last_two_values_dooms_every_tag_of_the_oldest() -> None:
    fam = Family(name="app", naming=APP, rules=Rules(keep_last=(("app", 2),)))
    v = doomed(TAGS, [fam], set(), {}, now=NOW, grace=DAY)
    assert set(v.doomed) == {"1.0", "1.0-slim", "1.0-slim-armv7", "1.0-amd64"}
    assert v.doomed["1.0"] == "retention: app=1.0 is older than the last 2 (2.0, 3.0)"
    assert any("app=1.0 is still in the matrix" in n for n in v.notes)


def test_keep_last_counts_values_found_in_the_registry_too() -> None:
    fam = Family(name="app", naming=APP, rules=Rules(keep_last=(("app", 3),)))
    v = doomed(["0.9", "0.9-slim", *TAGS], [fam], set(), {}, now=NOW, grace=DAY)
    assert set(v.doomed) == {"0.9", "0.9-slim"}


def test_unplanned_tags_after_their_time() -> None:
    fam = Family(name="app", naming=APP, rules=Rules(unplanned_after=30 * DAY))
    planned = {"2.0", "2.0-slim", "3.0", "3.0-full-armv7", "latest"}
    built = {"1.0": NOW - 40 * DAY, "1.0-slim": NOW - 10 * DAY, "2.0": NOW - 90 * DAY}
    v = doomed(TAGS, [fam], planned, built, now=NOW, grace=DAY)
    assert v.doomed == {"1.0": "not in the plan, built 40d ago (retention: 30d)"}
    assert "1.0-slim-armv7" in candidates(TAGS, [fam], planned)
    assert "2.0" not in candidates(TAGS, [fam], planned)
    assert "multibake-staging-app-1_0" in candidates(TAGS, [], planned)


def test_ago() -> None:
    assert ago(timedelta(days=3, hours=4, minutes=5)) == "3d 4h"
    assert ago(timedelta(hours=5, minutes=2)) == "5h 2m"
    assert ago(timedelta(minutes=12)) == "12m"
    assert ago(timedelta(days=2)) == "2d"
