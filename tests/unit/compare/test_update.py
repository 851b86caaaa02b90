"""multibake update: version order, the proposal (a pure function), stale references, the command with
an in-memory registry (no network, no docker) and the in-place edit of platforms.yaml."""

from __future__ import annotations

import json
import stat
import textwrap
from pathlib import Path

import pytest

from multibake.cli import app as cli
from multibake.cli import options
from multibake.compare import update
from multibake.compare.update import AxisUpdate, Target, version
from multibake.config.load import load
from multibake.config.schema import UpdateRule
from multibake.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, BuildError, ConfigError
from multibake.registry.errors import RegistryError
from tests.helpers import RELEASE_CONFIG, write_config
from tests.unit.fakes import FakeRegistry

ALPINE = "docker.io/library/alpine"
NODE = "docker.io/library/node"
ALPINE_TAGS = ["3.9", "3.10", "3.19", "3.20", "3.21", "3.22", "3.23", "3.24", "3.25.0-rc1", "latest", "edge", "3"]


def rule(match: str = r"^3\.\d+$", **kw: object) -> UpdateRule:
    return UpdateRule.model_validate({"source": ALPINE, "match": match, **kw})


def target(r: UpdateRule | None = None) -> Target:
    return Target(family="app", axis="alpine", rule=r or rule())


def ordered(*values: str) -> list[str]:
    keys = [version(v) for v in values]
    assert all(k is not None for k in keys)
    return [k.text for k in sorted(k for k in keys if k is not None)]


# --- version order -----------------------------------------------------------------------------


def test_versions_are_ordered_by_their_numbers_not_their_text() -> None:
    assert ordered("3.10", "3.9", "3.2") == ["3.2", "3.9", "3.10"]
    assert ordered("24", "22", "4") == ["4", "22", "24"]
    assert ordered("3.2.10.0", "3.2.9.0", "3.2.1.0") == ["3.2.1.0", "3.2.9.0", "3.2.10.0"]
    assert ordered("v1.10.0", "v1.9.3") == ["v1.9.3", "v1.10.0"]


def test_a_pre_release_sorts_before_its_release_and_in_its_own_order() -> None:
    assert ordered("3.22.0", "3.22.0-rc10", "3.22.0-rc2", "3.22.0-beta1", "3.21.9") == [
        "3.21.9",
        "3.22.0-beta1",
        "3.22.0-rc2",
        "3.22.0-rc10",
        "3.22.0",
    ]


@pytest.mark.parametrize("value", ["3.22.0-rc1", "24-alpha", "1.0_beta", "3.0a1", "2.0.0-pre.3", "5-dev", "1.2-RC1"])
def test_pre_releases_are_recognised(value: str) -> None:
    parsed = version(value)
    assert parsed is not None and not parsed.final


@pytest.mark.parametrize("value", ["3.20", "22", "22-alpine", "3.2.3.2", "1.35-r1", "24-bookworm-slim"])
def test_releases_and_variants_are_not_pre_releases(value: str) -> None:
    parsed = version(value)
    assert parsed is not None and parsed.final


@pytest.mark.parametrize("value", ["latest", "edge", "bookworm", "", "-1"])
def test_a_value_without_a_leading_number_is_no_version(value: str) -> None:
    assert version(value) is None


# --- the proposal --------------------------------------------------------------------------------


def test_the_newest_versions_replace_the_axis_as_many_as_it_has() -> None:
    got = update.axis_update(target(), ["3.20", "3.21", "3.22"], ALPINE_TAGS)
    assert got.new == ("3.22", "3.23", "3.24")  # not 3.9 (3.9 < 3.24), not the rc, not latest/edge/3
    assert got.old == ("3.20", "3.21", "3.22")
    assert got.added == ("3.23", "3.24") and got.removed == ("3.20", "3.21")
    assert got.changed and got.problem is None and got.missing == ()
    assert all(isinstance(v, str) for v in got.new)


def test_keep_sets_how_many_and_values_stay_text() -> None:
    tags = ["3.2", "3.9", "3.10", "3.20"]
    assert update.axis_update(target(rule(keep=2)), ["3.9"], tags).new == ("3.10", "3.20")
    assert update.axis_update(target(rule(keep=10)), ["3.9"], tags).new == ("3.2", "3.9", "3.10", "3.20")


