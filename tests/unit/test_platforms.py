"""platforms.py: the architecture table of DESIGN.md and the spellings users write."""

from __future__ import annotations

import pytest

from multibake import platforms
from multibake.platforms import ARCHES, Scheme, name, normalize

# DESIGN.md, "Architecture names": OCI platform → every scheme's name. The GO column is "arm" for
# both 32-bit ARMs (GOARM tells them apart), which is why Go names are never accepted as spellings.
DESIGN_TABLE: dict[str, dict[Scheme, str]] = {
    "linux/amd64": {
        Scheme.SHORT: "amd64",
        Scheme.BASHBREW: "amd64",
        Scheme.UNAME: "x86_64",
        Scheme.DEBIAN: "amd64",
        Scheme.ALPINE: "x86_64",
        Scheme.S6_OVERLAY: "x86_64",
        Scheme.NODE: "x64",
        Scheme.GO: "amd64",
    },
    "linux/arm64": {
        Scheme.SHORT: "arm64",
        Scheme.BASHBREW: "arm64v8",
        Scheme.UNAME: "aarch64",
        Scheme.DEBIAN: "arm64",
        Scheme.ALPINE: "aarch64",
        Scheme.S6_OVERLAY: "aarch64",
        Scheme.NODE: "arm64",
        Scheme.GO: "arm64",
    },
    "linux/arm/v7": {
        Scheme.SHORT: "armv7",
        Scheme.BASHBREW: "arm32v7",
        Scheme.UNAME: "armv7l",
        Scheme.DEBIAN: "armhf",
        Scheme.ALPINE: "armv7",
        Scheme.S6_OVERLAY: "arm",
        Scheme.NODE: "armv7l",
        Scheme.GO: "arm",
    },
    "linux/arm/v6": {
        Scheme.SHORT: "armv6",
        Scheme.BASHBREW: "arm32v6",
        Scheme.UNAME: "armv6l",
        Scheme.DEBIAN: "armel",
        Scheme.ALPINE: "armhf",
        Scheme.S6_OVERLAY: "armhf",
        Scheme.NODE: "armv6l",
        Scheme.GO: "arm",
    },
}


def test_table_covers_exactly_the_four_platforms() -> None:
    assert list(ARCHES) == ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"]


def test_every_platform_has_every_scheme() -> None:
    for arch in ARCHES.values():
        assert set(arch.names) == set(Scheme), arch.oci


@pytest.mark.parametrize(
    ("platform", "scheme", "expected"),
    [(p, s, n) for p, row in DESIGN_TABLE.items() for s, n in row.items()],
    ids=str,
)
def test_design_table(platform: str, scheme: Scheme, expected: str) -> None:
    assert name(platform, scheme) == expected


def test_scheme_values_are_stable_strings() -> None:
    # StrEnum values appear in docs and maybe in config; they must not drift silently
    assert [s.value for s in Scheme] == ["short", "bashbrew", "uname", "debian", "alpine", "s6-overlay", "node", "go"]


def test_traps_from_design() -> None:
    # armhf is v7 on Debian but v6 on Alpine and for s6-overlay
    assert name("linux/arm/v7", Scheme.DEBIAN) == "armhf"
    assert name("linux/arm/v6", Scheme.ALPINE) == "armhf"
    assert name("linux/arm/v6", Scheme.S6_OVERLAY) == "armhf"
    assert name("linux/arm/v7", Scheme.S6_OVERLAY) == "arm"
    # per-platform tag suffixes and bashbrew prefixes are all distinct
    assert len({name(p, Scheme.SHORT) for p in ARCHES}) == 4
    assert len({name(p, Scheme.BASHBREW) for p in ARCHES}) == 4


def test_name_of_unknown_platform_raises() -> None:
    with pytest.raises(KeyError):
        name("linux/s390x", Scheme.SHORT)


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        # amd64
        ("linux/amd64", "linux/amd64"),
        ("amd64", "linux/amd64"),
        ("x86_64", "linux/amd64"),
        ("x86-64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("x64", "linux/amd64"),
        ("AMD64", "linux/amd64"),
        ("  linux/amd64  ", "linux/amd64"),
        # arm64
        ("linux/arm64", "linux/arm64"),
        ("arm64", "linux/arm64"),
        ("aarch64", "linux/arm64"),
        ("arm64v8", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("arm64/v8", "linux/arm64"),
        ("linux/aarch64", "linux/arm64"),
        ("armv8", "linux/arm64"),
        # arm/v7
        ("linux/arm/v7", "linux/arm/v7"),
        ("arm/v7", "linux/arm/v7"),
        ("armv7", "linux/arm/v7"),
        ("armv7l", "linux/arm/v7"),
        ("arm32v7", "linux/arm/v7"),
        ("ARMv7", "linux/arm/v7"),
        # arm/v6
        ("linux/arm/v6", "linux/arm/v6"),
        ("arm/v6", "linux/arm/v6"),
        ("armv6", "linux/arm/v6"),
        ("armv6l", "linux/arm/v6"),
        ("arm32v6", "linux/arm/v6"),
        ("armel", "linux/arm/v6"),
    ],
)
def test_normalize_spellings(spelling: str, expected: str) -> None:
    assert normalize(spelling) == expected


def test_every_unambiguous_table_name_normalises_to_its_platform() -> None:
    # every name in the table except Go's (arm is both v6 and v7 there) and the ambiguous armhf/arm
    for platform, row in DESIGN_TABLE.items():
        for scheme, spelling in row.items():
            if scheme is Scheme.GO or spelling in ("armhf", "arm"):
                continue
            assert normalize(spelling) == platform, (scheme, spelling)


@pytest.mark.parametrize(
    ("spelling", "fragments"),
    [
        ("armhf", ["ambiguous", "armhf", "Debian", "Alpine", "linux/arm/v7", "linux/arm/v6"]),
        ("ARMHF", ["ambiguous", "Debian", "Alpine"]),
        ("arm", ["ambiguous", "variant", "linux/arm/v7", "linux/arm/v6"]),
        ("linux/arm", ["ambiguous", "variant", "linux/arm/v7", "linux/arm/v6"]),
    ],
)
def test_ambiguous_spellings_refused_with_explanation(spelling: str, fragments: list[str]) -> None:
    with pytest.raises(ValueError, match="ambiguous") as info:
        normalize(spelling)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("spelling", ["linux/s390x", "sparc", "windows/amd64", "", "linux/arm/v8", "arm32v8", "amd"])
def test_unknown_spellings_refused_listing_supported(spelling: str) -> None:
    with pytest.raises(ValueError, match="unknown platform") as info:
        normalize(spelling)
    assert repr(spelling) in str(info.value)
    for platform in ARCHES:
        assert platform in str(info.value)


def test_go_name_arm_is_not_a_spelling() -> None:
    # "arm" is Go's name for both v6 and v7: refused, never guessed
    with pytest.raises(ValueError, match="ambiguous"):
        platforms.normalize("arm")
