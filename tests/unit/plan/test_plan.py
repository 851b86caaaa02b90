"""plan.py: the contract of the shipped platforms.yaml and the rules of matrix expansion.

Pure tests: ``plan(loaded, meta)`` with a fixed Meta, configs written to tmp_path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from multibake.bake import hcl
from multibake.config import schema as config
from multibake.config.load import load
from multibake.errors import ConfigError, UsageError
from multibake.plan.model import Cell, Meta, Plan, View
from multibake.plan.pieces import target_name
from multibake.plan.planner import plan
from multibake.plan.transforms import restrict, select
from multibake.refs import image_name
from multibake.release import provenance
from tests.helpers import FIXED_META, REPO_ROOT, SHIPPED_CONFIG, plan_file, plan_text, write_config

REG = "localhost:5000/multibake"
OVERLAY = f"{REG}/alpine-s6-overlay"
NODEJS = f"{REG}/alpine-s6-nodejs"
ALL3 = ("linux/amd64", "linux/arm64", "linux/arm/v7")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

# The shipped matrix, written out by hand from platforms.yaml: target → (axes, tags, platforms, parent)
SHIPPED: dict[str, tuple[dict[str, str], list[str], tuple[str, ...], str | None]] = {
    "alpine-s6-overlay-3_19-3_1_6_2": (
        {"alpine": "3.19", "s6_overlay": "3.1.6.2"},
        [f"{OVERLAY}:3.19-3.1.6.2"],
        ALL3,
        None,
    ),
    "alpine-s6-overlay-3_20-3_1_6_2": (
        {"alpine": "3.20", "s6_overlay": "3.1.6.2"},
        [f"{OVERLAY}:3.20-3.1.6.2"],
        ALL3,
        None,
    ),
    "alpine-s6-overlay-3_20-3_2_0_2": (
        {"alpine": "3.20", "s6_overlay": "3.2.0.2"},
        [f"{OVERLAY}:3.20-3.2.0.2", f"{OVERLAY}:3.20"],
        ALL3,
        None,
    ),
    "alpine-s6-overlay-3_21-3_1_6_2": (
        {"alpine": "3.21", "s6_overlay": "3.1.6.2"},
        [f"{OVERLAY}:3.21-3.1.6.2"],
        ALL3,
        None,
    ),
    "alpine-s6-overlay-3_21-3_2_0_2": (
        {"alpine": "3.21", "s6_overlay": "3.2.0.2"},
        [f"{OVERLAY}:3.21-3.2.0.2", f"{OVERLAY}:3.21"],
        ALL3,
        None,
    ),
    "alpine-s6-nodejs-3_20-3_2_0_2-20": (
        {"alpine": "3.20", "s6_overlay": "3.2.0.2", "node": "20"},
        [f"{NODEJS}:20-alpine3.20"],
        ALL3,
        "alpine-s6-overlay-3_20-3_2_0_2",
    ),
    "alpine-s6-nodejs-3_20-3_2_0_2-22": (
        {"alpine": "3.20", "s6_overlay": "3.2.0.2", "node": "22"},
        [f"{NODEJS}:22-alpine3.20"],
        ALL3,
        "alpine-s6-overlay-3_20-3_2_0_2",
    ),
    "alpine-s6-nodejs-3_21-3_2_0_2-20": (
        {"alpine": "3.21", "s6_overlay": "3.2.0.2", "node": "20"},
        [f"{NODEJS}:20-alpine3.21", f"{NODEJS}:20"],
        ALL3,
        "alpine-s6-overlay-3_21-3_2_0_2",
    ),
    "alpine-s6-nodejs-3_21-3_2_0_2-22": (
        {"alpine": "3.21", "s6_overlay": "3.2.0.2", "node": "22"},
        [f"{NODEJS}:22-alpine3.21", f"{NODEJS}:22"],
        ALL3,
        "alpine-s6-overlay-3_21-3_2_0_2",
    ),
    "alpine-s6-nodejs-3_19-3_1_6_2-18": (
        {"alpine": "3.19", "s6_overlay": "3.1.6.2", "node": "18"},
        [f"{NODEJS}:18-alpine3.19"],
        ("linux/amd64", "linux/arm64"),
        "alpine-s6-overlay-3_19-3_1_6_2",
    ),
}
NODE18 = "alpine-s6-nodejs-3_19-3_1_6_2-18"
NODE18_VIEW = "alpine-s6-overlay-3_19-3_1_6_2--amd64-arm64"


@pytest.fixture(scope="module")
def shipped() -> Plan:
    return plan_file(SHIPPED_CONFIG)


def shipped_variant(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the shipped platforms.yaml with one piece of text replaced."""
    text = SHIPPED_CONFIG.read_text(encoding="utf-8")
    assert old in text, old
    return write_config(tmp_path, text.replace(old, new))


# --- the shipped platforms.yaml ----------------------------------------------------------------


def test_shipped_has_ten_cells_in_order(shipped: Plan) -> None:
    assert len(shipped.cells) == 10
    assert [c.target for c in shipped.cells] == list(SHIPPED)


def test_shipped_first_cell(shipped: Plan) -> None:
    first = shipped.cells[0]
    assert first.tags == ("localhost:5000/multibake/alpine-s6-overlay:3.19-3.1.6.2",)
    assert first.target == "alpine-s6-overlay-3_19-3_1_6_2"
    assert first.args == (("ALPINE_VERSION", "3.19"), ("S6_OVERLAY_VERSION", "3.1.6.2"))
    assert first.context == "images/alpine-s6-overlay"
    assert first.dockerfile == "Dockerfile"
    assert first.stage is None
    assert first.image == OVERLAY


@pytest.mark.parametrize("target", list(SHIPPED))
def test_shipped_cell(shipped: Plan, target: str) -> None:
    axes, tags, platforms, parent = SHIPPED[target]
    cell = shipped.cell(target)
    assert dict(cell.axes) == axes
    assert list(cell.tags) == tags
    assert cell.platforms == platforms
    assert cell.parent == parent


