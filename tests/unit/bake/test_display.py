"""Showing a build's progress: plain lines with a timer (driven by hand on a fake clock), the live table, errors."""

from __future__ import annotations

import contextlib
import io
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from rich.console import Console

from multibake.bake import display
from multibake.bake.display import ErrorLines, Plain, Terminal, Ticker, interval, output, table
from multibake.bake.progress import Row, State
from multibake.bake.run import bake_targets
from multibake.cli import options as cli
from multibake.errors import UsageError
from multibake.kinds import Progress
from multibake.plan.model import Plan
from tests.helpers import plan_file

CAPTURES = Path(__file__).parent / "progress"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def plan() -> Plan:
    return plan_file(CAPTURES / "platforms.yaml")


def capture(name: str) -> list[str]:
    return (CAPTURES / name).read_text(encoding="utf-8").splitlines()


def bake_argv(targets: Sequence[str]) -> list[str]:
    return ["docker", "buildx", "bake", "--file", "x.hcl", "--progress", "plain", *targets]


def runner(lines: Sequence[str], fail: bool = False) -> Callable[[Sequence[str]], Iterator[str]]:
    """A bake runner that streams ``lines`` (and then fails, like a failed bake)."""

    def run(argv: Sequence[str]) -> Iterator[str]:
        for line in lines:
            yield line + "\n"
        if fail:
            raise RuntimeError("bake failed")

    return run


class HandTicker:
    """Stands in for the timer thread: the test ticks it."""

    def __init__(self) -> None:
        self.ticks: list[Callable[[], None]] = []
        self.intervals: list[float] = []

    def __call__(self, tick: Callable[[], None], every: float) -> contextlib.nullcontext[None]:
        self.ticks.append(tick)
        self.intervals.append(every)
        return contextlib.nullcontext()


# --- plain (CI) ---------------------------------------------------------------------------------


def test_plain_shows_buildx_verbatim_and_what_still_runs_while_buildx_is_silent(plan: Plan) -> None:
    lines = capture("qemu-silent-run.txt")
    clock, hand, out = Clock(), HandTicker(), list[str]()
    plain = Plain(out.append, interval=30, clock=clock, ticker=hand)
    targets = [t for t in bake_targets(plan) if t != "bad--image"]
    silent = lines.index('#41 [slow-1 linux/arm/v7 1/4] RUN echo "2896927958-1-p14010" > /nonce && sleep 6')
    with plan_watch(plain, plan) as follow:
        stream = iter(follow(runner(lines))(bake_argv(targets)))
        for _ in range(silent + 1):
            plain.echo(next(stream).rstrip("\n"))
            clock.now += 0.01
        clock.now += 120  # two minutes without a line from buildx
        hand.ticks[0]()
        for chunk in stream:
            plain.echo(chunk.rstrip("\n"))
    assert hand.intervals == [30]
    ours = [line for line in out if line.startswith("multibake:")]
    assert [line for line in out if not line.startswith("multibake:")] == lines  # buildx's lines, all, as they came
    still = next(line for line in ours if line.startswith("multibake: still running"))
    assert still.startswith("multibake: still running after 2m0")
    assert "slow-1 linux/arm/v7 step 1/4" in still
    assert [line.split(" (")[0] for line in ours if not line.startswith("multibake: still")] == [
        "multibake: cached split--image",
        "multibake: cached bb--image",
        "multibake: done slow-2",
        "multibake: done slow-1",
    ]
    assert "multibake: done slow-1 (linux/amd64, linux/arm64, linux/arm/v7) in 2m" in out[-1]


def plan_watch(plain: Plain | Terminal, plan: Plan) -> contextlib.AbstractContextManager[display.Wrap]:
    return plain.watch(plan, 1)


def test_plain_says_nothing_when_nothing_runs(plan: Plan) -> None:
    clock, hand, out = Clock(), HandTicker(), list[str]()
    plain = Plain(out.append, clock=clock, ticker=hand)
    with plan_watch(plain, plan):
        hand.ticks[0]()
    assert out == []


