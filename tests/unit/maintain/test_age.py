"""Build times read from configs and provenance statements."""

from __future__ import annotations

from datetime import UTC, datetime

from multibake.maintain.age import from_config, from_provenance, newest, provenance_layers, timestamp

T = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def test_timestamps() -> None:
    assert timestamp("2026-12-01T10:00:00Z") == T
    assert timestamp("2026-12-01T10:00:00.123456789Z") == T.replace(microsecond=123456)
    assert timestamp("2026-12-01T11:00:00+01:00") == T
    assert timestamp("yesterday") is None and timestamp(None) is None


def test_a_config_time_pinned_by_source_date_epoch_says_nothing() -> None:
    label = {"config": {"Labels": {"org.opencontainers.image.created": "2023-11-14T22:13:20Z"}}}
    assert from_config({"created": "2023-11-14T22:13:20Z", **label}) is None
    assert from_config({"created": "2026-12-01T10:00:00Z", **label}) == T
    assert from_config({"created": "2026-12-01T10:00:00Z"}) == T
    assert from_config({}) is None


def test_provenance_v02_and_v1() -> None:
    v02 = {
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "predicate": {"metadata": {"buildFinishedOn": "2026-12-01T10:00:00Z"}},
    }
    v1 = {
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"runDetails": {"metadata": {"finishedOn": "2026-12-01T10:00:00Z"}}},
    }
    assert from_provenance(v02) == T and from_provenance(v1) == T
    assert from_provenance({"predicateType": "https://spdx.dev/Document", "predicate": {}}) is None


def test_newest_and_layers() -> None:
    assert newest([None, T, T.replace(hour=9)]) == T
    assert newest([None]) is None
    doc = {
        "layers": [
            {"digest": "sha256:p", "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}},
            {"digest": "sha256:s", "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}},
        ]
    }
    assert provenance_layers(doc) == ["sha256:p"]