def test_shipped_families(shipped: Plan) -> None:
    assert [(f.name, f.image, f.base) for f in shipped.families] == [
        ("alpine-s6-overlay", OVERLAY, None),
        ("alpine-s6-nodejs", NODEJS, "alpine-s6-overlay"),
    ]
    assert shipped.families[0].targets == tuple(list(SHIPPED)[:5])
    assert shipped.families[1].targets == tuple(list(SHIPPED)[5:])
    assert shipped.registry == REG


def test_shipped_exclude_removes_319_with_s6_32(shipped: Plan) -> None:
    assert "alpine-s6-overlay-3_19-3_2_0_2" not in {c.target for c in shipped.cells}


def test_shipped_when_tags(shipped: Plan) -> None:
    floating = {
        c.target: [t for t in c.tags if t.rsplit(":", 1)[1] in ("3.20", "3.21", "20", "22")] for c in shipped.cells
    }
    assert floating["alpine-s6-overlay-3_20-3_2_0_2"] == [f"{OVERLAY}:3.20"]
    assert floating["alpine-s6-overlay-3_20-3_1_6_2"] == []
    assert floating["alpine-s6-nodejs-3_21-3_2_0_2-22"] == [f"{NODEJS}:22"]
    assert floating["alpine-s6-nodejs-3_20-3_2_0_2-22"] == []


def test_shipped_args(shipped: Plan) -> None:
    assert shipped.cell("alpine-s6-nodejs-3_21-3_2_0_2-22").args == (("NODE_MAJOR", "22"),)
    assert shipped.cell("alpine-s6-overlay-3_21-3_2_0_2").args == (
        ("ALPINE_VERSION", "3.21"),
        ("S6_OVERLAY_VERSION", "3.2.0.2"),
    )


def test_shipped_parents_resolved_on_shared_axes(shipped: Plan) -> None:
    for cell in shipped.cells:
        if cell.family != "alpine-s6-nodejs":
            continue
        assert cell.parent is not None
        parent = shipped.cell(cell.parent)
        axes, paxes = dict(cell.axes), dict(parent.axes)
        assert (axes["alpine"], axes["s6_overlay"]) == (paxes["alpine"], paxes["s6_overlay"])
        assert dict(cell.labels)["org.opencontainers.image.base.name"] == parent.tags[0]


def test_shipped_node18_include_gets_a_platform_subset_view(shipped: Plan) -> None:
    cell = shipped.cell(NODE18)
    assert cell.platforms == ("linux/amd64", "linux/arm64")
    assert cell.parent == "alpine-s6-overlay-3_19-3_1_6_2"
    assert cell.base_context == NODE18_VIEW
    assert shipped.views == (
        View(target=NODE18_VIEW, parent="alpine-s6-overlay-3_19-3_1_6_2", platforms=("linux/amd64", "linux/arm64")),
    )
    attrs = hcl.target_attrs(cell)
    assert attrs["contexts"] == {"base": f"target:{NODE18_VIEW}"}


def test_shipped_children_with_parent_platforms_use_the_parent_target(shipped: Plan) -> None:
    cell = shipped.cell("alpine-s6-nodejs-3_20-3_2_0_2-20")
    assert cell.base_context == "alpine-s6-overlay-3_20-3_2_0_2"
    assert hcl.target_attrs(cell)["contexts"] == {"base": "target:alpine-s6-overlay-3_20-3_2_0_2"}
    assert hcl.target_attrs(shipped.cells[0]).get("contexts") is None


def test_shipped_per_platform_tags_suffix(shipped: Plan) -> None:
    cell = shipped.cell("alpine-s6-overlay-3_20-3_2_0_2")
    assert dict(cell.platform_tags) == {
        "linux/amd64": (f"{OVERLAY}:3.20-3.2.0.2-amd64", f"{OVERLAY}:3.20-amd64"),
        "linux/arm64": (f"{OVERLAY}:3.20-3.2.0.2-arm64", f"{OVERLAY}:3.20-arm64"),
        "linux/arm/v7": (f"{OVERLAY}:3.20-3.2.0.2-armv7", f"{OVERLAY}:3.20-armv7"),
    }
    node18 = shipped.cell(NODE18)
    assert dict(node18.platform_tags) == {
        "linux/amd64": (f"{NODEJS}:18-alpine3.19-amd64",),
        "linux/arm64": (f"{NODEJS}:18-alpine3.19-arm64",),
    }


def test_per_platform_tags_prefix(tmp_path: Path) -> None:
    p = plan_file(shipped_variant(tmp_path, "per_platform_tags: suffix", "per_platform_tags: prefix"))
    cell = p.cell("alpine-s6-overlay-3_20-3_2_0_2")
    assert dict(cell.platform_tags) == {
        "linux/amd64": (f"{OVERLAY}:amd64-3.20-3.2.0.2", f"{OVERLAY}:amd64-3.20"),
        "linux/arm64": (f"{OVERLAY}:arm64v8-3.20-3.2.0.2", f"{OVERLAY}:arm64v8-3.20"),
        "linux/arm/v7": (f"{OVERLAY}:arm32v7-3.20-3.2.0.2", f"{OVERLAY}:arm32v7-3.20"),
    }
    # the multi-arch tags themselves do not change
    assert cell.tags == (f"{OVERLAY}:3.20-3.2.0.2", f"{OVERLAY}:3.20")


def test_per_platform_tags_none(tmp_path: Path) -> None:
    p = plan_file(shipped_variant(tmp_path, "per_platform_tags: suffix", "per_platform_tags: none"))
    assert all(c.platform_tags == () for c in p.cells)
    assert p.cell("alpine-s6-overlay-3_20-3_2_0_2").tags == (f"{OVERLAY}:3.20-3.2.0.2", f"{OVERLAY}:3.20")


