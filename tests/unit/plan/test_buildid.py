"""Content-addressed build ids: what changes a cell's id, and what does not."""

from __future__ import annotations

from pathlib import Path

from multibake.plan import buildid
from tests.helpers import make_context, plan_text

CONFIG = """
registry: 127.0.0.1:5000/t
platforms: [linux/amd64, linux/arm64]
images:
  bb:
    context: bb
  app:
    context: app
    base: bb
    matrix: {version: ["1.0", "2.0"]}
    args: {VERSION: "{version}"}
  other:
    context: other
"""


def _ids(root: Path) -> dict[str, str]:
    return buildid.compute(plan_text(root, CONFIG), root)


def _checkout(root: Path) -> Path:
    for context in ("bb", "app", "other"):
        make_context(root, context)
    return root


def test_ids_are_stable_and_content_addressed(tmp_path: Path) -> None:
    ids = _ids(_checkout(tmp_path))
    assert ids == _ids(tmp_path)
    assert all(i.startswith("sha256:") for i in ids.values())
    assert ids["app-1_0"] != ids["app-2_0"], "args count"
    # the id is what the image is made of, not its name: two identical contexts build the same image
    assert ids["bb--image"] == ids["other--image"]


def test_a_changed_dockerfile_changes_its_cell_and_children_only(tmp_path: Path) -> None:
    before = _ids(_checkout(tmp_path))
    (tmp_path / "bb" / "Dockerfile").write_text("FROM scratch\nCOPY x /x\n")
    after = _ids(tmp_path)
    assert {t for t in before if before[t] != after[t]} == {"bb--image", "app-1_0", "app-2_0"}


def test_a_dockerignored_file_changes_nothing_but_another_file_does(tmp_path: Path) -> None:
    _checkout(tmp_path)
    (tmp_path / "other" / ".dockerignore").write_text("# notes\nnotes\n")
    before = _ids(tmp_path)
    (tmp_path / "other" / "notes").write_text("scratch")
    assert _ids(tmp_path) == before
    (tmp_path / "other" / "data").write_text("payload")
    assert _ids(tmp_path)["other--image"] != before["other--image"]


def test_an_executable_bit_counts(tmp_path: Path) -> None:
    _checkout(tmp_path)
    script = tmp_path / "other" / "run.sh"
    script.write_text("#!/bin/sh\n")
    before = _ids(tmp_path)["other--image"]
    script.chmod(0o755)
    assert _ids(tmp_path)["other--image"] != before
