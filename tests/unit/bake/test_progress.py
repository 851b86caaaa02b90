"""Following a build from buildx's plain progress: real captures (bake/progress/) replayed on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from multibake.bake.lines import duration, finished_line, still_running
from multibake.bake.progress import Finished, Row, State, Tracker, watched
from multibake.bake.run import bake_targets
from multibake.plan.model import Plan
from tests.helpers import plan_file

CAPTURES = Path(__file__).parent / "progress"
ALL = ("linux/amd64", "linux/arm64", "linux/arm/v7")
TWO = ("linux/amd64", "linux/arm64")


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Replay:
    """A capture fed line by line, 0.1 s apart; what the tracker said as it went."""

    plan: Plan
    tracker: Tracker
    clock: Clock
    said: list[tuple[float, Finished]] = field(default_factory=list)

    def begin(self, targets: Sequence[str]) -> None:
        self.tracker.begin(targets)

    def feed(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.clock.now += 0.1
            self.tracker.feed(line)
            self.said += [(self.clock.now, f) for f in self.tracker.finished()]

    def end(self, ok: bool) -> None:
        self.tracker.end(ok)
        self.said += [(self.clock.now, f) for f in self.tracker.finished()]

    def rows(self) -> dict[tuple[str, str], Row]:
        return {(r.cell, r.platform): r for r in self.tracker.rows()}

    def states(self, cell: str) -> dict[str, State]:
        return {r.platform: r.state for r in self.tracker.rows() if r.cell == cell}

    def announced(self) -> list[tuple[str, State]]:
        return [(f.cell, f.state) for _, f in self.said]


@pytest.fixture(scope="module")
def plan() -> Plan:
    return plan_file(CAPTURES / "platforms.yaml")


def capture(name: str) -> list[str]:
    return (CAPTURES / name).read_text(encoding="utf-8").splitlines()


def replay(plan: Plan, nodes: int = 1) -> Replay:
    clock = Clock()
    return Replay(plan=plan, tracker=Tracker(plan, nodes=nodes, clock=clock), clock=clock)


def without_bad(plan: Plan) -> list[str]:
    return [t for t in bake_targets(plan) if t != "bad--image"]


def test_a_push_on_the_docker_driver_finishes_every_cell_cached_or_done(plan: Plan) -> None:
    r = replay(plan)
    r.begin(without_bad(plan))
    r.feed(capture("push-docker-driver.txt"))
    # finished as their provenance came, before bake ended: the parent (all cached) first
    assert r.announced() == [
        ("bb--image", State.CACHED),
        ("split--image", State.DONE),
        ("slow-2", State.DONE),
        ("slow-1", State.DONE),
    ]
    rows = r.rows()
    # finished: every step ended, whichever BuildKit named last (slow-1's COPY was 3/4), so n/n
    assert rows[("slow-1", "linux/arm/v7")].step == (4, 4)
    assert rows[("split--image", "linux/arm64")].step == (3, 3)  # a per-platform target: its platform from the plan
    assert r.states("bad--image") == dict.fromkeys(TWO, State.QUEUED)  # not in this bake run
    r.end(ok=True)
    assert r.states("bb--image") == dict.fromkeys(ALL, State.CACHED)
    assert all(r.states(c) == dict.fromkeys(ALL, State.DONE) for c in ("slow-1", "slow-2"))
    first = {f.cell: f for _, f in r.said}
    assert first["split--image"].platforms == TWO
    assert first["slow-1"].seconds > first["split--image"].seconds > 0


def test_a_silent_run_under_qemu_is_still_running_with_its_step(plan: Plan) -> None:
    lines = capture("qemu-silent-run.txt")
    r = replay(plan)
    r.begin(without_bad(plan))
    # up to the first RUN step of slow-1 on arm/v7, which prints nothing for 6 seconds
    cut = lines.index('#41 [slow-1 linux/arm/v7 1/4] RUN echo "2896927958-1-p14010" > /nonce && sleep 6') + 1
    r.feed(lines[:cut])
    r.clock.now += 6
    rows = r.rows()
    arm = rows[("slow-1", "linux/arm/v7")]
    assert (arm.state, arm.step) == (State.RUNNING, (1, 4))
    assert rows[("slow-1", "linux/amd64")].state is State.QUEUED  # BuildKit has not named it yet
    assert r.states("bb--image") == dict.fromkeys(ALL, State.CACHED)
    line = still_running(r.tracker.rows(), r.tracker.began, r.clock.now)
    assert line is not None
    assert line.startswith("multibake: still running after ")
    assert "slow-1 linux/arm/v7 step 1/4" in line
    assert "split--image" not in line and "bb--image" not in line  # finished: counted, not named
    r.feed(lines[cut:])
    r.end(ok=True)
    assert [c for c, _ in r.announced()][-2:] == ["slow-2", "slow-1"]
    assert all(r.states(c) == dict.fromkeys(ALL, State.DONE) for c in ("slow-1", "slow-2"))


def test_a_failed_step_fails_its_platform_and_the_rest_is_canceled(plan: Plan) -> None:
    r = replay(plan)
    r.begin(bake_targets(plan))
    r.feed(capture("failure-remote.txt"))
    r.end(ok=False)
    assert r.states("bad--image") == {"linux/amd64": State.FAILED, "linux/arm64": State.CANCELED}
    assert r.rows()[("bad--image", "linux/amd64")].step == (2, 3)
    assert all(r.states(c) == dict.fromkeys(ALL, State.CANCELED) for c in ("slow-1", "slow-2"))
    # a canceled cell is not announced: bake's error says why
    assert sorted(r.announced()) == [
        ("bad--image", State.FAILED),
        ("bb--image", State.CACHED),
        ("split--image", State.CACHED),
    ]


def keep_going(r: Replay, lines: list[str]) -> None:
    """The multi-node capture: one bake run of every target, then one per cell."""
    starts = [i for i, line in enumerate(lines) if line.startswith("multibake: --keep-going: building ")]
    r.begin(bake_targets(r.plan))
    r.feed(lines[: starts[0]])
    r.end(ok=False)
    for start, stop in zip(starts, [*starts[1:], len(lines)], strict=True):
        cell = r.plan.cell(lines[start].rsplit(" ", 1)[1])
        r.begin(cell.bake_targets)
        r.feed(lines[start + 1 : stop])
        r.end(ok=cell.target != "bad--image")


def test_on_a_multi_node_builder_a_target_ends_with_its_last_node(plan: Plan) -> None:
    lines = capture("keep-going-multinode.txt")
    r = replay(plan, nodes=2)
    first = lines.index("#47 [bb--image] resolving provenance for metadata file")
    r.begin(bake_targets(plan))
    r.feed(lines[: first + 2])  # the first node's provenance: the arm node is not done yet
    assert r.states("bb--image") != dict.fromkeys(ALL, State.CACHED)
    second = lines.index("#56 [bb--image] resolving provenance for metadata file")
    r.feed(lines[first + 2 : second + 2])
    assert r.states("bb--image") == dict.fromkeys(ALL, State.CACHED)


def test_keep_going_runs_each_cell_alone_and_says_each_once(plan: Plan) -> None:
    r = replay(plan, nodes=2)
    keep_going(r, capture("keep-going-multinode.txt"))
    said = r.announced()
    # bb and split were finished by the first run; slow-1 and slow-2 (canceled there) were built alone,
    # where bake names no target; bad failed in both runs and is said each time
    assert said == [
        ("split--image", State.DONE),
        ("bb--image", State.CACHED),
        ("bad--image", State.FAILED),
        ("slow-1", State.DONE),
        ("slow-2", State.DONE),
        ("bad--image", State.FAILED),
    ]
    assert r.states("bad--image") == {"linux/amd64": State.FAILED, "linux/arm64": State.CANCELED}
    assert r.rows()[("slow-2", "linux/arm/v7")].step is not None


def test_a_single_build_without_target_names_belongs_to_the_only_target(plan: Plan) -> None:
    r = replay(plan)
    r.begin(["slow-1"])
    r.feed(['#0 building with "default" instance using docker driver', "", "#8 [linux/arm64 2/3] RUN make"])
    rows = r.rows()
    assert (rows[("slow-1", "linux/arm64")].state, rows[("slow-1", "linux/arm64")].step) == (State.RUNNING, (2, 3))
    assert rows[("slow-1", "linux/amd64")].state is State.QUEUED
    r.feed(["#8 DONE 3.0s", "", "#9 [3/3] COPY a b"])  # no platform: the step counts for every platform
    assert {row.step for row in r.tracker.rows() if row.cell == "slow-1"} == {(3, 3)}
    r.feed(["#9 DONE 0.1s", "", "#10 resolving provenance for metadata file", "#10 DONE 0.0s"])
    assert r.states("slow-1") == dict.fromkeys(ALL, State.DONE)


def test_interleaved_cells_keep_their_own_steps_and_a_vertex_named_again_does_not_go_back(plan: Plan) -> None:
    r = replay(plan)
    r.begin(["slow-1", "slow-2"])
    r.feed(
        [
            "#5 [slow-1 linux/arm64 1/4] RUN a",
            "#5 ...",
            "",
            "#6 [slow-2 linux/amd64 2/4] RUN b",
            "#6 0.120 some output of b",
            "",
            "#7 [slow-1 linux/arm64 2/4] RUN c",
            "",
            "#5 [slow-1 linux/arm64 1/4] RUN a",  # named again to print its end
            "#5 DONE 2.0s",
            "",
            "#8 [slow-2 linux/amd64 3/4] COPY x y",
            "#8 CACHED",
        ]
    )
    rows = r.rows()
    assert rows[("slow-1", "linux/arm64")].step == (2, 4)
    assert rows[("slow-2", "linux/amd64")].step == (3, 4)
    assert rows[("slow-1", "linux/arm64")].executed
    assert rows[("slow-1", "linux/arm/v7")].state is State.QUEUED


def test_a_retried_run_queues_what_failed_again_and_keeps_what_finished(plan: Plan) -> None:
    r = replay(plan)
    r.begin(["slow-1", "slow-2"])
    r.feed(["#3 [slow-1] resolving provenance for metadata file", "#3 DONE 0.0s", "", "#4 [slow-2 1/1] RUN push"])
    r.feed(["#4 ERROR: failed to push: 503 Service Unavailable"])
    r.end(ok=False)
    assert r.announced() == [("slow-1", State.CACHED), ("slow-2", State.FAILED)]
    r.begin(["slow-2"])
    assert r.states("slow-2") == dict.fromkeys(ALL, State.QUEUED)
    assert r.states("slow-1") == dict.fromkeys(ALL, State.CACHED)
    r.end(ok=True)
    assert r.announced()[-1] == ("slow-2", State.DONE)  # its step ran in the first attempt


def test_a_cache_that_does_not_exist_yet_fails_nothing(plan: Plan) -> None:
    r = replay(plan)
    r.begin(["slow-1"])
    r.feed(
        [
            "#9 [slow-1] importing cache manifest from 127.0.0.1:5000/x/buildcache:slow-1",
            "#9 ERROR: failed to configure registry cache importer: 127.0.0.1:5000/x/buildcache:slow-1: not found",
        ]
    )
    assert r.states("slow-1") == dict.fromkeys(ALL, State.QUEUED)


def test_a_stage_built_on_the_build_platform_counts_for_the_platform_it_builds_for(plan: Plan) -> None:
    r = replay(plan)
    r.begin(["slow-1", "slow-2"])
    r.feed(["#4 [slow-1 linux/amd64->arm/v7 build 2/5] RUN go build"])
    assert r.states("slow-1") == {
        "linux/amd64": State.QUEUED,
        "linux/arm64": State.QUEUED,
        "linux/arm/v7": State.RUNNING,
    }


def test_watched_runs_feed_the_tracker_and_say_cells_as_they_finish(plan: Plan) -> None:
    clock = Clock()
    tracker = Tracker(plan, clock=clock)
    said: list[str] = []

    def inner(argv: Sequence[str]) -> Iterator[str]:
        yield "#1 [slow-1 linux/amd64 1/2] RUN a\n"
        yield "#1 DONE 1.0s\n"
        yield "\n"
        yield "#2 [slow-1] resolving provenance for metadata file\n#2 DONE 0.0s\n"
        said.append("after the provenance line")
        yield "#3 [slow-2 linux/amd64 1/2] RUN b\n"
        raise RuntimeError("bake failed")

    run = watched(inner, tracker, lambda cells: said.extend(finished_line(c) for c in cells))
    argv = ["docker", "buildx", "bake", "--set", "slow-1.output=type=cacheonly", "slow-1", "slow-2"]
    with pytest.raises(RuntimeError):
        list(run(argv))
    assert said[:2] == [
        "multibake: done slow-1 (linux/amd64, linux/arm64, linux/arm/v7) in 0.0s",
        "after the provenance line",
    ]
    assert {r.state for r in tracker.rows() if r.cell == "slow-2"} == {State.CANCELED}
    assert {r.state for r in tracker.rows() if r.cell == "bb--image"} == {State.QUEUED}  # not a target of the run


def test_still_running_names_cells_and_platforms_and_counts_the_rest() -> None:
    rows = [
        Row(cell="nodejs-22", platform="linux/arm64", state=State.RUNNING, step=(4, 7), started=0),
        Row(cell="nodejs-22", platform="linux/arm/v7", state=State.RUNNING, step=(3, 7), started=0),
        Row(cell="nodejs-20", platform="linux/amd64", state=State.RUNNING, started=5),
        Row(cell="nodejs-18", platform="linux/amd64", state=State.QUEUED),
        Row(cell="base", platform="linux/amd64", state=State.DONE, started=0, ended=3),
    ]
    assert still_running(rows, began=0.0, now=130.0) == (
        "multibake: still running after 2m10s (1 queued, 1 finished): "
        "nodejs-22 linux/arm64 step 4/7, linux/arm/v7 step 3/7; nodejs-20 linux/amd64"
    )
    assert still_running([r for r in rows if r.state is not State.RUNNING], began=0.0, now=1.0) is None
    many = [Row(cell=f"c{i}", platform="linux/amd64", state=State.RUNNING, started=0) for i in range(11)]
    line = still_running(many, began=0.0, now=5.0)
    assert line is not None and line.endswith("; c7 linux/amd64; and 3 more")


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.04, "0.0s"), (4.25, "4.2s"), (45.4, "45s"), (130, "2m10s"), (3725, "1h02m")]
)
def test_durations_read_at_a_glance(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def test_a_finished_line_says_what_became_of_the_cell() -> None:
    cell = Finished(cell="nodejs-22", state=State.FAILED, platforms=("linux/arm64",), seconds=62)
    assert finished_line(cell) == "multibake: failed nodejs-22 (linux/arm64) in 1m02s"


def test_a_target_whose_image_was_exported_is_done_even_when_its_run_fails(plan: Plan) -> None:
    r = replay(plan)
    r.begin(["slow-1", "slow-2"])
    r.feed(
        [
            "#20 [slow-1] exporting to image",
            "#20 pushing manifest for 127.0.0.1:5000/progcap/slow:staging@sha256:" + "a" * 64 + " 0.1s done",
            "#20 DONE 0.9s",
            "",
            "#21 [slow-2 linux/arm64 1/4] RUN a",
            "#21 ERROR: process did not complete successfully: exit code: 1",
        ]
    )
    r.end(ok=False)  # before slow-1's provenance: bake stopped at slow-2's failure
    assert r.states("slow-1") == dict.fromkeys(ALL, State.CACHED)
    assert r.announced() == [("slow-1", State.CACHED), ("slow-2", State.FAILED)]
