"""Size gates on fakes: limits parsed, breaches named with the layers that grew."""

from __future__ import annotations

import pytest

from multibake.config.upkeep import Limit, parse_limit
from multibake.release.gate import breaches, check, size_text

MB = 1_000_000
BASE = (("sha256:" + "a" * 64, 5 * MB), ("sha256:" + "b" * 64, 1 * MB))


def test_limits() -> None:
    assert parse_limit("10%") == Limit(percent=10.0, text="10%")
    assert parse_limit("12.5 %").percent == 12.5
    assert parse_limit("50MB").bytes == 50 * MB
    assert parse_limit("200MiB").bytes == 200 * 1024**2
    assert parse_limit("1000").bytes == 1000
    for bad in ("ten", "10 %%", "-5%", "5 parsecs", ""):
        with pytest.raises(ValueError, match="not a size limit"):
            parse_limit(bad)


def test_a_200mb_layer_breaches_10_percent_and_is_named() -> None:
    grown = (*BASE, ("sha256:" + "c" * 64, 200 * MB))
    found = check("r/app:2", "linux/arm/v7", BASE, grown, parse_limit("10%"))
    assert found is not None
    assert (found.before, found.after) == (6 * MB, 206 * MB)
    assert found.grown == (("sha256:" + "c" * 64, 200 * MB),)
    text = found.describe()
    assert "r/app:2 linux/arm/v7 grew 6.0 MB → 206.0 MB" in text and "limit 10%" in text and "200.0 MB" in text


def test_growth_within_the_limit_shrinking_and_new_images_pass() -> None:
    limit = parse_limit("10%")
    assert check("r", "p", BASE, (*BASE, ("sha256:c", 500_000)), limit) is None
    assert check("r", "p", BASE, BASE[:1], limit) is None
    assert check("r", "p", None, BASE, limit) is None
    assert check("r", "p", BASE, None, limit) is None


def test_an_absolute_limit() -> None:
    limit = parse_limit("1MB")
    items = [("a", "p", BASE, (*BASE, ("sha256:c", 2 * MB))), ("b", "p", BASE, (*BASE, ("sha256:d", MB // 2)))]
    assert [b.ref for b in breaches(items, limit)] == ["a"]


def test_size_text() -> None:
    assert size_text(512) == "512 B"
    assert size_text(921_000) == "921.0 kB"
    assert size_text(206 * MB) == "206.0 MB"
