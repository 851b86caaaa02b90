"""Turning plans and results into text and JSON for people and scripts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from multibake.cli import fit
from multibake.cli.packages import notes_text, package_json, package_lines
from multibake.kinds import Change, PlatformSize, Status
from multibake.plan.model import Plan
from multibake.platforms import Scheme, name
from multibake.release import timing

if TYPE_CHECKING:
    from multibake.bake.run import BuildReport
    from multibake.compare.diff import Image, PlatformDiff
    from multibake.compare.diff import Report as DiffReport
    from multibake.compare.update import Outcome
    from multibake.preflight.bases import CellBases
    from multibake.release.publish import TagCheck

PLAN_SCHEMA = "multibake.plan/v1"
# what the build summary leaves out first on a narrow terminal: digests (in --json and verify), then the base
BUILD_DROPS = ("PLATFORM DIGESTS", "INDEX", "BASE", "TIME")


def plan_json(plan: Plan, bases: Mapping[str, CellBases] | None = None) -> dict[str, Any]:
    """The stable ``plan --json`` document (documented in the README); ``base``: platform → base image."""
    bases = bases or {}
    return {
        "schema": PLAN_SCHEMA,
        "registry": plan.registry,
        "families": [
            {"name": f.name, "image": f.image, "base": f.base, "targets": list(f.targets)} for f in plan.families
        ],
        "cells": [
            {
                "family": c.family,
                "target": c.target,
                "axes": dict(c.axes),
                "platforms": list(c.platforms),
                "context": c.context,
                "dockerfile": c.dockerfile,
                "stage": c.stage,
                "args": dict(c.args),
                "labels": dict(c.labels),
                "tags": list(c.tags),
                "platform_tags": {p: list(refs) for p, refs in c.platform_tags},
                "parent": c.parent,
                "base": dict(bases[c.target].shown) if c.target in bases else {},
                "cache_from": list(c.cache_from),
                "cache_to": list(c.cache_to),
            }
            for c in plan.cells
        ],
    }


def _short(ref: str) -> str:
    return ref.rsplit(":", 1)[1]


def table(headers: list[str], rows: list[list[str]], drop: Sequence[str] = ()) -> str:
    """Aligned columns; on a terminal narrower than the table, ``drop`` columns go first (cli/fit.py)."""
    heads, body, dropped = fit.fit(headers, rows, fit.terminal_width(), drop)
    widths = fit.widths(heads, body)
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in body]
    if dropped:
        lines.append(f"({', '.join(dropped)} left out to fit the terminal; --json has every column)")
    return "\n".join(lines) + "\n"


def plan_table(plan: Plan, bases: Mapping[str, CellBases] | None = None) -> str:
    from multibake.preflight.bases import shown

    bases = bases or {}
    rows = []
    for c in plan.cells:
        rows.append(
            [
                c.family,
                c.target,
                ",".join(name(p, Scheme.SHORT) for p in c.platforms),
                " ".join(f"{k}={v}" for k, v in c.args) or "-",
                ",".join(_short(t) for t in c.tags),
                ",".join(_short(r) for _, refs in c.platform_tags for r in refs) or "-",
                c.parent or "-",
                shown(bases[c.target]) if c.target in bases else "-",
            ]
        )
    headers = ["FAMILY", "TARGET", "PLATFORMS", "ARGS", "TAGS", "PER-PLATFORM TAGS", "PARENT", "BASE"]
    head = table(headers, rows, drop=("PER-PLATFORM TAGS", "ARGS", "PARENT", "BASE"))
    images = sorted({c.image for c in plan.cells})
    return head + f"\n{len(plan.cells)} cells in {len(plan.families)} families; images: {', '.join(images)}\n"


BUILD_SCHEMA = "multibake.build/v1"


def build_json(report: BuildReport, ok: bool | None = None) -> dict[str, Any]:
    """The stable ``build --json`` document (documented in the README); ``ok`` as the exit code says it."""
    b = report.builder
    return {
        "schema": BUILD_SCHEMA,
        "ok": report.ok if ok is None else ok,
        "mode": report.mode.value,
        "route": report.route,
        "nodes": dict(report.nodes),
        "builder": {"name": b.name, "driver": b.driver, "buildx": b.buildx_version, "platforms": list(b.platforms)},
        "retries": list(report.retries),
        "duration": report.duration,
        "steps": {step.value: seconds for step, seconds in report.steps.items()},  # where the time went
        "own": timing.own_seconds(report.steps),  # every step but bake: multibake's own time
        "executed_run_steps": len(report.executed_runs),
        "bake_runs": [
            {
                "targets": list(r.targets),
                "outcome": r.outcome,
                "reason": r.reason,
                "executed_run_steps": list(r.executed_runs),
            }
            for r in report.runs
        ],
        "cells": [
            {
                "target": c.target,
                "family": c.family,
                "status": c.status.value,
                "platforms": list(c.platforms),
                "duration": c.duration,
                "digest": c.digest,
                "platform_digests": dict(c.platform_digests),
                "sizes": {p: {"bytes": s.compressed, "layers": s.layers} for p, s in c.sizes.items()},
                "tags": list(c.tags),
                "error": c.error,
                "log_tail": list(c.log_tail),
                "signatures": [{"image": image, "signature": ref} for image, ref in c.signed],
            }
            for c in report.cells
        ],
    }


def build_table(report: BuildReport) -> str:
    rows = []
    for c in report.cells:
        pdig = " ".join(
            f"{name(p, Scheme.SHORT)}={d.removeprefix('sha256:')[:12]}" for p, d in c.platform_digests.items()
        )
        rows.append(
            [
                c.target,
                ",".join(name(p, Scheme.SHORT) for p in c.platforms),
                c.status,
                f"{c.duration:.1f}s",
                (c.digest or "-").removeprefix("sha256:")[:12],
                pdig or "-",
                ",".join(_short(t) for t in c.tags),
                report.bases.get(c.target, "-"),
            ]
        )
    headers = ["TARGET", "PLATFORMS", "STATUS", "TIME", "INDEX", "PLATFORM DIGESTS", "TAGS", "BASE"]
    text = table(headers, rows, drop=BUILD_DROPS)
    text += sizes_table([(c.target, s) for c in report.cells for s in c.sizes.values()])
    for c in report.cells:
        if c.status.ok or not c.error:
            continue
        text += f"\n{c.target} {c.status}: {c.error}\n"
        text += "".join(f"  | {ln}\n" for ln in c.log_tail)
    built = sum(c.status in (Status.BUILT, Status.PUBLISHED, Status.UNCHANGED) for c in report.cells)
    fresh = sum(c.status is Status.UP_TO_DATE for c in report.cells)
    same = sum(c.status is Status.UNCHANGED for c in report.cells)
    text += (
        f"\n{built}/{len(report.cells)} cells built ({report.mode.value}) in {report.duration:.1f}s"
        + (f", {same} unchanged (no tag moved)" if same else "")
        + (f", {fresh} up to date" if fresh else "")
        + "; "
        f"{len(report.executed_runs)} RUN steps executed; {len(report.runs)} bake run(s)"
        + (f"; route: {report.route}" if report.mode.value == "push" else "")
        + (f", {len(report.retries)} retried" if report.retries else "")
        + "\n"
    )
    return text + (timing.summary(report.steps) + "\n" if report.steps else "")  # the last line: where the time went


def sizes_table(rows: list[tuple[str, PlatformSize]]) -> str:
    """Compressed size and layer count per cell and platform, as the registry serves them."""
    if not rows:
        return ""
    cells = [
        [target, name(s.platform, Scheme.SHORT), f"{s.compressed / 1e6:.1f} MB", str(s.layers)] for target, s in rows
    ]
    return "\n" + table(["TARGET", "PLATFORM", "COMPRESSED", "LAYERS"], cells)


VERIFY_SCHEMA = "multibake.verify/v1"


def verify_json(checks: list[TagCheck]) -> dict[str, Any]:
    """The stable ``verify --json`` document (documented in the README)."""
    return {
        "schema": VERIFY_SCHEMA,
        "ok": all(c.ok for c in checks),
        "tags": [
            {
                "ref": c.ref,
                "target": c.target,
                "kind": c.kind,
                "ok": c.ok,
                "digest": c.digest,
                "platforms": dict(c.platforms),
                "attestations": c.attestations,
                "sizes": {s.platform: {"bytes": s.compressed, "layers": s.layers} for s in c.sizes},
                "problem": c.problem,
                "signatures": [{"image": what, "digest": d, "state": state} for what, d, state in c.signatures],
            }
            for c in checks
        ],
    }


def verify_table(checks: list[TagCheck]) -> str:
    rows = [
        [
            c.ref,
            "multi-arch" if c.platform is None else name(c.platform, Scheme.SHORT),
            "ok" if c.ok else "MISMATCH",
            (c.digest or "-").removeprefix("sha256:")[:12],
            ",".join(name(p, Scheme.SHORT) for p, _ in c.platforms) or "-",
            str(c.attestations) if c.is_index else "-",
            c.problem or "",
        ]
        for c in checks
    ]
    text = table(
        ["TAG", "KIND", "STATUS", "DIGEST", "PLATFORMS", "ATTESTATIONS", "PROBLEM"],
        rows,
        drop=("ATTESTATIONS", "DIGEST"),
    )
    text += sizes_table([(c.target, s) for c in checks for s in c.sizes])
    bad = sum(not c.ok for c in checks)
    return text + f"\n{len(checks) - bad}/{len(checks)} tags match the plan\n"


UPDATE_SCHEMA = "multibake.update/v1"


def update_json(outcome: Outcome) -> dict[str, Any]:
    """The stable ``update --json`` document (documented in the README)."""
    return {
        "schema": UPDATE_SCHEMA,
        "file": outcome.file,
        "changed": outcome.changed,
        "written": outcome.written,
        "axes": [
            {
                "family": a.family,
                "axis": a.axis,
                "source": a.source,
                "line": place.line,
                "changed": a.changed,
                "old": list(a.old),
                "new": list(a.new),
                "added": list(a.added),
                "removed": list(a.removed),
                "missing": list(a.missing),
                "problem": a.problem,
            }
            for a, place in zip(outcome.axes, outcome.places, strict=True)
        ],
        "warnings": [
            {"line": w.location.line, "column": w.location.column, "key": w.location.path, "message": w.message}
            for w in outcome.stale
        ],
    }


def update_text(outcome: Outcome) -> str:
    """One line per axis (old → new, or up to date), the values the registry no longer lists, a summary."""
    lines: list[str] = []
    for a, place in zip(outcome.axes, outcome.places, strict=True):
        old = ", ".join(a.old)
        if a.problem:
            lines.append(f"{place}: {a.problem}; left as it is ({old})")
        elif a.changed:
            lines.append(f"{place}: {old} → {', '.join(a.new)}  ({a.source})")
        else:
            lines.append(f"{place}: up to date ({old})")
        if a.missing:
            lines.append(f"  not listed by {a.source}: {', '.join(a.missing)}")
    changes = sum(a.changed for a in outcome.axes)
    if outcome.written:
        lines.append(f"wrote {outcome.file}: {changes} {_axes(changes)} updated")
    elif changes:
        lines.append(f"{changes} {_axes(changes)} to update: `multibake update --write` applies the change")
    if outcome.problems:
        lines.append(f"{len(outcome.problems)} {_axes(len(outcome.problems))} could not be updated")
    if not changes and not outcome.problems:
        lines.append("every axis is up to date")
    return "\n".join(lines) + "\n"


def _axes(n: int) -> str:
    return "axis" if n == 1 else "axes"


DIFF_SCHEMA = "multibake.diff/v1"


def _image_json(image: Image | None) -> dict[str, Any] | None:
    if image is None:
        return None
    return {"digest": image.digest, "bytes": image.bytes, "layers": image.layers, "base": image.base}


def diff_json(found: DiffReport, show_all: bool = False) -> dict[str, Any]:
    """The stable ``diff --json`` document (documented in the README): changed tags, or all with ``show_all``."""
    return {
        "schema": DIFF_SCHEMA,
        "mode": found.mode,
        "old": found.old,
        "new": found.new,
        "changed": found.changed,
        "summary": {"compared": len(found.tags), **{c.value: found.count(c) for c in Change}},
        "notes": list(found.notes),
        "tags": [
            {
                "ref": t.ref,
                "change": t.change.value,
                "old_ref": t.old.ref if t.old else None,
                "old_digest": t.old.digest if t.old else None,
                "new_digest": t.new.digest if t.new else None,
                "platforms": [
                    {
                        "platform": row.platform,
                        "change": row.change.value,
                        "old": _image_json(row.old),
                        "new": _image_json(row.new),
                        "bytes_delta": row.bytes_delta,
                        "layers_delta": row.layers_delta,
                        "base_changed": row.base_changed,
                        "same_content": row.same_content,
                        "packages": package_json(row.packages),
                    }
                    for row in t.platforms
                ],
            }
            for t in found.tags
            if show_all or t.change is not Change.UNCHANGED
        ],
    }


def _size(n: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _signed(n: int, text: str) -> str:
    return f"+{text}" if n > 0 else text if n < 0 else "±0"


def _diff_cells(row: PlatformDiff) -> list[str]:
    """COMPRESSED, LAYERS and BASE of one platform: old → new (delta) when both sides have it."""
    old, new = row.old, row.new
    if old is None or new is None:
        one = old or new
        assert one is not None
        return [_size(one.bytes), str(one.layers), one.base or "-"]
    if row.change is Change.UNCHANGED:
        return [_size(new.bytes), str(new.layers), new.base or "-"]
    size = f"{_size(old.bytes)} → {_size(new.bytes)} ({_signed(row.bytes_delta, _size(row.bytes_delta))})"
    layers = f"{old.layers} → {new.layers} ({_signed(row.layers_delta, str(row.layers_delta))})"
    base = f"{old.base or '-'} → {new.base or '-'}" if row.base_changed else new.base or "-"
    return [size, layers, base]


def diff_table(found: DiffReport, show_all: bool = False) -> str:
    """One row per tag and platform: changed ones, or all with ``show_all``; a summary line at the end."""
    shown = [t for t in found.tags if show_all or t.change is not Change.UNCHANGED]
    rows = []
    for t in shown:
        ref = t.ref.removeprefix(found.registry + "/")
        for row in t.platforms:
            change = "changed (manifest only)" if row.same_content else row.change.value
            rows.append([ref, name(row.platform, Scheme.SHORT), change, *_diff_cells(row)])
    text = f"comparing {found.old} → {found.new}\n"
    if rows:
        text += "\n" + table(["TAG", "PLATFORM", "CHANGE", "COMPRESSED", "LAYERS", "BASE"], rows, drop=("BASE",))
    text += package_lines(found, shown) + notes_text(found)
    same = found.count(Change.UNCHANGED)
    counts = ", ".join(f"{found.count(c)} {c.value}" for c in (Change.CHANGED, Change.NEW, Change.REMOVED))
    hidden = f" ({'shown' if show_all else 'hidden; --all shows them'})" if same else ""
    return text + f"\n{len(found.tags)} tags compared: {counts}, {same} unchanged{hidden}\n"