def test_pre_releases_only_when_the_rule_says_so() -> None:
    tags = ["3.21", "3.22", "3.23.0-rc1", "3.23.0_beta2"]
    strict = rule(r"^3\.\d+(\.0[-_](rc|beta)\d+)?$", keep=2)
    assert update.axis_update(target(strict), ["3.21"], tags).new == ("3.21", "3.22")
    loose = rule(r"^3\.\d+(\.0[-_](rc|beta)\d+)?$", keep=2, prerelease=True)
    assert update.axis_update(target(loose), ["3.21"], tags).new == ("3.23.0_beta2", "3.23.0-rc1")


def test_the_group_named_version_is_the_value_other_groups_are_not() -> None:
    tags = ["22.1.0-alpine", "22.11.0-alpine", "24.0.0-alpine", "24.2.1-alpine", "24.2.1", "26-alpine"]
    match = r"^(?P<version>\d+)\.\d+\.\d+-(alpine|slim)$"
    node = UpdateRule.model_validate({"source": NODE, "match": match, "keep": 2})
    got = update.axis_update(Target(family="n", axis="node", rule=node), ["20"], tags)
    assert got.new == ("22", "24")
    assert got.missing == ("20",)


def test_an_axis_written_newest_first_stays_newest_first() -> None:
    assert update.axis_update(target(), ["3.22", "3.21", "3.20"], ALPINE_TAGS).new == ("3.24", "3.23", "3.22")


def test_the_same_values_in_another_order_are_no_change() -> None:
    got = update.axis_update(target(), ["3.24", "3.22", "3.23", "3.21"], ALPINE_TAGS)
    assert got.new == got.old and not got.changed


def test_values_the_registry_no_longer_lists_are_reported() -> None:
    got = update.axis_update(target(), ["3.18", "3.24", "3.99"], ALPINE_TAGS)
    assert got.missing == ("3.18", "3.99")
    assert got.new == ("3.22", "3.23", "3.24")


def test_no_matching_tag_is_a_problem_and_the_axis_stays() -> None:
    got = update.axis_update(target(rule(r"^4\.\d+$")), ["3.21"], ALPINE_TAGS)
    assert got.new == ("3.21",) and not got.changed
    assert got.problem == f"no tag of {ALPINE} matches '^4\\\\.\\\\d+$'"
    only_pre = update.axis_update(target(rule(r"^3\.25\.0-rc\d+$")), ["3.21"], ALPINE_TAGS)
    assert only_pre.problem is not None and "set prerelease: true" in only_pre.problem


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("docker.io/library/alpine", None),
        ("alpine", None),
        ("127.0.0.1:5000/lib/alpine", None),
        ("alpine:3.21", "names a tag (or only a registry host)"),
        ("ghcr.io/acme/app:1", "names a tag; give the repository alone"),
        ("ghcr.io/acme/app@sha256:" + "a" * 64, "names a digest"),
        ("ghcr.io", "names a registry host; add the repository: ghcr.io/NAME"),
        ("localhost", "names a registry host"),
        ("ghcr.io/Acme/app", "component 'Acme' must be lowercase"),
    ],
)
def test_a_source_must_be_a_repository(source: str, problem: str | None) -> None:
    from multibake.refs import source_problem

    got = source_problem(source)
    assert (got is None) if problem is None else (got is not None and problem in got)


TWO_FAMILIES = """
registry: localhost:5000/test
platforms: [linux/amd64]
update:
  alpine: {source: docker.io/library/alpine, match: '^3\\.\\d+$'}
  node: {source: docker.io/library/node, match: '^\\d+$'}
images:
  base:
    context: .
    matrix:
      alpine: ["3.21", "3.22"]
  app:
    context: .
    base: base
    matrix:
      alpine: ["3.22"]
      node: ["22"]
    update:
      alpine: {source: "127.0.0.1:5000/mirror/alpine", match: '^3\\.\\d+$', keep: 1}
  pinned:
    context: .
    matrix:
      node: ["20"]
    update: {node: null}
"""


def test_a_top_level_rule_applies_to_every_family_with_the_axis_unless_the_family_says_otherwise(
    tmp_path: Path,
) -> None:
    loaded = load(write_config(tmp_path, TWO_FAMILIES))
    found = [(t.family, t.axis, t.rule.source, t.rule.keep) for t in update.targets(loaded.config)]
    assert found == [
        ("base", "alpine", ALPINE, None),
        ("app", "alpine", "127.0.0.1:5000/mirror/alpine", 1),  # app's own rule replaces the top-level one
        ("app", "node", NODE, None),
    ]  # pinned's node is turned off by null


