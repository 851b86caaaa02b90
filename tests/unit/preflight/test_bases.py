"""dockerfile.py and bases.py: the images a build pulls, and the preflight that checks their platforms (no docker)."""

from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from multibake.config.schema import Retry
from multibake.errors import UsageError
from multibake.plan.model import Plan
from multibake.preflight import bases
from multibake.preflight import dockerfile as df
from multibake.registry.errors import RegistryError
from multibake.release.resolve import BuildOptions, resolve
from tests.helpers import plan_text
from tests.unit.fakes import FakeDocker, FakeRegistry, targets_of
from tests.unit.release.test_release import Stack

AMD, ARM64, ARMV7 = "linux/amd64", "linux/arm64", "linux/arm/v7"
LOCAL = "127.0.0.1:5000/b/base:1"


def uses(text: str, platform: str = AMD, **kw: object) -> list[tuple[str, str | None, bool]]:
    parsed = df.parse(textwrap.dedent(text))
    found = df.uses(parsed, platform=platform, args=kw.pop("args", {}), **kw)  # type: ignore[arg-type]
    return [(u.image if not u.context else f"ctx:{u.image}", u.platform, u.final) for u in found]


# --- Dockerfile reading -----------------------------------------------------------------------------


def test_arg_defaults_are_substituted_and_build_args_override_them() -> None:
    text = """
        ARG ALPINE=3.20
        ARG IMAGE=alpine:${ALPINE}
        FROM $IMAGE
    """
    assert uses(text) == [("alpine:3.20", AMD, True)]
    assert uses(text, args={"ALPINE": "3.21"}) == [("alpine:3.21", AMD, True)]
    assert uses(text, args={"IMAGE": "debian:13"}) == [("debian:13", AMD, True)]


def test_only_args_declared_before_the_first_from_reach_it() -> None:
    text = """
        FROM alpine:${V:-3.19} AS one
        ARG V=3.22
        FROM one
    """
    # V is declared inside a stage, so FROM sees it unset whatever the build args say: the default wins
    assert uses(text, args={"V": "3.21"}) == [("alpine:3.19", AMD, True)]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("${A}-$A", "a-a"),
        ("${E:-d} ${E-d}", "d "),
        ("${U:-d} ${U-d}", "d d"),
        ("${A:+x} ${E:+x}|${E+x} ${U+x}", "x |x "),
        (r"\$A", "$A"),
        ("${A:-${U:-z}}", "a"),
    ],
)
def test_expand_follows_the_dockerfile_rules(word: str, expected: str) -> None:
    assert df.expand(word, {"A": "a", "E": "", "U": None}) == expected


def test_target_platform_args_are_known_to_from() -> None:
    text = "FROM registry.example/${TARGETARCH}${TARGETVARIANT}/alpine:3.21\n"
    assert uses(text, platform=ARMV7) == [("registry.example/armv7/alpine:3.21", ARMV7, True)]


def test_multi_stage_builds_only_what_the_target_stage_needs() -> None:
    text = """
        FROM --platform=$BUILDPLATFORM golang:1.23 AS build
        FROM node:22 AS unused
        FROM build AS tested
        FROM alpine:3.21 AS final
        COPY --from=tested /out /usr/bin/
        COPY --from=busybox:1.36 /bin/busybox /bin/
        RUN --mount=type=cache,target=/c,from=0 true
    """
    assert uses(text, platform=ARM64) == [
        ("alpine:3.21", ARM64, True),
        ("golang:1.23", None, False),  # the build platform: existence only
        ("busybox:1.36", ARM64, False),
    ]
    assert uses(text, stage="TESTED") == [("golang:1.23", None, True)]
    with pytest.raises(df.DockerfileError, match="no stage named 'nope'"):
        uses(text, stage="nope")


def test_scratch_and_a_literal_platform() -> None:
    assert uses("FROM scratch\nCOPY x /\n") == []
    assert uses("FROM --platform=linux/amd64 tool:1 AS t\nFROM scratch\nCOPY --from=t / /\n", platform=ARMV7) == [
        ("tool:1", AMD, False)
    ]


def test_a_named_context_replaces_the_image_of_that_name() -> None:
    assert uses("FROM base\n", contexts=frozenset({"base"})) == [("ctx:base", AMD, True)]
    assert uses("FROM base:latest\n", contexts=frozenset({"base"})) == [("ctx:base:latest", AMD, True)]
    assert uses("FROM base\n") == [("base", AMD, True)]  # without the context: docker.io/library/base


