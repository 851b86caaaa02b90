"""Settings for living with a registry of releases: retention (``multibake gc``) and size limits.

Durations are written ``90s``, ``30m``, ``12h``, ``1d``, ``2w`` (``0``: none); size limits as a
share of the earlier size (``10%``) or a size (``50MB``, ``200MiB``). Both are kept as written (the
schema and error messages show them so) and read by ``duration`` and ``parse_limit``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, Field

from multibake.config.model import Model

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|[kKMGT]?i?B)?\s*$")
_UNITS = {
    "B": 1,
    "kB": 1000,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "kiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}
DEFAULT_STAGING_GRACE = "1d"


def duration(text: str | int) -> timedelta:
    """``90s``, ``30m``, ``12h``, ``1d``, ``2w`` or a number of seconds; ValueError otherwise."""
    found = _DURATION.match(str(text))
    if not found:
        raise ValueError(f"{text!r} is not a duration: write 90s, 30m, 12h, 1d or 2w")
    return timedelta(seconds=int(found.group(1)) * _SECONDS[found.group(2)])


@dataclass(frozen=True, kw_only=True, slots=True)
class Limit:
    """How much a platform image may grow: a share of its earlier size, or a number of bytes."""

    percent: float | None = None
    bytes: int | None = None
    text: str = ""  # as written

    def exceeded(self, before: int, after: int) -> bool:
        growth = after - before
        if growth <= 0:
            return False
        if self.bytes is not None:
            return growth > self.bytes
        return before == 0 or growth * 100 > (self.percent or 0) * before


def parse_limit(text: str) -> Limit:
    """``10%``, ``12.5%``, ``50MB``, ``200MiB``, ``1000000`` (bytes); ValueError otherwise."""
    found = _LIMIT.match(str(text))
    if not found or found.group(2) not in (None, "%", *_UNITS):
        raise ValueError(f"{text!r} is not a size limit: write a share like 10% or a size like 50MB or 200MiB")
    number, unit = float(found.group(1)), found.group(2)
    if unit == "%":
        return Limit(percent=number, text=str(text).strip())
    return Limit(bytes=int(number * _UNITS.get(unit or "B", 1)), text=str(text).strip())


def _duration_text(value: str | int) -> str:
    duration(value)
    return str(value)


def _limit_text(value: str) -> str:
    parse_limit(value)
    return value


Duration = Annotated[str, AfterValidator(_duration_text)]
SizeLimit = Annotated[str, AfterValidator(_limit_text)]


class Retention(Model):
    """What `multibake gc` deletes besides a family's own retention: staging tags past a grace period."""

    staging_grace: Duration = Field(
        default=DEFAULT_STAGING_GRACE,
        description="staging tags (multibake-staging-*) built longer ago than this are leftovers of a release "
        "that did not finish; a release still running is younger (90s, 30m, 12h, 1d, 2w)",
    )


class FamilyRetention(Model):
    """Which of a family's tags `multibake gc` keeps; without it, all of them."""

    keep_last: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description="by axis: how many of its newest values to keep (version order); older values' tags, "
        "per-platform tags, signatures and attestations are deleted",
    )
    unplanned_after: Duration | None = Field(
        default=None,
        description="tags of the family that no cell of the current plan has, once built longer ago than this",
    )


class Gate(Model):
    """Checks `build --push` makes before any public tag moves."""

    max_growth: SizeLimit | None = Field(
        default=None,
        description="fail the release when a platform image grew by more than this against what its public tag "
        "serves now (10%, 50MB)",
    )