def test_quiet_shows_errors_in_full_and_multibake_lines_only(plan: Plan) -> None:
    lines = capture("failure-remote.txt")
    out: list[str] = []
    plain = Plain(out.append, quiet=True, ticker=HandTicker())
    with plan_watch(plain, plan) as follow, pytest.raises(RuntimeError):
        for chunk in follow(runner(lines, fail=True))(bake_argv(bake_targets(plan))):
            plain.echo(chunk.rstrip("\n"))
    text = "\n".join(out)
    failed = out.index('#47 [bad--image linux/amd64 2/3] RUN echo "failing on purpose" >&2 && exit 3')
    assert out[failed : failed + 2] == [
        '#47 [bad--image linux/amd64 2/3] RUN echo "failing on purpose" >&2 && exit 3',
        '#47 ERROR: process "/bin/sh -c echo \\"failing on purpose\\" >&2 && exit 3" did not complete successfully: '
        "exit code: 3",
    ]
    assert ' > [bad--image linux/amd64 2/3] RUN echo "failing on purpose" >&2 && exit 3:' in out
    assert "0.066 failing on purpose" in out and "Dockerfile:4" in out
    assert out[-1].startswith("ERROR: target bad--image: failed to solve")
    assert "importing cache manifest" not in text and "#36" not in text  # a missing cache, a step that went well
    assert "multibake: failed bad--image (linux/amd64, linux/arm64)" in text


def test_a_ticker_ticks_on_its_own_thread_and_stops_with_its_block() -> None:
    ticked = threading.Event()
    count = [0]

    def tick() -> None:
        count[0] += 1
        if count[0] >= 3:
            ticked.set()

    with Ticker(tick, 0.01):
        assert ticked.wait(5)
    after = count[0]
    time.sleep(0.05)
    assert count[0] == after
    assert not [t for t in threading.enumerate() if t.name == "multibake-progress"]


def test_an_interrupt_stops_the_ticker_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt), Ticker(lambda: None, 30):
        raise KeyboardInterrupt
    assert time.monotonic() - started < 1
    assert not [t for t in threading.enumerate() if t.name == "multibake-progress"]


def test_an_interrupted_run_leaves_its_cells_canceled(plan: Plan) -> None:
    out: list[str] = []
    plain = Plain(out.append, ticker=HandTicker())

    def interrupted(argv: Sequence[str]) -> Iterator[str]:
        yield "#5 [slow-1 linux/arm64 1/4] RUN a\n"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), plan_watch(plain, plan) as follow:
        for chunk in follow(interrupted)(bake_argv(["slow-1"])):
            plain.echo(chunk.rstrip("\n"))
    assert out == ["#5 [slow-1 linux/arm64 1/4] RUN a"]  # canceled cells are not announced


# --- a terminal ---------------------------------------------------------------------------------


def test_a_terminal_gets_a_live_table_that_ends_in_the_final_state_and_errors_in_full(plan: Plan) -> None:
    file = io.StringIO()
    console = Console(file=file, width=150, color_system=None, force_terminal=False)
    clock = Clock()
    terminal = Terminal(console, clock)
    with pytest.raises(RuntimeError), plan_watch(terminal, plan) as follow:
        for chunk in follow(runner(capture("failure-remote.txt"), fail=True))(bake_argv(bake_targets(plan))):
            clock.now += 0.05
            terminal.echo(chunk.rstrip("\n"))
    text = file.getvalue()
    assert "#47 ERROR: process" in text and "Dockerfile:4" in text and "ERROR: target bad--image" in text
    assert "#36 [bad--image linux/amd64 1/3]" not in text  # steps are in the table, not the scroll
    final = text[text.index("cell") :]
    rows = {tuple(line.split()[:4]) for line in final.splitlines() if line.strip()}
    assert ("bad--image", "linux/amd64", "2/3", "failed") in rows
    assert ("bad--image", "linux/arm64", "1/3", "canceled") in rows
    assert ("bb--image", "linux/arm/v7", "4/4", "cached") in rows
    assert ("split--image", "linux/arm64", "3/3", "cached") in rows  # finished: all its steps, not the last one seen
    assert "5 cached, 1 failed, 7 canceled" in final


def test_the_live_table_shows_steps_states_and_elapsed_time() -> None:
    rows = [
        Row(cell="nodejs-22", platform="linux/arm64", state=State.RUNNING, step=(4, 7), started=10.0),
        Row(cell="nodejs-22", platform="linux/amd64", state=State.DONE, step=(7, 7), started=10.0, ended=40.0),
        Row(cell="nodejs-20", platform="linux/arm64", state=State.QUEUED),
    ]
    file = io.StringIO()
    Console(file=file, width=100, color_system=None).print(table(rows, now=140.0, began=5.0))
    lines = [line.split() for line in file.getvalue().splitlines() if line.strip()]
    assert lines[0] == ["cell", "platform", "step", "state", "elapsed"]
    assert ["nodejs-22", "linux/arm64", "4/7", "running", "2m10s"] in lines
    assert ["nodejs-22", "linux/amd64", "7/7", "done", "30s"] in lines
    assert ["nodejs-20", "linux/arm64", "queued"] in lines
    assert lines[-1] == ["1", "queued,", "1", "running,", "1", "done", "after", "2m15s"]


