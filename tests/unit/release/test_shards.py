"""Lock files, shard results, the plan digest and the CI fan-out (no docker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multibake.cli import app as cli
from multibake.errors import EXIT_USAGE, UsageError
from multibake.kinds import Split
from multibake.release import shards
from tests.helpers import FIXED_META, SHIPPED_CONFIG, make_context, plan_file, plan_text

BASE = """
registry: 127.0.0.1:5000/t
platforms: [linux/amd64, linux/arm64]
images:
  app:
    context: app
    matrix: {version: ["1.0"]}
"""


def _digest(tmp_path: Path, extra: str) -> str:
    make_context(tmp_path, "app")
    return shards.plan_digest(plan_text(tmp_path, BASE + extra))


def test_the_plan_digest_covers_annotations(tmp_path: Path) -> None:
    plain = _digest(tmp_path, "")
    annotated = _digest(tmp_path, '    annotations: {org.opencontainers.image.description: "app"}\n')
    assert plain != annotated


def test_the_plan_digest_covers_per_platform_args(tmp_path: Path) -> None:
    plain = _digest(tmp_path, "")
    assert plain != _digest(tmp_path, "    platform_args: {S6_ARCH: s6-overlay}\n")
    assert _digest(tmp_path, "    platform_args: {S6_ARCH: s6-overlay}\n") != _digest(
        tmp_path, "    platform_args: {S6_ARCH: node}\n"
    )


def test_the_plan_digest_is_stable() -> None:
    assert shards.plan_digest(plan_file(SHIPPED_CONFIG)) == shards.plan_digest(plan_file(SHIPPED_CONFIG))


def test_a_lock_file_round_trips(tmp_path: Path) -> None:
    p = plan_file(SHIPPED_CONFIG)
    path = tmp_path / "lock.json"
    shards.write_lock(shards.lock_file(p, FIXED_META, "platforms.yaml"), path)
    doc = json.loads(path.read_text())
    assert list(doc) == ["schema", "config", "plan", "meta"] and doc["schema"] == "multibake.lock/v1"
    assert shards.read_lock(path) == (FIXED_META, shards.plan_digest(p))


GOOD_LOCK = {
    "schema": "multibake.lock/v1",
    "config": "platforms.yaml",
    "plan": "sha256:00",
    "meta": {"created": "2024-06-01T12:00:00Z", "revision": None, "source": None},
}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "Invalid JSON"),
        (json.dumps({**GOOD_LOCK, "schema": "multibake.shard/v1"}), "schema: Input should be 'multibake.lock/v1'"),
        (json.dumps({k: v for k, v in GOOD_LOCK.items() if k != "meta"}), "meta: Field required"),
        (json.dumps({**GOOD_LOCK, "extra": 1}), "extra: Extra inputs are not permitted"),
        (json.dumps({**GOOD_LOCK, "plan": 7}), "plan: Input should be a valid string"),
        (json.dumps({**GOOD_LOCK, "meta": {"revision": "x"}}), "meta.created: Field required"),
        (json.dumps([1, 2]), "Input should be an object"),
    ],
)
def test_a_malformed_lock_file_is_a_usage_error_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, problem: str
) -> None:
    lock = tmp_path / "broken.lock.json"
    lock.write_text(text)
    code = cli.run(["build", "--dry-run", "-c", str(SHIPPED_CONFIG), "--lock", str(lock)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err.startswith(f"multibake: error: {lock}: not a valid lock file: ") and problem in err, err
    assert "Traceback" not in err


def test_a_missing_lock_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.run(["publish", "--from", str(tmp_path), "-c", str(SHIPPED_CONFIG), "--lock", str(tmp_path / "no")])
    assert code == EXIT_USAGE
    assert f"{tmp_path / 'no'}: cannot read this lock file" in capsys.readouterr().err


GOOD_RESULT = {"schema": "multibake.shard/v1", "shard": "platform=linux/amd64", "plan": "sha256:00", "cells": {}}


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ("]", "Invalid JSON"),
        (json.dumps({**GOOD_RESULT, "schema": "x"}), "schema: Input should be 'multibake.shard/v1'"),
        (json.dumps({k: v for k, v in GOOD_RESULT.items() if k != "cells"}), "cells: Field required"),
        (json.dumps({**GOOD_RESULT, "cells": {"t": {"index": 1}}}), "cells.t.index: Input should be a valid string"),
        (json.dumps({**GOOD_RESULT, "cells": {"t": {"digest": "x"}}}), "cells.t.digest: Extra inputs"),
        (json.dumps({**GOOD_RESULT, "failed": "t"}), "failed: Input should be a valid array"),
    ],
)
def test_a_malformed_shard_result_is_a_usage_error_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: str, problem: str
) -> None:
    (tmp_path / "shard.json").write_text(doc)
    code = cli.run(["publish", "--from", str(tmp_path), "-c", str(SHIPPED_CONFIG)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err.startswith(f"multibake: error: {tmp_path / 'shard.json'}: not a valid shard result: ") and problem in err


def test_a_shard_result_of_another_plan_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    shard = shards.Shard(Split.PLATFORM, "linux/amd64")
    shards.write_result(shard, "sha256:" + "1" * 64, {}, [], path)
    with pytest.raises(UsageError, match="built from another plan"):
        shards.merge([path], plan_file(SHIPPED_CONFIG), "sha256:" + "2" * 64)


def test_merge_reports_failed_and_missing_cells(tmp_path: Path) -> None:
    p = plan_file(SHIPPED_CONFIG)
    digest = shards.plan_digest(p)
    first, second = p.cells[0], p.cells[1]
    cells = {first.target: shards.ShardCell(index=f"{first.image}@sha256:{'a' * 64}")}
    shards.write_result(shards.Shard(Split.CELL, first.target), digest, cells, [second.target], tmp_path / "a.json")
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["cells"] == {first.target: {"index": f"{first.image}@sha256:{'a' * 64}"}}, "no null keys"
    sources, problems = shards.merge([tmp_path], p, digest)
    assert sources == {first.target: [f"{first.image}@sha256:{'a' * 64}"]}
    assert f"{second.target}: failed in shard cell={first.target}" in problems
    assert len(problems) == len(p.cells)  # one failed, every other one missing


def test_fan_out_and_members() -> None:
    p = plan_file(SHIPPED_CONFIG)
    by_platform = shards.fan_out(p, Split.PLATFORM)
    assert [str(s) for s in by_platform] == ["platform=linux/amd64", "platform=linux/arm64", "platform=linux/arm/v7"]
    assert by_platform[2].id == "platform-linux_arm_v7"
    families = shards.fan_out(p, Split.FAMILY)
    assert [s.value for s in families] == [f.name for f in p.families]
    members = shards.shard_members(families[1], p)
    assert members == {c.target for c in p.cells if c.family == families[1].value}
    assert len(shards.fan_out(p, Split.CELL)) == len(p.cells)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("platform=armhf", "armhf"),
        ("platform=linux/arm/v6", "no cell is planned for linux/arm/v6"),
        ("family=nope", "no family 'nope'"),
        ("cell=nope", "no cell 'nope'"),
        ("region=eu", "expected platform=P"),
    ],
)
def test_parse_shard_refuses_what_the_plan_cannot_build(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        shards.parse_shard(spec, plan_file(SHIPPED_CONFIG))


def test_parse_shard_normalises_the_platform() -> None:
    assert shards.parse_shard("platform=arm64v8", plan_file(SHIPPED_CONFIG)) == shards.Shard(
        Split.PLATFORM, "linux/arm64"
    )