def test_continuations_comments_heredocs_and_the_escape_directive() -> None:
    text = """\
        # syntax=docker/dockerfile:1
        # escape=`
        ARG A=3.21
        FROM `
          # a comment inside the instruction
          alpine:${A} `
          AS one
        RUN <<EOF
        FROM not-an-instruction:1
        EOF
        COPY <<-"X" /etc/x
        <TAB>FROM nor-this:1
        <TAB>X
    """
    assert uses(text.replace("<TAB>", "\t")) == [("alpine:3.21", AMD, True)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM ${NOPE}\n", "is empty"),
        ("FROM Alpine:3\n", "lowercase"),
        ("ARG X=1\n", "no FROM"),
        ("ARG V=a.b\nFROM ${V%.b}\n", "not one multibake reads"),
    ],
)
def test_unresolvable_bases_are_refused(text: str, message: str) -> None:
    with pytest.raises(df.DockerfileError, match=message):
        uses(text)


# --- preflight ------------------------------------------------------------------------------------

CONFIG = """
registry: 127.0.0.1:5000/t
platforms: [linux/amd64, linux/arm64, linux/arm/v7]
images:
  bb:
    context: bb
    args: {{BASE: "{base}"}}
  app:
    context: app
    base: bb
"""


@dataclass
class Counting(FakeRegistry):
    """A FakeRegistry that counts manifest reads and cannot reach some hosts."""

    reads: Counter[str] = field(default_factory=Counter)
    down: set[str] = field(default_factory=set)

    def get_manifest(self, ref: str) -> tuple[bytes, str] | None:
        self.reads[ref] += 1
        if ref.split("/", 1)[0] in self.down:
            raise RegistryError(f"reading {ref}: ConnectionError: connection reset or timed out", transient=True)
        return super().get_manifest(ref)


def project(tmp_path: Path, base: str = LOCAL, app: str = "FROM base\n") -> Plan:
    for name, text in (("bb", "ARG BASE=none\nFROM ${BASE}\n"), ("app", app)):
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "Dockerfile").write_text(text, encoding="utf-8")
    return plan_text(tmp_path, CONFIG.format(base=base))


def run(plan: Plan, root: Path, fake: FakeRegistry) -> list[str]:
    said: list[str] = []
    reg = bases.preflight_registry(fake, Retry(), sleep=lambda s: None, echo=said.append)
    bases.preflight(plan, bases.plan_bases(plan, root), reg, said.append)
    return said


def test_a_base_without_a_planned_platform_is_refused(tmp_path: Path) -> None:
    fake = Counting()
    fake.publish(LOCAL, [AMD, ARM64])
    with pytest.raises(UsageError) as exc:
        run(project(tmp_path), tmp_path, fake)
    assert exc.value.exit_code == 2
    first, hint = str(exc.value).splitlines()
    assert first == f"preflight: cell bb--image: its base {LOCAL} does not publish {ARMV7}"
    assert "restrict the cell's platforms" in hint and "--no-preflight" in hint


def test_a_single_platform_base_of_another_platform_is_refused(tmp_path: Path) -> None:
    fake = Counting()
    fake.image(LOCAL, ARM64)
    with pytest.raises(UsageError, match=f"does not publish {AMD}, {ARMV7}"):
        run(project(tmp_path), tmp_path, fake)


def test_every_platform_published_passes_and_each_base_is_read_once(tmp_path: Path) -> None:
    fake = Counting()
    fake.publish("docker.io/library/alpine:3.21", [AMD, "linux/arm64/v8", "linux/arm/v6"])  # v6 serves v7
    p = project(tmp_path, base="alpine:3.21", app="FROM base\nCOPY --from=docker.io/library/alpine:3.21 / /\n")
    assert run(p, tmp_path, fake) == []
    assert list(fake.reads.values()) == [1]
    assert {t: bases.shown(b) for t, b in bases.plan_bases(p, tmp_path).items()} == {
        "bb--image": "alpine:3.21",
        "app--image": "<bb>",
    }


def test_a_missing_base_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"cell bb--image: base image {LOCAL} .bb/Dockerfile:2. does not exist"):
        run(project(tmp_path), tmp_path, Counting())


