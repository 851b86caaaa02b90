"""The repository's own platforms.yaml and the sample configs: facts of the base images, and the schema.

The pairings and platform lists below are facts about upstream images, with their source:
- Alpine's own ``nodejs`` package per release (DESIGN.md);
- Node's official images per major and variant: nodejs/docker-node ``versions.json``;
- distroless Node.js per major: GoogleContainerTools/distroless ``nodejs/config.bzl``
  (``arm`` is linux/arm/v7 there, ``distro.bzl``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from multibake.bake import hcl
from multibake.cli import app as cli
from multibake.plan.model import Plan
from tests.helpers import RELEASE_CONFIG, REPO_ROOT, SHIPPED_CONFIG, plan_file

ALPINE_NODEJS = {"3.19": "20", "3.20": "20", "3.21": "22", "3.22": "22", "3.23": "24"}
AMD64, ARM64, ARMV7 = "linux/amd64", "linux/arm64", "linux/arm/v7"
# (runtime, Node.js major) → platforms of the base images the node-app cell uses (builder and runtime)
NODE_APP_BASES = {
    # node:<major>-alpine3.23
    ("alpine", "22"): {AMD64, ARM64, ARMV7},
    ("alpine", "24"): {AMD64, ARM64},
    # node:<major>-bookworm (builder) and node:<major>-bookworm-slim
    ("slim", "22"): {AMD64, ARM64, ARMV7},
    ("slim", "24"): {AMD64, ARM64},
    # node:<major>-bookworm (builder) and gcr.io/distroless/nodejs<major>-debian13
    ("distroless", "22"): {AMD64, ARM64, ARMV7},
    ("distroless", "24"): {AMD64, ARM64},
}
S6_ARCH = {AMD64: "x86_64", ARM64: "aarch64", ARMV7: "arm"}
CONFIGS = [
    RELEASE_CONFIG,
    SHIPPED_CONFIG,
    REPO_ROOT / "samples" / "offline" / "platforms.yaml",
    REPO_ROOT / "samples" / "debian" / "platforms.yaml",
    REPO_ROOT / "samples" / "node-app" / "platforms.yaml",
]


@pytest.fixture(scope="module")
def release() -> Plan:
    return plan_file(RELEASE_CONFIG)


def test_release_validates(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.run(["validate", "-c", str(RELEASE_CONFIG)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"{RELEASE_CONFIG}: OK (3 families, ")


def test_alpine_nodejs_cells_pair_each_release_with_its_own_node_major(release: Plan) -> None:
    cells = [c for c in release.cells if c.family == "alpine-s6-nodejs"]
    assert cells
    for cell in cells:
        axes = dict(cell.axes)
        assert axes["node"] == ALPINE_NODEJS[axes["alpine"]], cell.target
        assert dict(cell.args)["NODE_MAJOR"] == axes["node"]


def test_every_alpine_release_with_nodejs_is_built(release: Plan) -> None:
    bases = {dict(c.axes)["alpine"] for c in release.cells if c.family == "alpine-s6-overlay"}
    children = {dict(c.axes)["alpine"] for c in release.cells if c.family == "alpine-s6-nodejs"}
    assert children == bases


def test_s6_overlay_tarball_per_platform_comes_from_the_architecture_table(release: Plan) -> None:
    cells = [c for c in release.cells if c.family == "alpine-s6-overlay"]
    assert cells
    for cell in cells:
        assert cell.split, "S6_ARCH varies by platform: one bake target per platform"
        assert {t.platform: dict(t.args)["S6_ARCH"] for t in cell.split} == {p: S6_ARCH[p] for p in cell.platforms}


def test_node_app_cells_build_on_the_platforms_their_bases_publish(release: Plan) -> None:
    cells = [c for c in release.cells if c.family == "node-app"]
    seen = set()
    for cell in cells:
        axes = dict(cell.axes)
        key = (axes["runtime"], axes["node"])
        seen.add(key)
        # every platform multibake builds for (amd64, arm64, arm/v7) that the bases publish: no more, no less
        assert set(cell.platforms) == NODE_APP_BASES[key] & {AMD64, ARM64, ARMV7}, cell.target
        assert dict(cell.args) == {"NODE_MAJOR": axes["node"], "RUNTIME": axes["runtime"]}
    assert seen == set(NODE_APP_BASES)


def test_node_app_runtime_stages_exist_for_every_runtime(release: Plan) -> None:
    text = (REPO_ROOT / "images" / "node-app" / "Dockerfile").read_text(encoding="utf-8")
    for runtime in {dict(c.axes)["runtime"] for c in release.cells if c.family == "node-app"}:
        assert f" AS builder-{runtime}\n" in text
        assert f" AS runtime-{runtime}\n" in text


def test_release_renders(release: Plan) -> None:
    text = hcl.render_hcl(release, "platforms.yaml")
    assert 'target "node-app-22-distroless"' in text
    json.loads(hcl.render_json(release))


# --- the JSON Schema, used as the YAML language server uses it ------------------------------------


def _schema_from_cli(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert cli.run(["schema"]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_config_validates_against_the_published_schema(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    doc = _schema_from_cli(capsys)
    jsonschema.Draft202012Validator.check_schema(doc)
    # what a YAML language server sees: plain YAML 1.1 data (the files quote versions such as "3.20")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = sorted(jsonschema.Draft202012Validator(doc).iter_errors(data), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("fragment", "where"),
    [
        ({"registry": "r", "platforms": ["linux/amd64"], "images": {}}, "images"),
        ({"registry": "r", "platforms": ["linux/amd64"], "images": {"a": {"context": "."}}, "extra": 1}, ""),
        ({"registry": "r", "platforms": ["linux/amd64"], "images": {"a": {"contxt": "."}}}, "images/a"),
        ({"registry": "r", "platforms": ["linux/amd64"], "images": {"a": {"context": ".", "matrix": {"x": 3.2}}}}, ""),
    ],
)
def test_schema_refuses_what_validate_refuses(
    capsys: pytest.CaptureFixture[str], fragment: dict[str, Any], where: str
) -> None:
    doc = _schema_from_cli(capsys)
    errors = list(jsonschema.Draft202012Validator(doc).iter_errors(fragment))
    assert errors, fragment
    if where:
        assert any("/".join(str(p) for p in e.absolute_path).startswith(where) for e in errors), errors
