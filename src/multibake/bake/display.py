"""How a build's output reaches the terminal: verbatim in CI, a live table of cells and platforms on a terminal.

``output(progress)`` gives the release its ``echo`` (buildx's lines and multibake's commentary) and
its ``watch``: a context around the bake runs in which a ``progress.Tracker`` follows them.

- plain (CI): buildx's lines verbatim; every ``MULTIBAKE_PROGRESS_INTERVAL`` seconds (default 30,
  0: never) a ``still running`` line naming the cells and platforms at work, written by a timer
  thread because a RUN step under QEMU keeps buildx silent for minutes; a line when a cell finishes.
- quiet: the same, but of buildx's output only its errors.
- tty: a rich Live table (cell, platform, step, state, elapsed) refreshed 4 times a second, left on
  screen in its final state; errors printed above it in full. rich is imported only here, lazily.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from multibake.bake.lines import duration, finished_line, step_text, still_running
from multibake.bake.progress import Clock, Finished, Row, State, Tracker
from multibake.bake.progress import watched as watched_runner
from multibake.docker import Runner
from multibake.errors import UsageError
from multibake.failures import IGNORED_ERROR
from multibake.kinds import Echo, Progress
from multibake.plan.model import Plan

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

Wrap = Callable[[Runner], Runner]  # a bake runner → the same, followed
Watch = Callable[[Plan, int], AbstractContextManager[Wrap]]  # (plan, builder nodes) → a context around the bake runs

ENV_INTERVAL = "MULTIBAKE_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0
REFRESH_PER_SECOND = 4
_VERTEX = re.compile(r"^#(\d+) (.*)$")
_STYLE = {
    State.QUEUED: "dim",
    State.RUNNING: "yellow",
    State.CACHED: "cyan",
    State.DONE: "green",
    State.FAILED: "bold red",
    State.CANCELED: "magenta",
}


@dataclass(frozen=True, slots=True)
class Output:
    echo: Echo
    watch: Watch


@contextmanager
def unwatched(plan: Plan, nodes: int) -> Iterator[Wrap]:
    """No progress: bake runs as it is (tests, and callers without a terminal to show it on)."""
    yield lambda runner: runner


def interval(env: Mapping[str, str]) -> float:
    """Seconds between two ``still running`` lines, from MULTIBAKE_PROGRESS_INTERVAL."""
    text = env.get(ENV_INTERVAL, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 <= value < math.inf):
        raise UsageError(f"{ENV_INTERVAL}={text!r}: expected the seconds between 'still running' lines (0: none)")
    return value


def output(progress: Progress, *, env: Mapping[str, str] = os.environ, stream: TextIO | None = None) -> Output:
    """Where a release's output goes for ``--progress``: a terminal gets the live table unless told otherwise."""
    every = interval(env)
    if progress is Progress.TTY or (progress is Progress.AUTO and (stream or sys.stderr).isatty()):
        from rich.console import Console

        console = Console(file=stream, stderr=stream is None, highlight=False, force_terminal=True)
        terminal = Terminal(console)
        return Output(echo=terminal.echo, watch=terminal.watch)

    def write(line: str) -> None:
        print(line, file=stream or sys.stderr, flush=True)  # sys.stderr as it is then (tests swap it)

    plain = Plain(write, quiet=progress is Progress.QUIET, interval=every)
    return Output(echo=plain.echo, watch=plain.watch)


class ErrorLines:
    """What a terminal (and ``--progress quiet``) shows of buildx's output: multibake's lines and errors in full.

    A step's ``#12 ERROR`` comes with the step's header; buildx's closing summary (each failed step's
    last output, the Dockerfile lines around it, ``ERROR: target …``) is shown whole, except its
    blocks about a cache that does not exist yet, which do not stop the build.
    """

    def __init__(self) -> None:
        self._headers: dict[str, str] = {}
        self._block: list[str] | None = None  # a ``------`` block of the summary, until it closes

    def feed(self, line: str) -> list[tuple[str, str]]:
        """The lines to show for ``line``, each with a rich style."""
        if line.startswith("multibake:"):
            return [(line, "yellow")]
        if m := _VERTEX.match(line):
            vid, rest = m.groups()
            if rest.startswith("ERROR") and not IGNORED_ERROR.search(rest):
                header = self._headers.get(vid)
                return [*([(header, "dim")] if header else []), (line, "bold red")]
            if rest.startswith("["):
                self._headers[vid] = line
            return []
        if line == "------":
            if self._block is None:
                self._block = [line]
                return []
            block, self._block = [*self._block, line], None
            return [] if any(IGNORED_ERROR.search(b) for b in block) else [(b, "red") for b in block]
        if self._block is not None:
            self._block.append(line)
            return []
        if not line.strip():
            return []
        return [(line, "bold red" if line.startswith("ERROR") else "")]


