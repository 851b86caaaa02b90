"""What progress says in one line: durations, steps, what still runs, what finished."""

from __future__ import annotations

from collections.abc import Sequence

from multibake.bake.progress import Finished, Row, State

_SHOWN = 8  # running rows named in one "still running" line


def duration(seconds: float) -> str:
    """``4.2s``, ``45s``, ``2m10s``, ``1h02m``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def step_text(row: Row) -> str:
    return f"{row.step[0]}/{row.step[1]}" if row.step else ""


def still_running(rows: Sequence[Row], began: float | None, now: float) -> str | None:
    """``multibake: still running after 2m10s (3 queued, 5 finished): nodejs-22 linux/arm64 step 4/7, linux/arm/v7
    step 3/7; nodejs-20 linux/amd64 step 2/7``; None when nothing runs."""
    running = [r for r in rows if r.state is State.RUNNING]
    if not running or began is None:
        return None
    by_cell: dict[str, list[str]] = {}
    for r in running[:_SHOWN]:
        by_cell.setdefault(r.cell, []).append(r.platform + (f" step {step_text(r)}" if r.step else ""))
    named = [f"{cell} {', '.join(platforms)}" for cell, platforms in by_cell.items()]
    if len(running) > _SHOWN:
        named.append(f"and {len(running) - _SHOWN} more")
    queued = sum(r.state is State.QUEUED for r in rows)
    ended = sum(r.state.finished for r in rows)
    counts = ", ".join(f"{n} {what}" for n, what in ((queued, "queued"), (ended, "finished")) if n)
    return (
        f"multibake: still running after {duration(now - began)}{f' ({counts})' if counts else ''}: {'; '.join(named)}"
    )


def finished_line(cell: Finished) -> str:
    """``multibake: done nodejs-22 (linux/amd64, linux/arm64) in 1m02s``."""
    what = {State.DONE: "done", State.CACHED: "cached", State.FAILED: "failed"}[cell.state]
    return f"multibake: {what} {cell.cell} ({', '.join(cell.platforms)}) in {duration(cell.seconds)}"