def test_per_platform_tags_for_arm_v6_suffix_and_prefix(tmp_path: Path) -> None:
    text = """
    registry: r.example.com/ns
    platforms: [linux/arm/v6]
    per_platform_tags: {style}
    images:
      app:
        context: app
        matrix: {{v: ["1.0"]}}
    """
    p = plan_text(tmp_path, text.format(style="suffix"))
    assert p.cells[0].platform_tags == (("linux/arm/v6", ("r.example.com/ns/app:1.0-armv6",)),)
    p = plan_text(tmp_path, text.format(style="prefix"))
    assert p.cells[0].platform_tags == (("linux/arm/v6", ("r.example.com/ns/app:arm32v6-1.0",)),)


def test_all_shipped_references_are_unique_and_valid(shipped: Plan) -> None:
    refs = [t for c in shipped.cells for t in c.tags] + [
        r for c in shipped.cells for _, refs in c.platform_tags for r in refs
    ]
    assert len(refs) == len(set(refs))
    for ref in refs:
        assert TAG_RE.fullmatch(ref.rsplit(":", 1)[1]), ref


# --- labels ------------------------------------------------------------------------------------


def test_oci_labels(shipped: Plan) -> None:
    assert dict(shipped.cells[0].labels) == {
        "org.opencontainers.image.title": "alpine-s6-overlay",
        "org.opencontainers.image.version": "3.19-3.1.6.2",
        "org.opencontainers.image.created": FIXED_META.created,
        "org.opencontainers.image.revision": FIXED_META.revision,
        "org.opencontainers.image.source": FIXED_META.source,
    }
    child = dict(shipped.cell("alpine-s6-nodejs-3_21-3_2_0_2-22").labels)
    assert child["org.opencontainers.image.title"] == "alpine-s6-nodejs"
    assert child["org.opencontainers.image.version"] == "22-alpine3.21"
    assert child["org.opencontainers.image.base.name"] == f"{OVERLAY}:3.21-3.2.0.2"


def test_labels_sorted_by_key(shipped: Plan) -> None:
    for cell in shipped.cells:
        keys = [k for k, _ in cell.labels]
        assert keys == sorted(keys)


def test_labels_without_revision_or_source(tmp_path: Path) -> None:
    p = plan_file(SHIPPED_CONFIG, meta=Meta(created="2020-01-01T00:00:00Z"))
    labels = dict(p.cells[0].labels)
    assert "org.opencontainers.image.revision" not in labels
    assert "org.opencontainers.image.source" not in labels
    assert labels["org.opencontainers.image.created"] == "2020-01-01T00:00:00Z"


def test_source_in_file_beats_the_checkout_remote(tmp_path: Path) -> None:
    path = shipped_variant(tmp_path, "cache:\n", "source: https://git.example.com/ours\ncache:\n")
    labels = dict(plan_file(path).cells[0].labels)
    assert labels["org.opencontainers.image.source"] == "https://git.example.com/ours"


def test_user_labels_are_templated_and_added(tmp_path: Path) -> None:
    p = plan_text(
        tmp_path,
        """
        registry: r.example.com/ns
        platforms: [linux/amd64]
        images:
          app:
            context: app
            matrix: {v: ["1.0", "2.0"]}
            labels:
              org.example.version: "v{v} {{literal}}"
        """,
    )
    assert dict(p.cells[1].labels)["org.example.version"] == "v2.0 {literal}"


def test_created_honours_source_date_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    meta = provenance.resolve(tmp_path)
    assert meta.created == "2023-11-14T22:13:20Z"
    p = plan(load(SHIPPED_CONFIG), meta)
    assert {dict(c.labels)["org.opencontainers.image.created"] for c in p.cells} == {"2023-11-14T22:13:20Z"}


def test_outside_git_created_is_the_config_files_time_not_the_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unchanged checkout that is no git work tree (a source archive, a copy) dates every run alike."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    config = tmp_path / "platforms.yaml"
    config.write_text("platforms: [linux/amd64]\n", encoding="utf-8")
    os.utime(config, (1700000000, 1700000000))
    assert provenance.resolve(tmp_path, config).created == "2023-11-14T22:13:20Z"
    assert provenance.resolve(tmp_path, config) == provenance.resolve(tmp_path, config)


def test_bad_source_date_epoch_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        provenance.resolve(tmp_path)


@pytest.mark.parametrize(
    ("remote", "public"),
    [
        ("https://user:token@github.com/org/repo.git", "https://github.com/org/repo"),
        ("https://x-access-token:ghp_abc@github.com/org/repo", "https://github.com/org/repo"),
        ("git@github.com:org/repo.git", "https://github.com/org/repo"),
        ("https://gitlab.example.com/group/sub/repo.git", "https://gitlab.example.com/group/sub/repo"),
    ],
)
def test_public_url_never_leaks_credentials(remote: str, public: str) -> None:
    assert provenance.public_url(remote) == public


# --- templates, quoting, defaults --------------------------------------------------------------


def test_matrix_values_keep_their_text(tmp_path: Path) -> None:
    p = plan_text(
        tmp_path,
        """
        registry: r.example.com/ns
        platforms: [linux/amd64]
        images:
          app:
            context: app
            matrix:
              v: [3.20, 3.10, 1.0, 010, yes, on]
            args: {V: "{v}"}
            tags: ["v{v}"]
        """,
    )
    values = ["3.20", "3.10", "1.0", "010", "yes", "on"]
    assert [dict(c.axes)["v"] for c in p.cells] == values
    assert [dict(c.args)["V"] for c in p.cells] == values
    assert [c.tags[0] for c in p.cells] == [f"r.example.com/ns/app:v{v}" for v in values]
    assert [c.target for c in p.cells] == ["app-3_20", "app-3_10", "app-1_0", "app-010", "app-yes", "app-on"]