def test_an_unreachable_host_is_warned_about_once_and_the_build_goes_on(tmp_path: Path) -> None:
    fake = Counting(down={"127.0.0.1:9"})
    p = project(tmp_path, base="127.0.0.1:9/x:1", app="FROM base\nCOPY --from=127.0.0.1:9/y:2 / /\n")
    said = run(p, tmp_path, fake)
    warnings = [line for line in said if "warning" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith("multibake: warning: could not read 2 base image(s) from 127.0.0.1:9")
    assert sum(fake.reads.values()) <= 2 * bases.ATTEMPTS  # bounded: a dead host is not asked again


def test_a_plan_parent_must_cover_the_childs_platforms(tmp_path: Path) -> None:
    fake = Counting()
    fake.publish(LOCAL, [AMD, ARM64, ARMV7])
    p = project(tmp_path)
    assert run(p, tmp_path, fake) == []  # covered: checked against the plan, never read
    assert set(fake.reads) == {LOCAL}
    narrowed = Plan(
        registry=p.registry,
        families=p.families,
        cells=tuple(replace(c, platforms=(AMD, ARM64)) if c.family == "bb" else c for c in p.cells),
    )
    with pytest.raises(
        UsageError, match=r"cell app--image: its parent bb--image \(<bb>\) is not planned for linux/arm/v7"
    ):
        run(narrowed, tmp_path, fake)


def test_per_platform_args_give_each_platform_its_own_base(tmp_path: Path) -> None:
    fake = Counting()
    for arch in ("amd64", "arm64", "armv7"):
        fake.publish(f"127.0.0.1:5000/{arch}/base:1", [AMD, ARM64, ARMV7])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "Dockerfile").write_text("ARG ARCH\nFROM 127.0.0.1:5000/${ARCH}/base:1\n", encoding="utf-8")
    p = plan_text(
        tmp_path,
        "registry: r.example/t\nplatforms: [amd64, arm64, armv7]\n"
        "images:\n  c:\n    context: c\n    platform_args: {ARCH: short}\n",
    )
    assert run(p, tmp_path, fake) == []
    (cb,) = bases.plan_bases(p, tmp_path).values()
    assert bases.shown(cb) == ",".join(f"{a}=127.0.0.1:5000/{a}/base:1" for a in ("amd64", "arm64", "armv7"))


# --- in the release -------------------------------------------------------------------------------


def _stack(tmp_path: Path, fake: FakeRegistry) -> Stack:
    p = project(tmp_path)
    config = tmp_path / "platforms.yaml"
    return Stack(config=config, registry=fake, docker=FakeDocker(registry=fake, targets=targets_of(p)))


def test_build_refuses_before_docker_and_no_preflight_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    fake = Counting()
    fake.publish(LOCAL, [AMD, ARM64])
    stack = _stack(tmp_path, fake)
    with pytest.raises(UsageError, match="linux/arm/v7"):
        stack.build(push=True)
    assert stack.docker_made == 0 and fake.writes == []
    built = stack.build(push=True, preflight=False)
    assert built.ok and built.report is not None
    assert built.report.bases == {"bb--image": LOCAL, "app--image": "<bb>"}
    assert BuildOptions(config=tmp_path).preflight  # on unless --no-preflight


def test_syntax_multibake_does_not_read_is_shown_not_refused(tmp_path: Path) -> None:
    p = project(tmp_path, app="ARG V=a.b\nFROM x:${V%.b}\n")
    assert bases.shown(bases.plan_bases(p, tmp_path)["app--image"]) == "?"
    with pytest.raises(UsageError, match=r"cell app--image: app/Dockerfile: line 1: image '' .* is empty"):
        bases.plan_bases(project(tmp_path, app="FROM ${NOPE}\n"), tmp_path)


def test_base_labels_name_one_external_base_fully_qualified(tmp_path: Path) -> None:
    files = {
        "alp": "ARG V=3.20\nFROM alpine:${V}\n",
        "multi": "ARG BASE\nFROM ${BASE}\n",  # a base per platform
        "empty": "FROM scratch\nCOPY x /x\n",
        "own": "FROM debian:12\n",
    }
    for name, text in files.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "Dockerfile").write_text(text, encoding="utf-8")
    p = plan_text(
        tmp_path,
        """
        registry: 127.0.0.1:5000/b
        platforms: [linux/amd64, linux/arm64]
        images:
          alp: {context: alp, matrix: {v: ["3.21"]}, args: {V: "{v}"}}
          child: {context: empty, base: alp, matrix: {v: ["3.21"]}}
          multi: {context: multi, platform_args: {BASE: debian}}
          empty: {context: empty}
          own: {context: own, labels: {org.opencontainers.image.base.name: "mine"}}
        """,
    )
    assert bases.base_labels(p, tmp_path) == {"alp-3_21": (bases.BASE_NAME, "docker.io/library/alpine:3.21")}
    child = next(c for c in p.cells if c.family == "child")
    assert dict(child.labels)[bases.BASE_NAME] == "127.0.0.1:5000/b/alp:3.21", "the parent's tag, from the plan"
    # what `build` renders: the label is in the bake file
    built = resolve(BuildOptions(config=tmp_path / "platforms.yaml"))
    alp = next(c for c in built.plan.cells if c.family == "alp")
    assert dict(alp.labels)[bases.BASE_NAME] == "docker.io/library/alpine:3.21"
