"""``multibake gc``'s output (a table of what goes or went, the ``multibake.gc/v1`` JSON), and size gate breaches."""

from __future__ import annotations

from typing import Any

from multibake.maintain.gc import GcReport, Outcome
from multibake.release.gate import Breach, size_text

GC_SCHEMA = "multibake.gc/v1"


def gc_json(found: GcReport) -> dict[str, Any]:
    return {
        "schema": GC_SCHEMA,
        "registry": found.registry,
        "applied": found.applied,
        "staging_grace": found.grace,
        "ok": found.ok,
        "steps": [
            {
                "action": o.step.action.value,
                "repository": o.step.repository,
                "digest": o.step.digest,
                "tags": list(o.step.tags),
                "why": o.step.why,
                "freed": o.step.freed,
                "done": o.done,
                "problem": o.problem,
            }
            for o in found.outcomes
        ],
        "freed": found.freed,
        "kept_tags": found.kept,
        "notes": list(found.notes),
    }


def _what(o: Outcome) -> str:
    repo = o.step.repository.rpartition("/")[2]
    if o.step.tags:
        return "\n".join(f"{repo}:{t}" for t in o.step.tags)
    return f"{repo}@{o.step.digest.removeprefix('sha256:')[:12]}"


def _action(o: Outcome, applied: bool) -> str:
    if not applied:
        return o.step.action.value
    if o.problem is not None:
        return "failed"
    return "deleted" if o.step.action.value == "delete" else "untagged"


def gc_table(found: GcReport) -> str:
    head = "gc --apply" if found.applied else "dry run (gc --apply deletes)"
    lines = [f"multibake gc on {found.registry}: {head}; staging grace {found.grace}"]
    rows = []
    for o in found.outcomes:
        for i, what in enumerate(_what(o).splitlines()):
            first = i == 0
            rows.append(
                [
                    _action(o, found.applied) if first else "",
                    what,
                    o.step.digest.removeprefix("sha256:")[:12] if first else "",
                    (o.problem or o.step.why) if first else "",
                    size_text(o.step.freed) if first and o.step.freed else "",
                ]
            )
    if rows:
        widths = [max(len(r[i]) for r in [["ACTION", "TAG", "DIGEST", "WHY", "FREES"], *rows]) for i in range(5)]
        for r in [["ACTION", "TAG", "DIGEST", "WHY", "FREES"], *rows]:
            lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    lines += [f"note: {n}" for n in found.notes]
    verb = "freed up to" if found.applied else "would free up to"
    deletes = sum(o.step.action.value == "delete" for o in found.outcomes)
    untags = len(found.outcomes) - deletes
    failed = sum(o.problem is not None for o in found.outcomes)
    summary = (
        f"{deletes} manifest deletes, {untags} tags removed alone: {verb} {size_text(found.freed)} "
        f"once the registry's garbage collection runs; {found.kept} tags kept"
    )
    if not found.outcomes:
        summary = f"nothing to delete; {found.kept} tags kept"
    lines.append(summary + (f"; {failed} failed (rerun to finish)" if failed else ""))
    return "\n".join(lines) + "\n"


def breach_json(breach: Breach) -> dict[str, Any]:
    """A platform image over the size gate, for ``diff --json``'s ``gate``."""
    return {
        "ref": breach.ref,
        "platform": breach.platform,
        "before": breach.before,
        "after": breach.after,
        "limit": breach.limit,
        "grown_layers": [{"digest": d, "bytes": n} for d, n in breach.grown],
    }