def test_a_table_taller_than_the_terminal_shows_what_is_left_to_do() -> None:
    rows = [Row(cell=f"c{i}", platform="linux/amd64", state=State.DONE, started=0, ended=1) for i in range(20)]
    rows.append(Row(cell="slow", platform="linux/arm64", state=State.RUNNING, started=0))
    file = io.StringIO()
    Console(file=file, width=100, color_system=None).print(table(rows, now=5.0, limit=5))
    text = file.getvalue()
    assert "slow" in text and "c3 " not in text
    assert "20 done, 1 running" not in text and "1 running, 20 done (20 not shown)" in text


def test_error_lines_keep_only_errors_and_multibake_lines() -> None:
    errors = ErrorLines()
    shown = [
        text
        for line in [
            "multibake: bake: retrying",
            "#3 [a linux/arm64 2/3] RUN x",
            "#3 0.1 output",
            "#3 ERROR: process did not complete successfully: exit code: 1",
            "#4 [a] importing cache manifest from r/c:a",
            "#4 ERROR: failed to configure registry cache importer: r/c:a: not found",
            "",
            "WARNING: something buildx says",
        ]
        for text, _ in errors.feed(line)
    ]
    assert shown == [
        "multibake: bake: retrying",
        "#3 [a linux/arm64 2/3] RUN x",
        "#3 ERROR: process did not complete successfully: exit code: 1",
        "WARNING: something buildx says",
    ]


# --- choosing -----------------------------------------------------------------------------------


def test_the_interval_comes_from_the_environment() -> None:
    assert interval({}) == 30
    assert interval({"MULTIBAKE_PROGRESS_INTERVAL": " 2.5 "}) == 2.5
    assert interval({"MULTIBAKE_PROGRESS_INTERVAL": "0"}) == 0  # no "still running" lines
    for bad in ("soon", "-1", "inf", "nan"):
        with pytest.raises(UsageError, match=f"MULTIBAKE_PROGRESS_INTERVAL='{bad}': expected the seconds"):
            interval({"MULTIBAKE_PROGRESS_INTERVAL": bad})


@pytest.mark.parametrize(
    ("progress", "shown"),
    [
        (Progress.PLAIN, ["#3 [a 1/2] RUN x", "multibake: hello"]),
        (Progress.AUTO, ["#3 [a 1/2] RUN x", "multibake: hello"]),  # not a terminal: plain
        (Progress.QUIET, ["multibake: hello"]),
        (Progress.TTY, ["multibake: hello"]),  # the step is in the table
    ],
)
def test_progress_modes_choose_what_is_shown(progress: Progress, shown: list[str]) -> None:
    stream = io.StringIO()
    out = output(progress, env={}, stream=stream)
    out.echo("#3 [a 1/2] RUN x")
    out.echo("multibake: hello")
    assert re.sub(r"\x1b\[[0-9;]*m", "", stream.getvalue()).splitlines() == shown  # colors aside


def test_the_cli_hands_the_release_its_output(capsys: pytest.CaptureFixture[str]) -> None:
    tools = cli.tools(Progress.QUIET)
    tools.echo("#3 [a 1/2] RUN x")
    tools.echo("multibake: hello")
    assert capsys.readouterr().err == "multibake: hello\n"
    assert getattr(tools.watch, "__self__", None).__class__ is Plain


def test_the_live_table_fits_a_narrow_terminal_and_keeps_step_state_and_time() -> None:
    from multibake.bake.display import table
    from multibake.bake.progress import Row, State

    long = "alpine-s6-nodejs-3_23-3_2_3_2-24-and-a-long-suffix"
    rows = [Row(cell=long, platform="linux/arm/v7", state=State.DONE, step=(2, 2), started=0, ended=61)]
    file = io.StringIO()
    Console(file=file, width=60, color_system=None).print(table(rows, 100.0, began=0))
    lines = file.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 60
    row = next(line for line in lines if "alpine" in line)
    assert "…" in row and "2/2" in row and "done" in row and "1m01s" in row