def test_propose_reads_each_rules_own_source(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, TWO_FAMILIES))
    tags = {ALPINE: ["3.22", "3.23"], "127.0.0.1:5000/mirror/alpine": ["3.22", "3.30"], NODE: ["22", "24", "25"]}
    got = {(a.family, a.axis): a.new for a in update.propose(loaded.config, update.targets(loaded.config), tags)}
    assert got == {("base", "alpine"): ("3.22", "3.23"), ("app", "alpine"): ("3.30",), ("app", "node"): ("25",)}


# --- what the change leaves stale ------------------------------------------------------------------

STALE = """
registry: localhost:5000/test
platforms: [linux/amd64]
images:
  base:
    context: .
    matrix:
      alpine: ["3.21", "3.22"]
  app:
    context: .
    base: base
    matrix:
      alpine: ["3.21", "3.22"]
      node: ["22", "24"]
    exclude:
      - {alpine: "3.21", node: "24"}
      - {alpine: ["3.21", "3.22"], node: "22"}
    include:
      - {alpine: "3.21", node: "20"}
      - {alpine: "3.21", node: "22", platforms: [linux/amd64]}
    tags:
      - "{node}-{alpine}"
      - tag: "{node}"
        when: {alpine: "3.22"}
      - tag: "old"
        when: {alpine: "3.21"}
"""


def _axis(family: str, axis: str, old: tuple[str, ...], new: tuple[str, ...]) -> AxisUpdate:
    return AxisUpdate(family=family, axis=axis, source=ALPINE, old=old, new=new)


def test_excludes_includes_and_conditions_naming_a_removed_value_are_warned_about_with_their_place(
    tmp_path: Path,
) -> None:
    loaded = load(write_config(tmp_path, STALE))
    axes = [_axis("app", "alpine", ("3.21", "3.22"), ("3.22", "3.23"))]
    got = [(w.location.line, w.location.column, w.location.path, w.message) for w in update.stale(loaded, axes)]
    assert [g[:3] for g in got] == [
        (15, 18, "images.app.exclude[0].alpine"),
        (16, 19, "images.app.exclude[1].alpine[0]"),
        (18, 18, "images.app.include[0].alpine"),
        (19, 18, "images.app.include[1].alpine"),
    ]  # tags[2].when names 3.21, which include[0] still gives: that condition stays valid
    assert got[0][3].startswith("names alpine '3.21', which the update removes from the matrix: the exclude")
    assert "the include would then add that cell on its own" in got[2][3]


def test_a_condition_naming_a_value_no_cell_keeps_is_warned_about(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, STALE))
    axes = [_axis("app", "alpine", ("3.21", "3.22"), ("3.21", "3.23"))]
    got = [str(w) for w in update.stale(loaded, axes)]
    assert any(w.endswith("no cell would have it, which is an error; edit the condition") for w in got)
    assert any(":23:" in w and "images.app.tags[1].when.alpine" in w for w in got)


def test_a_child_whose_parent_cells_leave_is_warned_about(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, STALE.split("    exclude:", maxsplit=1)[0]))
    parent = _axis("base", "alpine", ("3.21", "3.22"), ("3.22", "3.23"))
    got = update.stale(loaded, [parent])
    assert [(w.location.path, w.message) for w in got] == [
        (
            "images.app.matrix.alpine",
            "family 'app' builds FROM 'base', whose alpine 3.21 the update removes: those cells would have no "
            "parent; give both families the same rule",
        )
    ]
    assert update.stale(loaded, [parent, _axis("app", "alpine", ("3.21", "3.22"), ("3.22", "3.23"))]) == ()


def test_a_child_include_whose_parent_cell_leaves_is_warned_about(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path, STALE))
    both = [
        _axis("base", "alpine", ("3.21", "3.22"), ("3.22", "3.23")),
        _axis("app", "alpine", ("3.21", "3.22"), ("3.22", "3.23")),
    ]
    orphans = [w.message for w in update.stale(loaded, both) if "builds FROM" in w.message]
    assert orphans == [  # include[0] (alpine 3.21, node 20) still needs base's 3.21
        "family 'app' builds FROM 'base', whose alpine 3.21 the update removes: those cells would have no "
        "parent; give both families the same rule"
    ]


# --- the command, with an in-memory registry ---------------------------------------------------------

