"""``diff --max-growth``: the platform images of a comparison that grew past a limit (release/gate.py decides)."""

from __future__ import annotations

from multibake.compare.diff import Report
from multibake.config.upkeep import Limit
from multibake.release.gate import Breach, check


def grown(found: Report, limit: Limit) -> list[Breach]:
    """Each platform image that grew past ``limit``, named once (a per-platform tag shows its index's image)."""
    seen: set[str] = set()
    out: list[Breach] = []
    for tag in found.tags:
        for row in tag.platforms:
            if row.old is None or row.new is None or row.new.digest in seen:
                continue
            breach = check(tag.ref, row.platform, row.old.sizes, row.new.sizes, limit)
            if breach is not None:
                seen.add(row.new.digest)
                out.append(breach)
    return out
