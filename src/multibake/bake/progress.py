"""Following a build as it runs: buildx's plain progress → per cell and platform, queued, running or finished.

``Tracker`` reads the lines ``buildx bake --progress plain`` prints and keeps, for each (cell,
platform) of the plan, its state, the step BuildKit is at (``4/7``) and when it started and ended.
It is pure (the clock is passed in) and locked, so a timer thread may read it while bake streams.
``watched`` wraps a bake runner so every bake run feeds a tracker; the text it says
(``still running …``, ``done …``) is made here too. display.py puts it on the terminal.

What BuildKit prints, and what the tracker makes of it (buildx 0.29, BuildKit 0.2x and 0.34):
- a vertex's header is ``#12 [target platform k/n] RUN …`` in a multi-target bake; the platform is
  left out of some steps of a multi-platform target (then the step counts for all its platforms),
  and bake leaves the target out when it runs a single build (then lines belong to that target);
- a step deduplicated across targets is named after one of them (the first to ask for it), so a
  child may show its parent's steps for a while;
- a target ends with ``resolving provenance for metadata file`` (multibake always asks for the
  metadata file): once per builder node that built some of it, so on a multi-node builder a target
  whose platforms may span several nodes is finished only when that many came, else when bake ends;
- ``#12 CACHED``, ``#12 DONE 1.2s``, ``#12 ERROR: …``, ``#12 CANCELED`` end a vertex; vertex ids
  start again at #0 on every bake run;
- the plain printer names a vertex when it prints something of it: a step that prints nothing shows
  up when it ends or when the printer moves on, so a platform may look queued while it runs.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from multibake.docker import Runner
from multibake.failures import IGNORED_ERROR
from multibake.plan.model import Plan

Key = tuple[str, str]  # (cell target, platform)
Clock = Callable[[], float]

_LINE = re.compile(r"^#(\d+) (.*)$")
_BRACKETS = re.compile(r"^\[([^\]]*)\]\s*(.*)$")
_STEP = re.compile(r"^(\d+)/(\d+)$")
_SETUP = re.compile(r"^(building with|importing cache manifest|load |resolve image config)")


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CACHED = "cached"  # finished, every step answered from cache
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"  # its bake run ended (another cell failed, or an interrupt) before it finished

    @property
    def finished(self) -> bool:
        return self not in (State.QUEUED, State.RUNNING)


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    """One platform of one cell."""

    cell: str
    platform: str
    state: State = State.QUEUED
    step: tuple[int, int] | None = None  # the step BuildKit started last: (k, n)
    started: float | None = None
    ended: float | None = None
    executed: bool = False  # a step ran rather than coming from cache

    def elapsed(self, now: float) -> float | None:
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else now) - self.started


@dataclass(frozen=True, kw_only=True, slots=True)
class Finished:
    """A cell all of whose platforms finished."""

    cell: str
    state: State  # DONE, CACHED or FAILED
    platforms: tuple[str, ...]
    seconds: float


@dataclass(frozen=True, slots=True)
class _Source:
    """What a bake target's lines are about."""

    cell: str
    platforms: tuple[str, ...]
    own: bool  # the cell's own target; False: a view of it, built for a child on fewer platforms


class VertexKind(StrEnum):
    """What a vertex of BuildKit's graph is to its cell."""

    STEP = "step"  # a numbered Dockerfile step
    EXPORT = "export"  # the image written (the cell's end on a node)
    PROVENANCE = "provenance"  # the attestation resolved (the very end, when attestations are on)
    WORK = "work"  # other work of the cell
    SETUP = "setup"  # before the cell's steps (loading the Dockerfile, resolving images)


@dataclass(slots=True)
class _Vertex:
    target: str
    keys: tuple[Key, ...]
    kind: VertexKind
    cached: bool = False


def sources(plan: Plan) -> dict[str, _Source]:
    """bake target → the cell (and platforms) it builds: cells, their per-platform targets, views."""
    out: dict[str, _Source] = {}
    for c in plan.cells:
        out[c.target] = _Source(c.target, c.platforms, own=not c.split)
        out.update((p.target, _Source(c.target, (p.platform,), own=True)) for p in c.split)
    cells = {c.target for c in plan.cells}
    out.update((v.target, _Source(v.parent, v.platforms, own=False)) for v in plan.views if v.parent in cells)
    return out


def _platform_of(token: str, platforms: tuple[str, ...]) -> tuple[str, ...]:
    """The platforms a bracket's platform token names: ``linux/arm64``, or ``linux/amd64->arm64`` for a
    stage built on the build platform for another one; all of them when it names none."""
    wanted = token.rsplit("->", maxsplit=1)[-1]
    hit = tuple(p for p in platforms if p == wanted or p.endswith("/" + wanted))
    return hit[:1] or platforms