CONFIG = """\
# Alpine versions come from the registry's tags.
registry: localhost:5000/test   # where images go
platforms: [linux/amd64]
update:
  alpine: {source: 127.0.0.1:5000/lib/alpine, match: '^3\\.\\d+$'}
  s6: {source: 127.0.0.1:5000/lib/s6, match: '^v(?P<version>\\d+(\\.\\d+)+)$', keep: 2}
images:
  base:
    context: .
    matrix:
      alpine: ["3.9", "3.10"]   # quoted: 3.10 must not become 3.1
      s6:
        - '3.1.6.2'    # the old line
        - '3.2.0.2'
        # newer s6 lines go above this comment
      plain: [1, 2]
    tags:
      - "{alpine}-{s6}-{plain}"
"""
WRITTEN = (
    CONFIG.replace('alpine: ["3.9", "3.10"]   # quoted', 'alpine: ["3.10", "3.11"]  # quoted')
    .replace("'3.1.6.2'    # the old line", "'3.2.0.2'    # the old line")
    .replace("        - '3.2.0.2'\n        # newer", "        - '3.2.10.0'\n        # newer")
)


def registry_with(**tags: list[str]) -> FakeRegistry:
    fake = FakeRegistry()
    for name, values in tags.items():
        fake.tag(f"127.0.0.1:5000/lib/{name}", *values)
    return fake


def run(path: Path, fake: FakeRegistry, write: bool = False, sleeps: list[float] | None = None) -> update.Outcome:
    return update.run(path, write=write, api=fake, sleep=(sleeps if sleeps is not None else []).append, echo=print)


def test_the_change_is_proposed_and_the_file_left_alone(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG)
    fake = registry_with(alpine=["3.8", "3.9", "3.10", "3.11"], s6=["v3.1.6.2", "v3.2.0.2", "v3.2.10.0", "latest"])
    outcome = run(path, fake)
    assert outcome.exit_code == EXIT_FAILED and outcome.changed and not outcome.written
    assert [(a.family, a.axis, a.old, a.new) for a in outcome.axes] == [
        ("base", "alpine", ("3.9", "3.10"), ("3.10", "3.11")),
        ("base", "s6", ("3.1.6.2", "3.2.0.2"), ("3.2.0.2", "3.2.10.0")),
    ]
    assert [(p.line, p.column) for p in outcome.places] == [(11, 15), (13, 9)]
    assert path.read_text() == CONFIG


def test_write_changes_only_the_values_and_a_second_run_finds_nothing(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG)
    path.chmod(0o640)
    fake = registry_with(alpine=["3.8", "3.9", "3.10", "3.11"], s6=["v3.1.6.2", "v3.2.0.2", "v3.2.10.0"])
    outcome = run(path, fake, write=True)
    assert outcome.written and outcome.exit_code == EXIT_FAILED
    assert path.read_text() == WRITTEN  # comments, order, quotes and layout as they were
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["platforms.yaml"]  # no temporary file left
    assert load(path).config.images["base"].matrix["alpine"] == ["3.10", "3.11"]
    again = run(path, fake, write=True)
    assert again.exit_code == EXIT_OK and not again.changed and not again.written
    assert path.read_text() == WRITTEN


def test_write_follows_a_symlink_to_the_real_file(tmp_path: Path) -> None:
    real = write_config(tmp_path, CONFIG, name="real.yaml")
    link = tmp_path / "platforms.yaml"
    link.symlink_to(real.name)
    run(link, registry_with(alpine=["3.10", "3.11"], s6=["v3.2.0.2", "v3.2.10.0"]), write=True)
    assert link.is_symlink() and real.read_text() == WRITTEN


def test_plain_and_single_quoted_values_keep_their_style(tmp_path: Path) -> None:
    text = CONFIG.replace('["3.9", "3.10"]', "[3.9, 3.10]").replace('"{alpine}-{s6}-{plain}"', "'{alpine}'")
    path = write_config(tmp_path, text)
    run(path, registry_with(alpine=["3.20", "3.100"], s6=["v3.1.6.2", "v3.2.0.2"]), write=True)
    assert "alpine: [3.20, 3.100]" in path.read_text()
    assert load(path).config.images["base"].matrix["alpine"] == ["3.20", "3.100"]  # not 3.2, 3.1


def test_a_registry_that_fails_ends_the_command_with_a_line_naming_it(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG)
    fake = registry_with(s6=["v3.2.0.2"])  # no alpine repository: the registry answers 404
    with pytest.raises(BuildError, match=r"^listing the tags of 127.0.0.1:5000/lib/alpine: HTTP 404"):
        run(path, fake)
    assert path.read_text() == CONFIG