class Ticker:
    """Calls ``tick`` every ``interval`` seconds on a thread of its own while the ``with`` lasts.

    A daemon thread that waits on an event, so leaving the block (an error, Ctrl-C) stops it at once
    and an interrupted multibake still exits promptly. ``interval`` 0: no thread.
    """

    def __init__(self, tick: Callable[[], None], interval: float) -> None:
        self._tick = tick
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Ticker:
        if self._interval > 0:
            self._thread = threading.Thread(target=self._loop, name="multibake-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._tick()


class Plain:
    """CI: buildx's lines as they come (quiet: its errors only), what still runs now and then, each cell that ends."""

    def __init__(
        self,
        write: Echo,
        *,
        quiet: bool = False,
        interval: float = DEFAULT_INTERVAL,
        clock: Clock = time.monotonic,
        ticker: Callable[[Callable[[], None], float], AbstractContextManager[object]] = Ticker,
    ) -> None:
        self._write = write
        self._errors = ErrorLines() if quiet else None
        self._interval = interval
        self._clock = clock
        self._ticker = ticker  # tests pass one they tick by hand, on a fake clock
        self._lock = threading.Lock()  # the timer thread writes too: one line at a time

    def say(self, line: str) -> None:
        with self._lock:
            self._write(line)

    def echo(self, line: str) -> None:
        for text in [text for text, _ in self._errors.feed(line)] if self._errors else [line]:
            self.say(text)

    def tick(self, tracker: Tracker) -> None:
        """Say what is still running, if anything is."""
        line = still_running(tracker.rows(), tracker.began, self._clock())
        if line is not None:
            self.say(line)

    def finished(self, cells: Sequence[Finished]) -> None:
        for cell in cells:
            self.say(finished_line(cell))

    @contextmanager
    def watch(self, plan: Plan, nodes: int) -> Iterator[Wrap]:
        tracker = Tracker(plan, nodes=nodes, clock=self._clock)
        with self._ticker(lambda: self.tick(tracker), self._interval):
            try:
                yield lambda runner: watched_runner(runner, tracker, self.finished)
            finally:
                tracker.end(ok=False)  # a bake run an interrupt cut short: what it left is canceled


class Terminal:
    """A terminal: a live table of every cell and platform, with errors printed above it."""

    def __init__(self, console: Console, clock: Clock = time.monotonic) -> None:
        self._console = console
        self._clock = clock
        self._errors = ErrorLines()

    def echo(self, line: str) -> None:
        for text, style in self._errors.feed(line):
            self._console.print(text, style=style or None, markup=False, highlight=False, soft_wrap=True)

    @contextmanager
    def watch(self, plan: Plan, nodes: int) -> Iterator[Wrap]:
        from rich.live import Live

        tracker = Tracker(plan, nodes=nodes, clock=self._clock)
        final = False

        def render() -> RenderableType:
            # while live, a table taller than the terminal shows what is left to do; the last one shows all
            limit = None if final else max(3, self._console.size.height - 8)
            return table(tracker.rows(), self._clock(), limit=limit, began=tracker.began)

        with Live(console=self._console, get_renderable=render, refresh_per_second=REFRESH_PER_SECOND):
            try:
                yield lambda runner: watched_runner(runner, tracker, lambda cells: None)
            finally:
                tracker.end(ok=False)
                final = True


def table(rows: Sequence[Row], now: float, *, limit: int | None = None, began: float | None = None) -> Table:
    """The progress table: one row per cell and platform; its caption counts them by state, and the time."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    shown = list(rows)
    if limit is not None and len(shown) > limit:
        shown = [r for r in rows if not r.state.finished][:limit]
    counts = {state: sum(r.state is state for r in rows) for state in State}
    caption = ", ".join(f"{n} {state.value}" for state, n in counts.items() if n)
    if len(shown) < len(rows):
        caption += f" ({len(rows) - len(shown)} not shown)"
    if began is not None:
        caption += f" after {duration(now - began)}"
    out = Table(box=box.SIMPLE_HEAD, caption=caption, caption_justify="left", pad_edge=False)
    # on a narrow terminal the cell and platform names are cut (…): step, state and elapsed time always show
    for column in ("cell", "platform"):
        out.add_column(column, no_wrap=False, overflow="ellipsis", min_width=8)
    for column in ("step", "state", "elapsed"):
        out.add_column(column, justify="right" if column == "elapsed" else "left", no_wrap=True)
    for row in shown:
        elapsed = row.elapsed(now)
        out.add_row(
            row.cell,
            row.platform,
            step_text(row),
            Text(row.state.value, style=_STYLE[row.state]),
            duration(elapsed) if elapsed is not None else "",
        )
    return out
