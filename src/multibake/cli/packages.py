"""What ``multibake diff`` shows under its table: the packages the SBOMs of a changed image say changed, and notes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from multibake.compare.diff import Report as DiffReport
    from multibake.compare.diff import TagDiff
    from multibake.compare.sbom import PackageChange


def package_json(changes: Iterable[PackageChange]) -> list[dict[str, Any]]:
    """``diff --json``'s packages of one platform: type, name, version before and after (null: none)."""
    return [{"type": c.kind, "name": c.name, "before": c.before, "after": c.after} for c in changes]


def package_lines(found: DiffReport, shown: list[TagDiff]) -> str:
    """Per tag and platform whose SBOMs differ: each package added (+), removed (-) or changed (~)."""
    lines = []
    seen: set[tuple[str, str]] = set()  # an image behind several tags is listed once
    for t in shown:
        for row in t.platforms:
            key = (row.old.digest if row.old else "", row.new.digest if row.new else "")
            if not row.packages or key in seen:
                continue
            seen.add(key)
            lines.append(f"\npackages of {t.ref.removeprefix(found.registry + '/')} {row.platform}:")
            for c in row.packages:
                sign = "+" if c.before is None else "-" if c.after is None else "~"
                version = c.after if c.before is None else c.before if c.after is None else f"{c.before} → {c.after}"
                lines.append(f"  {sign} {c.kind} {c.name} {version}")
    return "\n".join(lines) + ("\n" if lines else "")


def notes_text(found: DiffReport) -> str:
    """The notes under ``diff``'s table, one line each."""
    return "".join(f"\nnote: {line}" for line in found.notes) + ("\n" if found.notes else "")