def test_transient_failures_are_retried_a_bounded_number_of_times(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG)
    fake = registry_with(alpine=["3.10"], s6=["v3.2.0.2"])
    what = "listing the tags of 127.0.0.1:5000/lib/alpine"
    fake.fail_next = [RegistryError(f"{what}: HTTP 503", transient=True) for _ in range(10)]
    sleeps: list[float] = []
    with pytest.raises(BuildError, match=f"^{what}: still failing after 3 attempts: HTTP 503$"):
        run(path, fake, sleeps=sleeps)
    assert 0 < len(sleeps) <= 4 and all(s <= 2.0 for s in sleeps)


def test_an_axis_no_tag_matches_exits_1_and_is_not_written(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG)
    outcome = run(path, registry_with(alpine=["latest", "edge"], s6=["v3.1.6.2", "v3.2.0.2"]), write=True)
    assert outcome.exit_code == EXIT_FAILED and not outcome.changed and not outcome.written
    assert [a.axis for a in outcome.problems] == ["alpine"]
    assert path.read_text() == CONFIG


def test_a_file_without_rules_is_a_usage_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG[: CONFIG.index("update:")] + "images:" + CONFIG.split("images:")[1])
    with pytest.raises(ConfigError, match="no update: rules") as info:
        run(path, FakeRegistry())
    assert info.value.exit_code == EXIT_USAGE


# --- through the CLI ------------------------------------------------------------------------------


@pytest.fixture
def cli_registry(monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    fake = registry_with(alpine=["3.9", "3.10", "3.11"], s6=["v3.1.6.2", "v3.2.0.2", "v3.2.10.0"])
    monkeypatch.setattr(options, "registry_api", lambda: fake)
    return fake


def test_cli_prints_old_and_new_values_and_exits_1(
    tmp_path: Path, cli_registry: FakeRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, CONFIG)
    assert cli.run(["update", "-c", str(path)]) == EXIT_FAILED
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{path}:11:15: images.base.matrix.alpine: 3.9, 3.10 → 3.10, 3.11  (127.0.0.1:5000/lib/alpine)",
        f"{path}:13:9: images.base.matrix.s6: 3.1.6.2, 3.2.0.2 → 3.2.0.2, 3.2.10.0  (127.0.0.1:5000/lib/s6)",
        "2 axes to update: `multibake update --write` applies the change",
    ]
    assert cli.run(["update", "-c", str(path), "--write"]) == EXIT_FAILED
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {path}: 2 axes updated"
    assert cli.run(["update", "-c", str(path)]) == EXIT_OK
    assert capsys.readouterr().out.splitlines()[-1] == "every axis is up to date"


def test_cli_json(tmp_path: Path, cli_registry: FakeRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, CONFIG.replace('["3.9", "3.10"]', '["3.8", "3.10"]'))
    assert cli.run(["update", "-c", str(path), "--json"]) == EXIT_FAILED
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "multibake.update/v1" and doc["changed"] is True and doc["written"] is False
    assert doc["file"] == str(path) and doc["warnings"] == []
    assert doc["axes"][0] == {
        "family": "base",
        "axis": "alpine",
        "source": "127.0.0.1:5000/lib/alpine",
        "line": 11,
        "changed": True,
        "old": ["3.8", "3.10"],
        "new": ["3.10", "3.11"],
        "added": ["3.11"],
        "removed": ["3.8"],
        "missing": ["3.8"],
        "problem": None,
    }


def test_cli_warns_on_stderr_and_keeps_stdout_for_the_proposal(
    tmp_path: Path, cli_registry: FakeRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    text = CONFIG.replace("    tags:\n", "    exclude:\n      - {alpine: \"3.9\", s6: '3.1.6.2'}\n    tags:\n")
    path = write_config(tmp_path, text)
    assert cli.run(["update", "-c", str(path)]) == EXIT_FAILED
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"multibake: warning: {path}:18:18: images.base.exclude[0].alpine: names alpine '3.9', which the update "
        "removes from the matrix: the exclude would match fewer cells (none at all is an error); edit or remove it",
        f"multibake: warning: {path}:18:29: images.base.exclude[0].s6: names s6 '3.1.6.2', which the update "
        "removes from the matrix: the exclude would match fewer cells (none at all is an error); edit or remove it",
    ]
    assert "warning" not in out


def test_cli_registry_failure_is_one_line_and_exit_1(
    tmp_path: Path, cli_registry: FakeRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, CONFIG.replace("lib/alpine", "lib/gone"))
    assert cli.run(["update", "-c", str(path)]) == EXIT_FAILED
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "multibake: error: listing the tags of 127.0.0.1:5000/lib/gone: HTTP 404 NAME_UNKNOWN",
    ]


