"""multibake diff on the real stack: what a release changed, read from the registry.

The fast tier's offline sample (busybox per platform, two leaf families FROM it), released into
namespaces of its own; every number compared is what the registry serves.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.integration import registry
from tests.integration.test_publish import _two_leaves, multibake, plan_of, push

SDE = {"SOURCE_DATE_EPOCH": "1700000000"}  # the release's time, as a checkout's commit time gives it
LEAF = "uname -m > /two"


def _diff(cfg: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = multibake("diff", "-c", str(cfg), "--json", *args)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    doc: dict[str, Any] = json.loads(proc.stdout)
    return proc.returncode, doc


def _refs(plan: dict[str, Any], family: str) -> set[str]:
    cell = next(c for c in plan["cells"] if c["family"] == family)
    return {*cell["tags"], *(r for refs in cell["platform_tags"].values() for r in refs)}


def _layers(ref: str) -> dict[str, int]:
    """platform → layer count of each image of the index ``ref``, read over HTTP."""
    index = registry.get(ref)
    assert index is not None
    host, repo, _ = registry.split(ref)
    return {p: len(registry.manifest(host, repo, d)["layers"]) for p, d in index.platforms().items()}


def test_diff_previous_shows_the_cell_whose_dockerfile_grew_a_layer(stack: None, tmp_path: Path) -> None:
    ns = f"127.0.0.1:5000/diff-{uuid.uuid4().hex[:8]}"
    cfg = _two_leaves(tmp_path, ns, LEAF)
    code, _, err = push(cfg, env=SDE)
    assert code == 0, err[-3000:]
    plan = plan_of(cfg)
    two = next(c for c in plan["cells"] if c["family"] == "two")["tags"][0]
    before = _layers(two)

    _two_leaves(tmp_path, ns, f"{LEAF}\nRUN echo changed > /changed")  # one more layer in the leaf "two"
    code, _, err = push(cfg, env=SDE)
    assert code == 0, err[-3000:]
    assert _layers(two) == {p: n + 1 for p, n in before.items()}, "the registry holds one more layer"

    code, doc = _diff(cfg, "--previous", "--exit-code")
    assert code == 1, "--exit-code: something changed"
    assert doc["mode"] == "previous"
    shown = {t["ref"]: t for t in doc["tags"]}
    assert set(shown) == _refs(plan, "two"), "exactly the changed cell's tags, per-platform tags included"
    rows = [row for t in shown.values() for row in t["platforms"]]
    assert len(rows) == 6  # the index's three platforms, and each per-platform tag
    for row in rows:
        assert row["change"] == "changed"
        assert row["layers_delta"] == 1
        assert row["new"]["layers"] == before[row["platform"]] + 1
        assert row["bytes_delta"] > 0
        assert row["bytes_delta"] == row["new"]["bytes"] - row["old"]["bytes"]
    total = len(_refs(plan, "bb") | _refs(plan, "one") | _refs(plan, "two"))
    assert doc["summary"] == {"compared": total, "changed": 4, "new": 0, "removed": 0, "unchanged": total - 4}

    _, everything = _diff(cfg, "--all")  # the default, once a release is recorded: --previous
    unchanged = {t["ref"] for t in everything["tags"] if t["change"] == "unchanged"}
    assert unchanged == _refs(plan, "bb") | _refs(plan, "one")

    table = multibake("diff", "-c", str(cfg))
    assert table.returncode == 0
    assert "4 changed, 0 new, 0 removed" in table.stdout
    assert "two:1-armv7  armv7     changed" in table.stdout


def test_diff_against_another_namespace(stack: None, tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:8]
    prod, ns = f"127.0.0.1:5000/diffprod-{uid}", f"127.0.0.1:5000/diffnew-{uid}"
    cfg = _two_leaves(tmp_path, ns, LEAF)
    code, _, err = push(cfg, "--registry", prod, env=SDE)  # prod: the release as it was
    assert code == 0, err[-3000:]
    _two_leaves(tmp_path, ns, f"{LEAF}\nRUN echo changed > /changed")
    code, _, err = push(cfg, env=SDE)
    assert code == 0, err[-3000:]

    code, doc = _diff(cfg, "--against", prod, "--all")
    assert code == 0
    assert doc["mode"] == "against" and doc["old"] == prod and doc["new"] == ns
    change = {t["ref"].removeprefix(ns + "/"): t for t in doc["tags"]}
    assert {ref for ref, t in change.items() if t["change"] == "unchanged"} == {
        "bb:latest",
        *(f"bb:latest-{s}" for s in ("amd64", "arm64", "armv7")),
    }, "the same busybox image in both namespaces"
    for ref in ("two:1", "two:1-arm64"):
        assert change[ref]["old_ref"] == f"{prod}/{ref}"
        assert {row["layers_delta"] for row in change[ref]["platforms"]} == {1}
    # a child names its parent's tag (base.name), which is another namespace's: its image differs by
    # that label alone, with the same layers
    for row in change["one:1"]["platforms"]:
        assert row["change"] == "changed" and row["layers_delta"] == 0 and row["bytes_delta"] == 0
        assert (
            row["base_changed"]
            and row["old"]["base"] == f"{prod}/bb:latest"
            and row["new"]["base"] == f"{ns}/bb:latest"
        )
    assert doc["summary"]["new"] == doc["summary"]["removed"] == 0