def test_default_tags_join_axis_values(tmp_path: Path) -> None:
    p = plan_text(
        tmp_path,
        """
        registry: r.example.com/ns
        platforms: [linux/amd64]
        images:
          app:
            context: app
            matrix:
              a: ["3.20"]
              b: ["1.0", "2"]
        """,
    )
    assert [c.tags for c in p.cells] == [("r.example.com/ns/app:3.20-1.0",), ("r.example.com/ns/app:3.20-2",)]


def test_family_without_matrix_gets_latest(tmp_path: Path) -> None:
    p = plan_text(
        tmp_path,
        """
        registry: r.example.com/ns
        platforms: [linux/amd64]
        images:
          app:
            context: app
        """,
    )
    assert len(p.cells) == 1
    assert p.cells[0].tags == ("r.example.com/ns/app:latest",)
    assert p.cells[0].axes == ()
    names = [n for n, _ in hcl.groups(p)] + [c.target for c in p.cells]
    assert len(names) == len(set(names)), "bake groups and targets share one namespace"
    # the default group still reaches the family's only target
    assert dict(hcl.groups(p))["default"] == ["app"]


def test_template_braces_escape_and_spaces(tmp_path: Path) -> None:
    p = plan_text(
        tmp_path,
        """
        registry: r.example.com/ns
        platforms: [linux/amd64]
        images:
          app:
            context: "ctx-{ v }"
            dockerfile: "Dockerfile.{v}"
            target: final
            matrix: {v: ["1"]}
            args:
              A: "{{v}} is {v}; }} {{"
        """,
    )
    cell = p.cells[0]
    assert dict(cell.args)["A"] == "{v} is 1; } {"
    assert cell.context == "ctx-1"
    assert cell.dockerfile == "Dockerfile.1"
    assert cell.stage == "final"
    assert hcl.target_attrs(cell)["target"] == "final"


def test_target_name_function() -> None:
    assert target_name("alpine-s6-overlay", ["3.20", "3.2.0.2"]) == "alpine-s6-overlay-3_20-3_2_0_2"
    assert target_name("f", ["a/b", "x y", "é"]) == "f-a_b-x_y-_"
    assert target_name("f", []) == "f"


# --- exclude / include -------------------------------------------------------------------------

XI = """
registry: r.example.com/ns
platforms: [linux/amd64, linux/arm64]
images:
  app:
    context: app
    matrix:
      a: ["1", "2", "3"]
      b: ["x", "y"]
{extra}
"""


def test_exclude_with_list_values(tmp_path: Path) -> None:
    p = plan_text(tmp_path, XI.format(extra='    exclude:\n      - {a: ["1", "2"], b: x}\n      - {a: "3"}'))
    assert [dict(c.axes) for c in p.cells] == [{"a": "1", "b": "y"}, {"a": "2", "b": "y"}]


def test_include_appends_new_cells_after_the_matrix(tmp_path: Path) -> None:
    p = plan_text(tmp_path, XI.format(extra='    include:\n      - {a: "4", b: z}'))
    assert [c.target for c in p.cells][-1] == "app-4-z"
    assert len(p.cells) == 7
    assert p.cells[-1].platforms == ("linux/amd64", "linux/arm64")


def test_include_with_platforms_overrides_an_existing_cell_in_place(tmp_path: Path) -> None:
    p = plan_text(tmp_path, XI.format(extra='    include:\n      - {a: "2", b: y, platforms: [arm64]}'))
    assert len(p.cells) == 6
    assert p.cells[3].target == "app-2-y"
    assert p.cells[3].platforms == ("linux/arm64",)
    assert dict(p.cells[3].platform_tags) == {"linux/arm64": ("r.example.com/ns/app:2-y-arm64",)}


def test_include_after_exclude_can_bring_a_cell_back(tmp_path: Path) -> None:
    extra = '    exclude:\n      - {a: "1"}\n    include:\n      - {a: "1", b: x}'
    p = plan_text(tmp_path, XI.format(extra=extra))
    assert [c.target for c in p.cells] == ["app-2-x", "app-2-y", "app-3-x", "app-3-y", "app-1-x"]


def test_family_platforms_beat_global(tmp_path: Path) -> None:
    p = plan_text(tmp_path, XI.format(extra="    platforms: [linux/arm/v7]"))
    assert {c.platforms for c in p.cells} == {("linux/arm/v7",)}


def test_include_only_family_defines_its_axes(tmp_path: Path) -> None:
    p = plan_text(
        tmp_path,
        """
        registry: r.example.com/ns
        platforms: [linux/amd64]
        images:
          app:
            context: app
            include:
              - {v: "1", w: a}
              - {v: "2", w: b}
        """,
    )
    assert [(c.target, c.tags) for c in p.cells] == [
        ("app-1-a", ("r.example.com/ns/app:1-a",)),
        ("app-2-b", ("r.example.com/ns/app:2-b",)),
    ]


def test_exclude_removing_every_cell_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"images\.app"):
        plan_text(tmp_path, XI.format(extra='    exclude:\n      - {b: ["x", "y"]}'))


def test_tags_deduplicated_within_a_cell(tmp_path: Path) -> None:
    p = plan_text(
        tmp_path,
        """
        registry: r.example.com/ns
        platforms: [linux/amd64]
        images:
          app:
            context: app
            matrix: {v: ["1", "2"]}
            tags:
              - "{v}"
              - tag: "{v}"
                when: {v: "1"}
              - tag: latest
                when: {v: ["2"]}
        """,
    )
    assert [c.tags for c in p.cells] == [
        ("r.example.com/ns/app:1",),
        ("r.example.com/ns/app:2", "r.example.com/ns/app:latest"),
    ]


# --- registry / image ----------------------------------------------------------------------------