def _kind(tokens: Sequence[str], op: str, step: bool) -> VertexKind:
    """What a vertex is to its cell: a step, its end (export, provenance), other work, or setup before it."""
    if step:
        return VertexKind.STEP
    if op.startswith("resolving provenance"):
        return VertexKind.PROVENANCE
    if op.startswith("exporting to "):  # image, oci/docker image format, client directory
        return VertexKind.EXPORT
    if "internal" in tokens or _SETUP.match(op):
        return VertexKind.SETUP
    return VertexKind.WORK


class Tracker:
    """Per cell and platform, what a build is doing; fed buildx's lines, read from any thread."""

    def __init__(self, plan: Plan, *, nodes: int = 1, clock: Clock = time.monotonic) -> None:
        self._rows = {(c.target, p): Row(cell=c.target, platform=p) for c in plan.cells for p in c.platforms}
        self._sources = sources(plan)
        self._nodes = max(1, nodes)
        self._clock = clock
        self._lock = threading.Lock()
        self._run: tuple[str, ...] = ()
        self._vertices: dict[str, _Vertex] = {}
        self._ends: dict[VertexKind, Counter[str]] = {
            VertexKind.PROVENANCE: Counter(),
            VertexKind.EXPORT: Counter(),
        }  # kind → target → nodes
        self._announced: set[str] = set()
        self._settled = False  # a platform finished since finished() last looked
        self._previous = ""  # the last line's vertex id; "" after any other line
        self.began: float | None = None  # when the first bake run started

    @property
    def targets(self) -> frozenset[str]:
        return frozenset(self._sources)

    def rows(self) -> tuple[Row, ...]:
        with self._lock:
            return tuple(self._rows.values())

    # --- bake runs ------------------------------------------------------------------------------

    def begin(self, targets: Sequence[str]) -> None:
        """A bake run of ``targets`` starts: their unfinished (or failed, retried) platforms are queued again."""
        with self._lock:
            now = self._clock()
            self.began = self.began if self.began is not None else now
            self._run = tuple(targets)
            self._vertices.clear()
            for counts in self._ends.values():
                counts.clear()
            self._previous = ""
            for target in targets:
                source = self._sources.get(target)
                if source is None or not source.own:
                    continue
                for key in self._keys(source, source.platforms):
                    if self._rows[key].state not in (State.DONE, State.CACHED):
                        self._rows[key] = replace(self._rows[key], state=State.QUEUED, ended=None)
                        self._announced.discard(source.cell)  # said again when it finishes again

    def end(self, ok: bool) -> None:
        """The bake run ended: its targets finished when it succeeded; if not, those whose image was exported
        finished (no later run builds them again) and what was left is canceled."""
        with self._lock:
            now = self._clock()
            for target in self._run:
                if ok or (target in self._sources and self._ended(target, VertexKind.EXPORT)):
                    self._finish(target, now)
                else:
                    self._set(self._own_keys(target), State.CANCELED, now)
            self._run = ()

    # --- lines ------------------------------------------------------------------------------------

    def feed(self, line: str) -> None:
        with self._lock:
            self._feed(line.rstrip("\r\n"), self._clock())

    def _feed(self, line: str, now: float) -> None:
        m = _LINE.match(line)
        if m is None:
            self._previous = ""
            return
        vid, rest = m.groups()
        # a header starts each block (after a blank line); a bracketed one is known by its shape
        header = rest.startswith("[") or self._previous != vid
        self._previous = vid
        vertex = self._vertices.get(vid)
        if vertex is not None and self._event(vertex, rest, now):
            return
        if header and rest != "..." and not rest.startswith(("DONE", "ERROR")) and rest not in ("CACHED", "CANCELED"):
            self._header(vid, rest, now)

    def _event(self, vertex: _Vertex, rest: str, now: float) -> bool:
        """A known vertex cached, done, failed or canceled; False when the line is none of those."""
        if rest == "CACHED":
            vertex.cached = True
        elif rest.startswith("DONE"):
            self._done(vertex, now)
        elif rest.startswith("ERROR"):
            if not IGNORED_ERROR.search(rest):
                self._ran(vertex)  # a step that failed ran
                self._set(vertex.keys, State.FAILED, now)
        elif rest == "CANCELED":
            self._set(vertex.keys, State.CANCELED, now)
        else:
            return False
        return True

    def _header(self, vid: str, rest: str, now: float) -> None:
        brackets = _BRACKETS.match(rest)
        tokens, op = (brackets.group(1).split(), brackets.group(2)) if brackets else ([], rest)
        if tokens and tokens[0] in self._sources:
            target = tokens.pop(0)
        elif len(self._run) == 1 and not (tokens and tokens[0] in ("internal", "auth")):
            target = self._run[0]  # bake names no target when it runs a single build
        else:
            self._vertices.pop(vid, None)
            return
        source = self._sources[target]
        step = next((s for t in tokens if (s := _STEP.match(t))), None)
        named = next((t for t in tokens if "/" in t and not _STEP.match(t)), None)
        keys = self._keys(source, _platform_of(named, source.platforms) if named else source.platforms)
        kind = _kind(tokens, op, step is not None)
        known = self._vertices.get(vid)
        self._vertices[vid] = _Vertex(target, keys, kind, cached=known.cached if known else False)
        # BuildKit names a vertex again when it prints more of it: only a new one moves the step on
        if kind in (VertexKind.STEP, VertexKind.WORK, VertexKind.EXPORT) and (known is None or known.keys != keys):
            self._start(keys, (int(step.group(1)), int(step.group(2))) if step else None, now)

    def _start(self, keys: tuple[Key, ...], step: tuple[int, int] | None, now: float) -> None:
        for key in keys:
            row = self._rows[key]
            if row.state.finished:
                continue
            started = row.started if row.started is not None else now
            self._rows[key] = replace(row, state=State.RUNNING, started=started, step=step or row.step)

    def _ran(self, vertex: _Vertex) -> None:
        if vertex.kind is VertexKind.STEP and not vertex.cached:
            for key in vertex.keys:
                self._rows[key] = replace(self._rows[key], executed=True)

    def _done(self, vertex: _Vertex, now: float) -> None:
        self._ran(vertex)
        if vertex.kind in (VertexKind.PROVENANCE, VertexKind.EXPORT) and self._sources[vertex.target].own:
            self._ends[vertex.kind][vertex.target] += 1
            if self._ended(vertex.target, VertexKind.PROVENANCE):
                self._finish(vertex.target, now)

    def _ended(self, target: str, kind: VertexKind) -> bool:
        """Whether every node that built part of ``target`` said it ended (never more nodes than platforms)."""
        return self._ends[kind][target] >= min(self._nodes, len(self._sources[target].platforms))

    def _finish(self, target: str, now: float) -> None:
        for key in self._own_keys(target):
            row = self._rows[key]
            if not row.state.finished:
                state = State.DONE if row.executed else State.CACHED
                started = row.started if row.started is not None else now
                # every step ended, also those BuildKit named after another cell (shared with a parent,
                # or deduplicated) or never named at all: a finished row shows n/n, not the last it saw
                step = (row.step[1], row.step[1]) if row.step else None
                self._rows[key] = replace(row, state=state, started=started, ended=now, step=step)
                self._settled = True

    def _set(self, keys: Sequence[Key], state: State, now: float) -> None:
        for key in keys:
            row = self._rows[key]
            if not row.state.finished:
                self._rows[key] = replace(row, state=state, ended=now)
                self._settled = True

    def _keys(self, source: _Source, platforms: tuple[str, ...]) -> tuple[Key, ...]:
        return tuple((source.cell, p) for p in platforms if (source.cell, p) in self._rows)

    def _own_keys(self, target: str) -> tuple[Key, ...]:
        source = self._sources.get(target)
        return self._keys(source, source.platforms) if source is not None and source.own else ()

    # --- cells ------------------------------------------------------------------------------------

    def finished(self) -> list[Finished]:
        """Cells that finished since the last call (done, cached or failed; canceled ones are not said)."""
        with self._lock:
            if not self._settled:  # called after every chunk of output: most of the time, nothing to see
                return []
            self._settled = False
            by_cell: dict[str, list[Row]] = {}
            for row in self._rows.values():
                by_cell.setdefault(row.cell, []).append(row)
            out = []
            for cell, rows in by_cell.items():
                if cell in self._announced or not all(r.state.finished for r in rows):
                    continue
                states = {r.state for r in rows}
                if State.FAILED in states:
                    state = State.FAILED
                elif State.CANCELED in states:
                    continue
                else:
                    state = State.DONE if State.DONE in states else State.CACHED
                self._announced.add(cell)
                out.append(
                    Finished(cell=cell, state=state, platforms=tuple(r.platform for r in rows), seconds=_span(rows))
                )
            return out


def _span(rows: Sequence[Row]) -> float:
    starts = [r.started for r in rows if r.started is not None]
    ends = [r.ended for r in rows if r.ended is not None]
    return max(ends) - min(starts) if starts and ends else 0.0


def watched(inner: Runner, tracker: Tracker, finished: Callable[[list[Finished]], None]) -> Runner:
    """``inner``, with every bake run feeding ``tracker``; ``finished`` hears of each cell that finishes."""

    def run(argv: Sequence[str]) -> Iterator[str]:
        # multibake's bake argv ends with its targets (command_line in invocation.py)
        targets = list(_trailing(argv, tracker.targets))[::-1]
        tracker.begin(targets)
        ok = False
        try:
            for chunk in inner(argv):
                for line in chunk.splitlines() or [""]:
                    tracker.feed(line)
                yield chunk
                finished(tracker.finished())  # after bake's own line about it is shown
            ok = True
        finally:
            tracker.end(ok)
            finished(tracker.finished())

    return run


def _trailing(argv: Sequence[str], known: frozenset[str]) -> Iterator[str]:
    for arg in reversed(argv):
        if arg not in known:
            return
        yield arg


# --- what is said -------------------------------------------------------------------------------
