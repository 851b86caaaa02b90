"""gc end to end on an in-memory registry: dry run, apply, retention, a registry without deletes, a moved tag."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from multibake.cli import gcview
from multibake.errors import BuildError
from multibake.maintain.gc import GcOptions, gc
from multibake.registry.errors import RegistryError
from multibake.release.tools import Tools
from tests.helpers import make_context, write_config
from tests.unit.fakes import FakeRegistry

REG = "r.example.com/team"
PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _config(tmp_path: Path, retention: str = "") -> Path:
    make_context(tmp_path, "app")
    return write_config(
        tmp_path,
        f"""
        registry: {REG}
        platforms: [linux/amd64, linux/arm64, linux/arm/v7]
        images:
          app:
            context: app
            matrix: {{version: ["1.0", "2.0", "3.0"]}}
        {retention}
        """,
    )


def _tools(api: FakeRegistry, said: list[str]) -> Tools:
    def no_docker() -> None:
        raise AssertionError("gc never runs docker")

    return Tools(docker=no_docker, echo=said.append, say=said.append, sleep=lambda _: None, api=api)  # type: ignore[arg-type]


def _release(api: FakeRegistry, created: str = "2026-12-06T11:00:00Z") -> dict[str, str]:
    """Each version published with per-platform tags and its staging tag on the same index."""
    out = {}
    for v in ("1.0", "2.0", "3.0"):
        labels = {"org.opencontainers.image.created": "2023-11-14T22:13:20Z"}
        entries = {}
        for p in PLATFORMS:
            short = {"linux/amd64": "amd64", "linux/arm64": "arm64", "linux/arm/v7": "armv7"}[p]
            entries[p] = api.image(f"{REG}/app:{v}-{short}", p, {**labels, "v": v})
        out[v] = api.index(f"{REG}/app:{v}", entries)
        body, media = api.manifests[(f"{REG}/app", v)]
        api.store(f"{REG}/app:multibake-staging-app-{v.replace('.', '_')}", body, media)
    for key in list(api.blobs):  # configs say when they were built (the fake does not check blob digests)
        api.blobs[key] = api.blobs[key].replace(b'"Labels"', b'"created": "' + created.encode() + b'", "Labels"')
    return out


def test_dry_run_then_apply_removes_staging_tags_alone(tmp_path: Path) -> None:
    api, said = FakeRegistry(), list[str]()
    indexes = _release(api)
    cfg = _config(tmp_path)
    dry = gc(GcOptions(config=cfg, grace="0", now=lambda: NOW), _tools(api, said))
    assert not dry.applied and len(dry.outcomes) == 3
    assert {o.step.action.value for o in dry.outcomes} == {"untag"}
    assert api.deleted == [] and api.writes == [], "a dry run writes nothing"
    text = gcview.gc_table(dry)
    assert "untag" in text and "app:multibake-staging-app-1_0" in text and "dry run" in text

    done = gc(GcOptions(config=cfg, grace="0", apply=True, now=lambda: NOW), _tools(api, said))
    assert done.ok and all(o.done for o in done.outcomes)
    assert sorted(api.list_tags(f"{REG}/app")) == sorted(
        ["1.0", "2.0", "3.0"] + [f"{v}-{s}" for v in ("1.0", "2.0", "3.0") for s in ("amd64", "arm64", "armv7")]
    )
    for v, digest in indexes.items():
        assert api.held(f"{REG}/app:{v}") is not None and api.manifests[(f"{REG}/app", digest)]


def test_the_grace_period_keeps_a_release_that_may_still_run(tmp_path: Path) -> None:
    api, said = FakeRegistry(), list[str]()
    _release(api)
    found = gc(GcOptions(config=_config(tmp_path), now=lambda: NOW), _tools(api, said))
    assert found.outcomes == () and found.kept == 15


def test_retention_deletes_the_oldest_value_and_its_images(tmp_path: Path) -> None:
    api, said = FakeRegistry(), list[str]()
    indexes = _release(api)
    cfg = _config(tmp_path, "    retention: {keep_last: {version: 2}}")
    done = gc(GcOptions(config=cfg, apply=True, now=lambda: NOW), _tools(api, said))
    assert done.ok
    gone = {t for o in done.outcomes for t in o.step.tags}
    assert gone == {"1.0", "1.0-amd64", "1.0-arm64", "1.0-armv7", "multibake-staging-app-1_0"}
    assert (f"{REG}/app", indexes["1.0"]) not in api.manifests
    assert api.held(f"{REG}/app:2.0") is not None and api.held(f"{REG}/app:3.0-armv7") is not None
    assert "still in the matrix" in " ".join(done.notes)


def test_a_registry_without_deletes_is_one_error_before_anything_is_touched(tmp_path: Path) -> None:
    api, said = FakeRegistry(deletes=False), list[str]()
    _release(api)
    with pytest.raises(BuildError, match=r"does not allow deletes.*storage.delete.enabled"):
        gc(GcOptions(config=_config(tmp_path), grace="0", apply=True, now=lambda: NOW), _tools(api, said))
    assert api.writes == []


def test_a_bad_grace_is_a_usage_error(tmp_path: Path) -> None:
    from multibake.errors import UsageError

    with pytest.raises(UsageError, match=r"--grace.*not a duration"):
        gc(GcOptions(config=_config(tmp_path), grace="soon"), _tools(FakeRegistry(), []))


def test_a_failure_midway_keeps_every_kept_tag_and_the_rerun_finishes(tmp_path: Path) -> None:
    api, said = FakeRegistry(), list[str]()
    indexes = _release(api)
    cfg = _config(tmp_path, "    retention: {keep_last: {version: 1}}")
    real = api.delete_manifest
    calls = {"n": 0}

    def flaky(ref: str) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RegistryError(f"deleting {ref}: HTTP 503", transient=True)  # retried
        if calls["n"] == 4:
            raise RegistryError(f"deleting {ref}: HTTP 500 disk full", transient=False)  # not retried: this step fails
        return real(ref)

    api.delete_manifest = flaky  # type: ignore[method-assign]
    first = gc(GcOptions(config=cfg, apply=True, now=lambda: NOW), _tools(api, said))
    assert not first.ok and sum(o.problem is not None for o in first.outcomes) == 1
    assert api.held(f"{REG}/app:3.0") is not None and all(
        api.held(f"{REG}/app:3.0-{s}") for s in ("amd64", "arm64", "armv7")
    ), "the kept cell is whole"
    api.delete_manifest = real  # type: ignore[method-assign]
    second = gc(GcOptions(config=cfg, apply=True, now=lambda: NOW), _tools(api, said))
    assert second.ok and second.outcomes, "the rerun finishes the rest"
    assert sorted(api.list_tags(f"{REG}/app")) == [
        "3.0",
        "3.0-amd64",
        "3.0-arm64",
        "3.0-armv7",
        "multibake-staging-app-3_0",
    ]
    assert (f"{REG}/app", indexes["1.0"]) not in api.manifests and (f"{REG}/app", indexes["2.0"]) not in api.manifests