def test_registry_override_changes_tags_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = plan_file(SHIPPED_CONFIG, registry="registry.example.com/team")
    assert p.registry == "registry.example.com/team"
    assert p.cells[0].tags == ("registry.example.com/team/alpine-s6-overlay:3.19-3.1.6.2",)
    assert p.cells[0].cache_from == (
        "type=registry,ref=registry.example.com/team/buildcache:alpine-s6-overlay-3_19-3_1_6_2",
    )
    monkeypatch.setenv("MULTIBAKE_REGISTRY", "env.example.com/e")
    assert plan_file(SHIPPED_CONFIG).cells[0].tags == ("env.example.com/e/alpine-s6-overlay:3.19-3.1.6.2",)
    assert (
        plan_file(SHIPPED_CONFIG, registry="flag.example.com/f").cells[0].image
        == "flag.example.com/f/alpine-s6-overlay"
    )


@pytest.mark.parametrize("registry", ["localhost:5000", "127.0.0.1:5000", "registry.example.com:443"])
def test_registry_may_be_a_bare_host_with_port(tmp_path: Path, registry: str) -> None:
    p = plan_file(SHIPPED_CONFIG, registry=registry)
    assert p.cells[0].tags == (f"{registry}/alpine-s6-overlay:3.19-3.1.6.2",)


def test_registry_may_be_a_bare_domain(tmp_path: Path) -> None:
    p = plan_file(SHIPPED_CONFIG, registry="ghcr.io")
    assert p.cells[0].tags == ("ghcr.io/alpine-s6-overlay:3.19-3.1.6.2",)


def test_image_name() -> None:
    assert image_name("r.example.com/ns", "fam", None) == "r.example.com/ns/fam"
    assert image_name("r.example.com/ns/", "fam", None) == "r.example.com/ns/fam"
    assert image_name("r.example.com/ns", "fam", "team/app") == "r.example.com/ns/team/app"
    assert image_name("r.example.com/ns", "fam", "ghcr.io/org/app") == "ghcr.io/org/app"
    assert image_name("r.example.com/ns", "fam", "localhost:5000/app") == "localhost:5000/app"
    assert image_name("r.example.com/ns", "fam", "localhost/app") == "localhost/app"


def test_image_override(tmp_path: Path) -> None:
    text = """
    registry: r.example.com/ns
    platforms: [linux/amd64]
    images:
      rel:
        context: app
        image: team/thing
        matrix: {v: ["1"]}
      abs:
        context: app
        image: ghcr.io/org/thing
        matrix: {v: ["1"]}
    """
    p = plan_text(tmp_path, text)
    assert p.cell("rel-1").tags == ("r.example.com/ns/team/thing:1",)
    assert p.cell("abs-1").tags == ("ghcr.io/org/thing:1",)
    # an absolute image is not moved by a registry override
    p = plan_text(tmp_path, text, registry="other.example.com/x")
    assert p.cell("rel-1").tags == ("other.example.com/x/team/thing:1",)
    assert p.cell("abs-1").tags == ("ghcr.io/org/thing:1",)


# --- cache -------------------------------------------------------------------------------------


def _with_cache(tmp_path: Path, cache: str) -> Plan:
    return plan_file(shipped_variant(tmp_path, "cache:\n  type: registry", cache))


def test_registry_cache_one_ref_per_target(shipped: Plan) -> None:
    for cell in shipped.cells:
        ref = f"{REG}/buildcache:{cell.target}"
        assert cell.cache_from == (f"type=registry,ref={ref}",)
        assert cell.cache_to == (f"type=registry,ref={ref},mode=max,ignore-error=true",)
    exports = [c.cache_to[0].split(",")[1] for c in shipped.cells]
    assert len(exports) == len(set(exports)), "a registry cache ref must never be shared between targets"


def test_views_never_export_cache(shipped: Plan) -> None:
    for view in shipped.views:
        attrs = hcl.view_attrs(view)
        assert attrs["cache-to"] == []
        assert attrs["tags"] == []
        assert attrs["output"] == ["type=cacheonly"]


def test_registry_cache_repository_and_mode(tmp_path: Path) -> None:
    p = _with_cache(tmp_path, "cache:\n  type: registry\n  repository: cache.example.com/c\n  mode: min")
    cell = p.cells[0]
    assert cell.cache_from == (f"type=registry,ref=cache.example.com/c:{cell.target}",)
    assert cell.cache_to == (f"type=registry,ref=cache.example.com/c:{cell.target},mode=min,ignore-error=true",)


def test_local_cache(tmp_path: Path) -> None:
    p = _with_cache(tmp_path, "cache:\n  type: local\n  directory: /var/cache/mb/")
    for cell in p.cells:
        assert cell.cache_from == (f"type=local,src=/var/cache/mb/{cell.target}",)
        assert cell.cache_to == (f"type=local,dest=/var/cache/mb/{cell.target},mode=max,ignore-error=true",)
    p = _with_cache(tmp_path, "cache:\n  type: local")
    assert p.cells[0].cache_from == (f"type=local,src=.multibake/cache/{p.cells[0].target}",)


def test_gha_cache_scope_per_target(tmp_path: Path) -> None:
    p = _with_cache(tmp_path, "cache:\n  type: gha")
    for cell in p.cells:
        assert cell.cache_from == (f"type=gha,scope={cell.target}",)
        assert cell.cache_to == (f"type=gha,scope={cell.target},mode=max,ignore-error=true",)


def test_inline_cache(tmp_path: Path) -> None:
    p = _with_cache(tmp_path, "cache:\n  type: inline")
    for cell in p.cells:
        assert cell.cache_from == (f"type=registry,ref={cell.tags[0]}",)
        assert cell.cache_to == ("type=inline",)


def test_no_cache(tmp_path: Path) -> None:
    p = _with_cache(tmp_path, "cache:\n  type: none")
    assert all(c.cache_from == () and c.cache_to == () for c in p.cells)
    attrs = hcl.target_attrs(p.cells[0])
    assert "cache-from" not in attrs
    assert "cache-to" not in attrs