def test_cli_bad_rule_exits_2_naming_the_key(
    tmp_path: Path, cli_registry: FakeRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, CONFIG.replace("keep: 2", "keep: 0"))
    assert cli.run(["update", "-c", str(path)]) == EXIT_USAGE
    assert f"{path}:6:83: update.s6.keep: input should be greater than or equal to 1" in capsys.readouterr().err


# --- the shipped platforms.yaml ------------------------------------------------------------------


def test_the_shipped_rules_update_alpine_everywhere_and_node_only_where_nodes_tags_decide() -> None:
    loaded = load(RELEASE_CONFIG)
    found = [(t.family, t.axis) for t in update.targets(loaded.config)]
    assert found == [("alpine-s6-overlay", "alpine"), ("alpine-s6-nodejs", "alpine"), ("node-app", "node")]
    tags = {ALPINE: ALPINE_TAGS, NODE: ["20", "21", "22", "23", "24", "25", "26", "27", "28-alpha", "lts", "22.1.0"]}
    axes = update.propose(loaded.config, update.targets(loaded.config), tags)
    assert [a.new for a in axes] == [("3.22", "3.23", "3.24"), ("3.22", "3.23", "3.24"), ("24", "26")]
    warned = [w.location.path for w in update.stale(loaded, axes)]
    assert warned == [
        "images.alpine-s6-nodejs.exclude[0].alpine[0]",  # the exclude pairing 3.21 with Node 24
        *(f"images.node-app.include[{i}].node" for i in range(3)),  # Node 22's arm/v7 includes
    ]


def test_the_edit_of_each_shipped_and_sample_file_changes_only_the_values(tmp_path: Path) -> None:
    from multibake.compare.roundtrip import replace_sequences

    for source in [RELEASE_CONFIG, *sorted(RELEASE_CONFIG.parent.glob("samples/*/platforms.yaml"))]:
        text = source.read_text()
        data = load(source).config
        family, fam = next((n, f) for n, f in data.images.items() if f.matrix)
        axis = next(iter(fam.matrix))
        got = replace_sequences(text, {("images", family, "matrix", axis): ["9.1", "9.2"]}, str(source))
        changed = [(a, b) for a, b in zip(text.splitlines(), got.splitlines(), strict=True) if a != b]
        assert len(changed) == 1, (source, changed)
        assert "9.1" in changed[0][1] and "9.2" in changed[0][1]


def test_a_layout_ruamel_cannot_reproduce_is_refused_not_reformatted() -> None:
    from multibake.compare.roundtrip import replace_sequences

    text = textwrap.dedent(
        """\
        images:
          a:
            matrix:
              v:
                - "1"
              w:
              - "2"
        """
    )
    with pytest.raises(BuildError, match="cannot rewrite the file without changing its layout"):
        replace_sequences(text, {("images", "a", "matrix", "v"): ["3"]}, "x.yaml")


def test_block_sequences_keep_their_comments_when_they_grow_or_shrink() -> None:
    from multibake.compare.roundtrip import replace_sequences

    text = textwrap.dedent(
        """\
        images:
          a:
            matrix:
              v:
                - "1"   # first
                - "2"
                # after the last value
              w: [x]
        """
    )
    path = ("images", "a", "matrix", "v")
    grown = replace_sequences(text, {path: ["1", "2", "3"]}, "x.yaml")
    assert grown == text.replace('- "2"\n', '- "2"\n        - "3"\n')
    shrunk = replace_sequences(text, {path: ["5"]}, "x.yaml")
    assert shrunk == text.replace('- "1"   # first\n        - "2"\n', '- "5"   # first\n')
    nullish = replace_sequences(text.replace('"1"', "1").replace('"2"', "2"), {path: ["null", "3.20"]}, "x.yaml")
    assert "- 'null'" in nullish and "- 3.20" in nullish  # a bare null would read as nothing


def test_cosign_signature_tags_are_never_versions() -> None:
    from multibake.config.schema import UpdateRule

    rule = UpdateRule(source="127.0.0.1:5000/x/app", match=r"(?P<version>\d+(\.\d+)*)")
    tags = ["1.0", "sha256-" + "1" * 64 + ".sig", "sha256-" + "2" * 64 + ".att", "sha256-" + "3" * 64, "2.0"]
    assert sorted(update.versions(rule, tags)) == ["1.0", "2.0"]
