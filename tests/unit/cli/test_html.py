"""The release page and its Markdown summary, rendered from data: escaped, self-contained, every cell there."""

from __future__ import annotations

import re

from multibake.cli.html import html, markdown
from multibake.maintain.report import FamilyGrid, Page, PlatformCell, Row

PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")


def _page() -> Page:
    def cell(platform: str, delta: int = 0) -> PlatformCell:
        return PlatformCell(
            platform=platform,
            status="ok",
            digest="sha256:" + "a" * 64,
            bytes=1_100_000,
            layers=5,
            base="r.example.com/bb:1.35@sha256:" + "b" * 64,
            tags=("1.0-armv7",) if platform.endswith("v7") else (),
            signed=True,
            sbom=False,
            provenance=True,
            change="changed" if delta else "unchanged",
            bytes_delta=delta,
            over_gate=delta > 500_000,
        )

    rows = (
        Row(
            target="app-1_0",
            values=("1.0",),
            tags=("1.0",),
            status="ok",
            problem=None,
            change="changed",
            cells=(cell(PLATFORMS[0]), cell(PLATFORMS[1], 600_000), cell(PLATFORMS[2], 86_400)),
        ),
        Row(
            target="app-0_9",
            values=("<script>alert(1)</script>",),
            tags=("0.9",),
            status="failed",
            problem="0.9: not in the registry",
            change=None,
            cells=(PlatformCell(platform=PLATFORMS[0], status="missing"), None, None),
        ),
    )
    grid = FamilyGrid(
        name="app", image="r.example.com/app", base="bb", axes=("version",), platforms=PLATFORMS, rows=rows
    )
    return Page(
        title="Release report: r.example.com",
        registry="r.example.com",
        generated="2026-12-06 12:00 UTC",
        revision="abc123",
        compared_with="before the release of 2026-12-05",
        families=(grid,),
    )


def test_the_page_is_self_contained_and_escaped() -> None:
    text = html(_page())
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert not re.search(r"""(src|href)=|@import|url\(|https?://""", text), "no external asset of any kind"
    assert text.count('data-platform="linux/arm/v7"') == 3, "the column head and both rows"
    assert 'data-status="not-planned"' in text and 'data-status="missing"' in text
    assert "+600.0 kB" in text and 'class="grew gate"' in text and "+86.4 kB" in text
    assert "signed" in text and "no SBOM" in text and "provenance" in text
    assert "on r.example.com/bb:1.35<" in text, "the base without its digest, which is in the title"


def test_the_markdown_summary() -> None:
    text = markdown(_page())
    assert text.startswith("### Release report: r.example.com\n")
    assert "2 images: 1 ok, **1 failing verify**; 1 changed since before the release of 2026-12-05" in text
    assert "| app | tags | linux/amd64 | linux/arm64 | linux/arm/v7 |" in text
    assert "| 1.0 | 1.0 | 1.1 MB | 1.1 MB (+600.0 kB) ⚠ | 1.1 MB (+86.4 kB) |" in text
    assert "| **missing** | · | · |" in text