def test_long_target_names_get_valid_distinct_cache_tags(tmp_path: Path) -> None:
    long_a, long_b = "a" * 120 + "1", "a" * 120 + "2"
    p = plan_text(
        tmp_path,
        f"""
        registry: r.example.com/ns
        platforms: [linux/amd64]
        images:
          app:
            context: app
            matrix: {{v: ["{long_a}", "{long_b}"]}}
            tags: ["t{{v}}"]
        """,
    )
    tags = [c.cache_to[0].split(",")[1].rsplit(":", 1)[1] for c in p.cells]
    assert len(set(tags)) == 2
    for tag in tags:
        assert TAG_RE.fullmatch(tag), tag


# --- base / parents ----------------------------------------------------------------------------

FAMILIES = """
registry: r.example.com/ns
platforms: [linux/amd64, linux/arm64, linux/arm/v7]
images:
  child:
    context: child
    base: parent
    matrix:
      os: ["a", "b"]
      app: ["1"]
  parent:
    context: parent
    matrix:
      os: ["a", "b"]
"""


def test_parent_family_planned_first_whatever_the_file_order(tmp_path: Path) -> None:
    p = plan_text(tmp_path, FAMILIES)
    assert [f.name for f in p.families] == ["parent", "child"]
    assert [c.target for c in p.cells] == ["parent-a", "parent-b", "child-a-1", "child-b-1"]
    assert p.cell("child-b-1").parent == "parent-b"
    assert p.cell("child-b-1").base_context == "parent-b"
    assert p.views == ()
    assert [a.target for a in p.ancestors(p.cell("child-b-1"))] == ["parent-b"]


def test_child_without_shared_axes_uses_the_single_parent_cell(tmp_path: Path) -> None:
    p = plan_text(
        tmp_path,
        """
        registry: r.example.com/ns
        platforms: [linux/amd64]
        images:
          parent:
            context: parent
            matrix: {os: ["a"]}
          child:
            context: child
            base: parent
            matrix: {app: ["1", "2"]}
        """,
    )
    assert [c.parent for c in p.cells if c.family == "child"] == ["parent-a", "parent-a"]


def test_three_generations_and_ancestors(tmp_path: Path) -> None:
    p = plan_text(
        tmp_path,
        FAMILIES
        + """
  grandchild:
    context: gc
    base: child
    matrix:
      os: ["b"]
      app: ["1"]
      x: ["9"]
""",
    )
    gc = p.cell("grandchild-b-1-9")
    assert [a.target for a in p.ancestors(gc)] == ["child-b-1", "parent-b"]


def test_child_on_platform_subset_gets_a_view(tmp_path: Path) -> None:
    p = plan_text(tmp_path, FAMILIES.replace("    base: parent\n", "    base: parent\n    platforms: [arm64, amd64]\n"))
    cell = p.cell("child-a-1")
    assert cell.platforms == ("linux/arm64", "linux/amd64")
    assert cell.base_context == "parent-a--arm64-amd64"
    assert View(target="parent-a--arm64-amd64", parent="parent-a", platforms=("linux/arm64", "linux/amd64")) in p.views
    assert len(p.views) == 2  # one per parent cell, shared by every child that needs it


