"""Platforms and the names each ecosystem gives their architectures.

Facts come from the table in the design notes. Spellings users write (amd64, aarch64, arm32v7, ...)
are normalised to OCI form; an ambiguous one such as ``armhf`` is refused, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Scheme(StrEnum):
    """Naming schemes a Dockerfile or tag may need for an architecture."""

    SHORT = "short"  # per-platform tag suffix: 3.20-armv7
    BASHBREW = "bashbrew"  # per-platform tag prefix: arm32v7-3.20
    UNAME = "uname"
    DEBIAN = "debian"
    ALPINE = "alpine"
    S6_OVERLAY = "s6-overlay"
    NODE = "node"
    GO = "go"


@dataclass(frozen=True, slots=True)
class Arch:
    oci: str
    names: dict[Scheme, str]


_TABLE: tuple[Arch, ...] = (
    Arch(
        "linux/amd64",
        {
            Scheme.SHORT: "amd64",
            Scheme.BASHBREW: "amd64",
            Scheme.UNAME: "x86_64",
            Scheme.DEBIAN: "amd64",
            Scheme.ALPINE: "x86_64",
            Scheme.S6_OVERLAY: "x86_64",
            Scheme.NODE: "x64",
            Scheme.GO: "amd64",
        },
    ),
    Arch(
        "linux/arm64",
        {
            Scheme.SHORT: "arm64",
            Scheme.BASHBREW: "arm64v8",
            Scheme.UNAME: "aarch64",
            Scheme.DEBIAN: "arm64",
            Scheme.ALPINE: "aarch64",
            Scheme.S6_OVERLAY: "aarch64",
            Scheme.NODE: "arm64",
            Scheme.GO: "arm64",
        },
    ),
    Arch(
        "linux/arm/v7",
        {
            Scheme.SHORT: "armv7",
            Scheme.BASHBREW: "arm32v7",
            Scheme.UNAME: "armv7l",
            Scheme.DEBIAN: "armhf",
            Scheme.ALPINE: "armv7",
            Scheme.S6_OVERLAY: "arm",
            Scheme.NODE: "armv7l",
            Scheme.GO: "arm",
        },
    ),
    Arch(
        "linux/arm/v6",
        {
            Scheme.SHORT: "armv6",
            Scheme.BASHBREW: "arm32v6",
            Scheme.UNAME: "armv6l",
            Scheme.DEBIAN: "armel",
            Scheme.ALPINE: "armhf",
            Scheme.S6_OVERLAY: "armhf",
            Scheme.NODE: "armv6l",
            Scheme.GO: "arm",
        },
    ),
)

ARCHES: dict[str, Arch] = {a.oci: a for a in _TABLE}

# Unambiguous spellings → OCI platform. Built from the table, minus names that mean different
# architectures in different ecosystems (see _AMBIGUOUS).
_AMBIGUOUS: dict[str, str] = {
    "armhf": "'armhf' is arm/v7 on Debian but arm/v6 on Alpine and in s6-overlay; write linux/arm/v7 or linux/arm/v6",
    "arm": "'arm' alone names no variant; write linux/arm/v7 or linux/arm/v6",
    "linux/arm": "'linux/arm' names no variant; write linux/arm/v7 or linux/arm/v6",
}
_ALIASES: dict[str, str] = {}
for _arch in _TABLE:
    _ALIASES[_arch.oci] = _arch.oci
    _ALIASES[_arch.oci.removeprefix("linux/")] = _arch.oci
    for _scheme, _name in _arch.names.items():
        if _name not in _AMBIGUOUS and _scheme is not Scheme.GO:
            _ALIASES.setdefault(_name, _arch.oci)
_ALIASES.update(
    {
        "linux/arm64/v8": "linux/arm64",
        "arm64/v8": "linux/arm64",
        "armv8": "linux/arm64",
        "x86-64": "linux/amd64",
        "linux/x86_64": "linux/amd64",
        "linux/aarch64": "linux/arm64",
        "armel": "linux/arm/v6",
    }
)
# Alpine calls v6 "armhf" and v7 "armv7"; "armv7" is already v7 everywhere, keep it.
_ALIASES["armv7"] = "linux/arm/v7"


def normalize(spelling: str) -> str:
    """The OCI platform for a user's spelling, or ValueError saying why it cannot be one."""
    key = spelling.strip().lower()
    if key in _AMBIGUOUS:
        raise ValueError(f"ambiguous platform: {_AMBIGUOUS[key]}")
    try:
        return _ALIASES[key]
    except KeyError:
        known = ", ".join(ARCHES)
        raise ValueError(f"unknown platform {spelling!r} (supported: {known})") from None


def name(platform: str, scheme: Scheme) -> str:
    """The name ``scheme`` uses for an OCI platform, e.g. ``name('linux/arm/v7', Scheme.NODE)``."""
    return ARCHES[platform].names[scheme]
