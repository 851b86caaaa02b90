"""Tag templates read backwards: a family's tags back into matrix values and platforms."""

from __future__ import annotations

from multibake.maintain.naming import Naming, Parsed, version_order

SUFFIX = {"linux/amd64": "-amd64", "linux/arm64": "-arm64", "linux/arm/v7": "-armv7"}
PREFIX = {"linux/amd64": "amd64-", "linux/arm64": "arm64v8-", "linux/arm/v7": "arm32v7-"}
NODE = Naming(
    templates=((("node",), "-alpine", ("alpine",)), (("node",),)),
    known={"node": ["22", "24"], "alpine": ["3.21", "3.22"]},
    affixes=SUFFIX,
)


def test_tags_of_values_no_longer_planned_are_read() -> None:
    assert NODE.parse("20-alpine3.19") == Parsed(values=(("node", "20"), ("alpine", "3.19")))
    assert NODE.parse("20") == Parsed(values=(("node", "20"),))


def test_per_platform_tags_name_their_platform() -> None:
    assert NODE.parse("20-alpine3.19-armv7") == Parsed(
        values=(("node", "20"), ("alpine", "3.19")), platform="linux/arm/v7"
    )
    assert NODE.parse("22-arm64") == Parsed(values=(("node", "22"),), platform="linux/arm64")
    prefixed = Naming(templates=NODE.templates, known=NODE.known, affixes=PREFIX)
    assert prefixed.parse("arm32v7-20") == Parsed(values=(("node", "20"),), platform="linux/arm/v7")
    assert prefixed.parse("20") == Parsed(values=(("node", "20"),))


def test_other_tags_are_not_the_familys() -> None:
    for tag in ("latest", "multibake-staging-x", "sha256-" + "a" * 64 + ".sig", "20-debian", "20-alpine"):
        assert NODE.parse(tag) is None, tag


def test_values_with_dashes_known_to_the_matrix() -> None:
    n = Naming(templates=((("v",), "-", ("os",)),), known={"v": ["1"], "os": ["bookworm-slim"]}, affixes=SUFFIX)
    assert n.parse("1-bookworm-slim") == Parsed(values=(("v", "1"), ("os", "bookworm-slim")))
    assert n.parse("1-bookworm-slim-armv7") == Parsed(
        values=(("v", "1"), ("os", "bookworm-slim")), platform="linux/arm/v7"
    )


def test_literal_tags_and_repeated_axes() -> None:
    n = Naming(templates=(("stable",), (("v",), ".", ("v",))), known={"v": ["1"]}, affixes={})
    assert n.parse("stable") == Parsed(values=())
    assert n.parse("2.2") == Parsed(values=(("v", "2"),))
    assert n.parse("2.3") is None


def test_version_order() -> None:
    assert version_order(["10", "9", "3.10", "3.9", "edge", "1.0rc1", "1.0"]) == [
        "1.0rc1",
        "1.0",
        "3.9",
        "3.10",
        "9",
        "10",
        "edge",
    ]