def _effective_contexts(p: Plan, name: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """A bake target's contexts and platforms after `inherits` (a view inherits its parent's)."""
    views = {v.target: v for v in p.views}
    if name in views:
        attrs = hcl.view_attrs(views[name])
        inherited = hcl.target_attrs(p.cell(views[name].parent)).get("contexts", {})
        return attrs.get("contexts", inherited), tuple(attrs["platforms"])
    cell = p.cell(name)
    return hcl.target_attrs(cell).get("contexts", {}), cell.platforms


def _assert_target_contexts_match_platforms(p: Plan) -> None:
    # bake refuses `target:` contexts defined for other platforms than the target using them
    names = [c.target for c in p.cells] + [v.target for v in p.views]
    for name in names:
        contexts, platforms = _effective_contexts(p, name)
        for ref in contexts.values():
            if ref.startswith("target:"):
                _, used = _effective_contexts(p, ref.removeprefix("target:"))
                # bake compares the platforms as sets (it sorts both lists)
                assert sorted(used) == sorted(platforms), f"{name} ({platforms}) uses {ref} built for {used}"


def test_target_contexts_match_platforms_for_shipped(shipped: Plan) -> None:
    _assert_target_contexts_match_platforms(shipped)


def test_views_narrow_the_whole_base_chain(tmp_path: Path) -> None:
    p = plan_text(
        tmp_path,
        """
        registry: r.example.com/ns
        platforms: [linux/amd64, linux/arm64, linux/arm/v7]
        images:
          g: {context: g, matrix: {v: ["1"]}}
          p: {context: p, base: g, matrix: {v: ["1"]}}
          c: {context: c, base: p, platforms: [linux/amd64, linux/arm64], matrix: {v: ["1"]}}
        """,
    )
    _assert_target_contexts_match_platforms(p)


# --- selection ---------------------------------------------------------------------------------


def _targets(p: Plan) -> list[str]:
    return [c.target for c in p.cells]


def test_select_nothing_is_everything(shipped: Plan) -> None:
    assert select(shipped, []) == shipped


def test_select_family(shipped: Plan) -> None:
    p = select(shipped, ["alpine-s6-overlay"])
    assert _targets(p) == list(SHIPPED)[:5]
    assert p.views == ()
    assert [f.name for f in p.families] == ["alpine-s6-overlay"]


def test_select_exact_target_includes_ancestors_and_its_view(shipped: Plan) -> None:
    p = select(shipped, [NODE18])
    assert _targets(p) == ["alpine-s6-overlay-3_19-3_1_6_2", NODE18]
    assert [v.target for v in p.views] == [NODE18_VIEW]
    assert [(f.name, f.targets) for f in p.families] == [
        ("alpine-s6-overlay", ("alpine-s6-overlay-3_19-3_1_6_2",)),
        ("alpine-s6-nodejs", (NODE18,)),
    ]


def test_select_glob(shipped: Plan) -> None:
    p = select(shipped, ["*-22"])
    assert _targets(p) == [
        "alpine-s6-overlay-3_20-3_2_0_2",
        "alpine-s6-overlay-3_21-3_2_0_2",
        "alpine-s6-nodejs-3_20-3_2_0_2-22",
        "alpine-s6-nodejs-3_21-3_2_0_2-22",
    ]
    assert p.views == ()


def test_select_family_with_axis_filter(shipped: Plan) -> None:
    p = select(shipped, ["alpine-s6-nodejs:node=22,alpine=3.21"])
    assert _targets(p) == ["alpine-s6-overlay-3_21-3_2_0_2", "alpine-s6-nodejs-3_21-3_2_0_2-22"]
    p = select(shipped, ["alpine-s6-overlay:alpine=3.20"])
    assert _targets(p) == ["alpine-s6-overlay-3_20-3_1_6_2", "alpine-s6-overlay-3_20-3_2_0_2"]


def test_select_axis_filter_on_all_families(shipped: Plan) -> None:
    p = select(shipped, [":s6_overlay=3.1.6.2"])
    assert _targets(p) == [
        "alpine-s6-overlay-3_19-3_1_6_2",
        "alpine-s6-overlay-3_20-3_1_6_2",
        "alpine-s6-overlay-3_21-3_1_6_2",
        NODE18,
    ]


def test_select_union_keeps_plan_order(shipped: Plan) -> None:
    p = select(shipped, ["alpine-s6-nodejs-3_21-3_2_0_2-20", "alpine-s6-overlay-3_19-3_1_6_2"])
    assert _targets(p) == [
        "alpine-s6-overlay-3_19-3_1_6_2",
        "alpine-s6-overlay-3_21-3_2_0_2",
        "alpine-s6-nodejs-3_21-3_2_0_2-20",
    ]


def test_select_unknown_selector_suggests(shipped: Plan) -> None:
    with pytest.raises(
        UsageError, match=r"selector 'alpine-s6-nodjs' matches no cell; did you mean 'alpine-s6-nodejs'\?"
    ):
        select(shipped, ["alpine-s6-nodjs"])


def test_select_bad_filter_syntax(shipped: Plan) -> None:
    with pytest.raises(UsageError, match="expected axis=value"):
        select(shipped, ["alpine-s6-nodejs:node"])


@pytest.mark.parametrize(
    ("selector", "fragment"), [("alpine-s6-nodejs:nod=22", "node"), ("alpine-s6-nodejs:node=99", "99")]
)
def test_select_filter_matching_nothing_explains_the_filter(shipped: Plan, selector: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        select(shipped, [selector])
    message = str(info.value)
    assert "did you mean 'alpine-s6-nodejs'" not in message
    assert fragment in message.replace(selector, "")


# --- determinism -------------------------------------------------------------------------------


def test_plan_is_deterministic() -> None:
    a = plan_file(SHIPPED_CONFIG)
    b = plan_file(SHIPPED_CONFIG)
    assert a == b
    assert [c.target for c in a.cells] == [c.target for c in b.cells]
    assert hcl.render_hcl(a) == hcl.render_hcl(b)


def test_plan_cells_are_frozen(shipped: Plan) -> None:
    cell: Cell = shipped.cells[0]
    with pytest.raises(AttributeError):
        cell.target = "x"  # type: ignore[misc]


# --- restricting to platforms (build --platform) -------------------------------------------------


def test_restrict_narrows_platforms_and_tags(shipped: Plan) -> None:
    p = restrict(shipped, ["linux/arm64"])
    assert len(p.cells) == 10
    assert {c.platforms for c in p.cells} == {("linux/arm64",)}
    assert all([x for x, _ in c.platform_tags] == ["linux/arm64"] for c in p.cells)
    # parent and child narrowed alike: no view needed
    assert p.views == ()
    assert p.cell(NODE18).base_context == "alpine-s6-overlay-3_19-3_1_6_2"


def test_restrict_drops_cells_without_a_wanted_platform(shipped: Plan) -> None:
    p = restrict(shipped, ["linux/arm/v7"])
    assert NODE18 not in [c.target for c in p.cells]
    assert len(p.cells) == 9
    assert [f.targets for f in p.families][1] == tuple(t for t in list(SHIPPED)[5:] if t != NODE18)


def test_restrict_keeps_a_view_when_the_child_is_still_narrower(shipped: Plan) -> None:
    p = restrict(shipped, ["linux/amd64", "linux/arm64", "linux/arm/v7"])
    assert p.cell(NODE18).base_context == NODE18_VIEW
    assert [v.target for v in p.views] == [NODE18_VIEW]


@pytest.mark.parametrize("registry", ["localhost:5000/team/", "localhost:5000/"])
def test_registry_trailing_slash_is_tolerated(registry: str) -> None:
    p = plan_file(SHIPPED_CONFIG, registry=registry)
    base = registry.rstrip("/")
    assert p.cells[0].tags == (f"{base}/alpine-s6-overlay:3.19-3.1.6.2",)
    assert p.cells[0].cache_from == (f"type=registry,ref={base}/buildcache:alpine-s6-overlay-3_19-3_1_6_2",)


@pytest.mark.parametrize("matrix", ['    matrix: {v: ["1", "2"]}\n', ""])
def test_family_named_default_does_not_shadow_the_default_group(tmp_path: Path, matrix: str) -> None:
    text = (
        "registry: r.example.com/ns\nplatforms: [linux/amd64]\nimages:\n"
        "  default:\n    context: ctx\n" + matrix + '  other:\n    context: ctx\n    matrix: {v: ["1"]}\n'
    )
    try:
        p = plan_text(tmp_path, text)
    except ConfigError as exc:
        assert "'default'" in str(exc)
        return
    groups = [name for name, _ in hcl.groups(p)]
    bake_names = groups + [c.target for c in p.cells] + [v.target for v in p.views]
    assert len(bake_names) == len(set(bake_names)), "bake groups and targets share one namespace"
    assert dict(hcl.groups(p))["default"] == [f.name for f in p.families]


# --- a family without a matrix, limits, secrets, the samples --------------------------------------


def test_family_without_matrix_has_one_target_apart_from_its_group(tmp_path: Path) -> None:
    p = plan_text(
        tmp_path,
        """
        registry: localhost:5000/t
        platforms: [linux/amd64]
        images:
          base: {context: base}
          app: {context: app, base: base}
        """,
    )
    assert [c.target for c in p.cells] == ["base--image", "app--image"]
    assert [c.tags for c in p.cells] == [("localhost:5000/t/base:latest",), ("localhost:5000/t/app:latest",)]
    assert p.cells[1].parent == "base--image"
    assert dict(hcl.groups(p)) == {"default": ["base", "app"], "base": ["base--image"], "app": ["app--image"]}


def test_offline_sample_keeps_its_tags_without_the_one_value_axis() -> None:
    p = plan_file(REPO_ROOT / "samples" / "offline" / "platforms.yaml")
    base = p.cells[0]
    assert base.target == "busybox-base--image"
    assert base.tags == (
        "127.0.0.1:5000/multibake-sample/busybox-base:1.35",
        "127.0.0.1:5000/multibake-sample/busybox-base:latest",
    )
    assert dict(base.args) == {"BUSYBOX_VERSION": "1.35"}
    assert {c.parent for c in p.cells[1:]} == {"busybox-base--image"}


@pytest.mark.parametrize(("limit", "ok"), [(6, True), (5, False)])
def test_max_cells_is_configurable(tmp_path: Path, limit: int, ok: bool) -> None:
    text = f"""
        registry: localhost:5000/t
        platforms: [linux/amd64]
        limits: {{max_cells: {limit}}}
        images:
          app:
            context: app
            matrix: {{a: ["1", "2", "3"], b: ["x", "y"]}}
        """
    if ok:
        assert len(plan_text(tmp_path, text).cells) == 6
    else:
        with pytest.raises(ConfigError, match=r"would expand to 6 cells, more than limits.max_cells \(5\)"):
            plan_text(tmp_path, text)


def test_default_ceiling_is_documented_value(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, "registry: r\nplatforms: [amd64]\nimages: {a: {context: a}}\n"))
    assert loaded.config.limits.max_cells == config.DEFAULT_MAX_CELLS == 100_000


def test_secrets_render_as_bake_secrets_never_args(tmp_path: Path) -> None:
    p = plan_text(
        tmp_path,
        """
        registry: localhost:5000/t
        platforms: [linux/amd64]
        images:
          app:
            context: app
            secrets:
              npm_token: {env: NPM_TOKEN}
              cert: {file: ./certs/ca.pem}
        """,
    )
    cell = p.cells[0]
    assert cell.secrets == ("id=npm_token,env=NPM_TOKEN", f"id=cert,src={tmp_path.resolve()}/certs/ca.pem")
    assert cell.args == ()
    attrs = hcl.target_attrs(cell)
    assert attrs["secret"] == list(cell.secrets)
    assert "NPM_TOKEN" not in str(attrs.get("args"))


@pytest.mark.parametrize(
    ("text", "want"), [("{{literal}}", "{literal}"), ("}} and {{", "} and {"), ("a {{v}} b {v}", "a {v} b 1")]
)
def test_doubled_braces_stay_the_escape(tmp_path: Path, text: str, want: str) -> None:
    p = plan_text(
        tmp_path,
        f"""
        registry: localhost:5000/t
        platforms: [linux/amd64]
        images:
          app: {{context: app, matrix: {{v: ["1"]}}, args: {{X: "{text}"}}}}
        """,
    )
    assert dict(p.cells[0].args)["X"] == want


@pytest.mark.parametrize("text", ["{node", "node}", "{{node}", "a}b{v}", "{v}}"])
def test_unbalanced_braces_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"unbalanced '[{}]' at character \d+"):
        plan_text(
            tmp_path,
            f"""
            registry: localhost:5000/t
            platforms: [linux/amd64]
            images:
              app: {{context: app, matrix: {{v: ["1"]}}, args: {{NODE_MAJOR: "{text}"}}}}
            """,
        )


