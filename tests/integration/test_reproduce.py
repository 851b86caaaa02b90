"""multibake reproduce on the real stack: the fast tier rebuilt from scratch against what it published.

Published with SOURCE_DATE_EPOCH (as a CI release sets it from the commit). On multibake-remote the
release's image exporter clamps file times (rewrite-timestamp=true), so the rebuild is identical; on
the docker driver the exporter refuses that option, so files written by RUN steps keep the build's
times, and the report names exactly those (mtime only). A step that writes the time into a file is
named with its path and the layer it is in.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_build import FAST
from tests.integration.test_publish import _two_leaves, multibake, plan_of, push

SDE = {"SOURCE_DATE_EPOCH": "1700000000"}


def _reproduce(*args: str) -> tuple[int, dict[str, Any]]:
    t0 = time.monotonic()
    proc = multibake("reproduce", "--json", *args)
    print(f"\nreproduce {' '.join(args[-2:])}: {time.monotonic() - t0:.1f} s")
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"no JSON (exit {proc.returncode}):\n{proc.stdout[-1500:]}\n{proc.stderr[-4000:]}")


def _publish_fast(builder: str) -> str:
    ns = f"127.0.0.1:5000/repro-{uuid.uuid4().hex[:8]}"
    proc = multibake(
        "build",
        "--push",
        "--json",
        "-c",
        str(FAST),
        "--registry",
        ns,
        "--builder",
        builder,
        "--progress",
        "quiet",
        env=SDE,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ns


def test_the_fast_tier_rebuilt_on_multibake_remote_is_identical(stack: None) -> None:
    ns = _publish_fast("multibake-remote")
    code, doc = _reproduce("-c", str(FAST), "--registry", ns, "--builder", "multibake-remote")
    assert doc["source_date_epoch"] == 1700000000
    assert [p for p in doc["platforms"] if not p["identical"]] == []
    assert code == 0
    assert len(doc["platforms"]) == 15  # 5 cells x 3 platforms


def test_the_fast_tier_published_on_the_docker_driver_differs_only_in_file_times(stack: None) -> None:
    ns = _publish_fast("default")
    code, doc = _reproduce("-c", str(FAST), "--registry", ns, "--builder", "default")
    assert code == 1
    differing = [p for p in doc["platforms"] if not p["identical"]]
    assert differing, "the docker driver's exporter keeps RUN steps' file times"
    for p in differing:
        # SOURCE_DATE_EPOCH pins created and history; the layers' uncompressed digests differ with them
        assert {f["field"] for f in p["config"]} <= {"rootfs.diff_ids"}, p["config"]
        for layer in p["layers"]:
            # the files are the same but for their times; a layer may also differ in its tar's encoding
            # or compression alone (no file listed: measured for every layer, docker 28.5)
            for f in layer["files"]:
                assert f["change"] == "changed" and set(f["fields"]) == {"mtime"}, f


def test_a_file_with_the_build_time_in_it_is_named_with_its_layer(stack: None, tmp_path: Path) -> None:
    ns = f"127.0.0.1:5000/reprotime-{uuid.uuid4().hex[:8]}"
    cfg = _two_leaves(tmp_path, ns, "date +%s%N > /build-time")
    code, _, err = push(cfg, "--builder", "multibake-remote", env=SDE)
    assert code == 0, err[-3000:]
    code, doc = _reproduce("-c", str(cfg), "--builder", "multibake-remote")
    assert code == 1
    differing = [p for p in doc["platforms"] if not p["identical"]]
    two = {c["target"] for c in plan_of(cfg)["cells"] if c["family"] == "two"}
    assert {p["target"] for p in differing} == two
    assert len(differing) == 3  # every platform of the leaf that writes the time; bb and one are identical
    for p in differing:
        (layer,) = p["layers"]  # one layer differs: the RUN step's, named by its index and both digests
        assert layer["published"] != layer["rebuilt"]
        (found,) = layer["files"]
        assert found["path"] == "build-time" and set(found["fields"]) == {"content"}