# --- every ancestor agrees on the axes a cell shares with it -------------------------------------

_CHAIN = """
registry: r.example.com/x
platforms: [linux/amd64]
images:
  alpine:
    context: ctx
    matrix: {alpine: ["3.19", "3.20"]}
    tags: ["{alpine}"]
  s6:
    context: ctx
    base: alpine
    matrix: {alpine: ["3.19"], s6: ["3.2"]}
    tags: ["{s6}"]
  s6-any:
    context: ctx
    base: s6
    tags: ["latest"]
  node:
    context: ctx
    base: s6-any
    matrix: {alpine: ["ALPINE"], node: ["22"]}
    tags: ["{node}-alpine{alpine}"]
"""


def test_a_grandparent_on_another_value_of_a_shared_axis_is_refused_naming_the_chain(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(ConfigError) as info:
        plan_text(tmp_path, _CHAIN.replace("ALPINE", "3.20"))
    message = str(info.value)
    assert "images.node.base" in message and "alpine=3.20" in message
    assert "s6-any" in message and "s6-3_19-3_2" in message and "alpine=3.19" in message


def test_ancestors_that_agree_plan_as_before(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    p = plan_text(tmp_path, _CHAIN.replace("ALPINE", "3.19"))
    child = next(c for c in p.cells if c.family == "node")
    assert child.parent is not None and dict(child.axes)["alpine"] == "3.19"
