"""R1 over many seeds: a release of a small family tree (3 cells, 28 public tags) through a registry
failing 20 % of requests, with the default retry budget.

Each seed draws another sequence of faults (5xx, 429, connection resets: R1's mix) over every
request of the release, BuildKit's pushes and multibake's own reads and writes alike. Every release
must complete and verify, or end with no public tag on an incomplete index and a rerun that
completes. The time each took against a clean release of the same project (BuildKit's cache warm in
both) is printed at the end of the run, split into bake and the rest: the goal is at most twice the
clean release. A few seeds run again with stalls added to the mix (a request held 7 s, then reset, as
a registry that drops requests does), held to the same outcomes; their times are printed apart.
``nox -s reliability`` runs it.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.integration import registry
from tests.integration.faultproxy import FAULTS, Chaos, FaultProxy
from tests.integration.reliability import Release, fast_project, namespace, run, upstream

PROXY = "127.0.0.1:5001"
# a small family tree, as releases of it were measured failing: the base and two app cells, 28 public tags
SELECT = ("busybox-base", "app:flavor=slim")
# ten seeds in `nox -s reliability`; CI (.ci/run) runs fewer to stay within its hour
SEEDS = tuple(range(101, 101 + int(os.environ.get("MULTIBAKE_R1_SEEDS", "10"))))
STALL_SEEDS = SEEDS[: max(1, len(SEEDS) // 5)]
MIXES = {"R1": tuple(f for f in FAULTS if f != "stall"), "R1 with stalls": FAULTS}
RATE = 0.2
# the default budget, with shorter waits than the defaults' so that the run stays short; the proxy's
# stalls (7 s) end in a reset before the default request timeout, as a registry dropping a request does
FLAKY = "initial_delay: 0.5, max_delay: 4"


@dataclass(frozen=True)
class Seeded:
    outcome: str
    seconds: float
    faults: int
    bake: float  # the part bake (BuildKit building and pushing, its own retries) took
    bake_runs: int  # 1: bake was not run again


@dataclass
class Outcomes:
    clean: list[float] = field(default_factory=list)
    clean_bake: list[float] = field(default_factory=list)  # the part of each clean release bake took
    flaky: dict[tuple[str, int], Seeded] = field(default_factory=dict)  # (mix, seed) → how it went


def _report(release: Release) -> dict[str, Any]:
    try:
        return release.report()
    except AssertionError:  # no JSON: the test asserts on the outcome, the summary shows zeros
        return {}


def _bake_seconds(release: Release) -> float:
    """The bake step of a release's ``build --json`` (BuildKit building and pushing, retries included)."""
    return float((_report(release).get("steps") or {}).get("bake", 0.0))


@pytest.fixture(scope="module")
def outcomes(
    stack: None, tmp_path_factory: pytest.TempPathFactory, measured: Callable[[str], None]
) -> Iterator[tuple[Path, Outcomes]]:
    """The project, BuildKit's cache warmed and a clean release timed; the summary printed at the end."""
    tmp = tmp_path_factory.mktemp("seeds")
    cfg = fast_project(tmp, FLAKY)
    found = Outcomes()
    with FaultProxy():
        for label in ("warm-up", "clean", "clean"):
            started = time.monotonic()
            release = Release(cfg, namespace(PROXY, f"seeds-{label}"), *SELECT)
            code = release.finish()
            assert code == 0, release.stderr()[-3000:]
            if label == "clean":
                found.clean.append(time.monotonic() - started)
                found.clean_bake.append(_bake_seconds(release))
    yield cfg, found
    for line in _summary(found):
        measured(line)


def _summary(found: Outcomes) -> list[str]:
    """The lines printed at the end of the run: per fault mix, each seed's outcome and time against a clean release."""
    if not found.flaky or not found.clean:
        return []
    clean, bake = statistics.median(found.clean), statistics.median(found.clean_bake or [0.0])
    own_clean = max(clean - bake, 0.01)
    lines = []
    for mix, faults in MIXES.items():
        runs = {seed: got for (m, seed), got in found.flaky.items() if m == mix}
        if not runs:
            continue
        times = [r.seconds for r in runs.values()]
        owns = [r.seconds - r.bake for r in runs.values()]
        ok = sum(r.outcome == "completed" for r in runs.values())
        median = statistics.median(times)
        lines += [
            f"{mix} over {len(runs)} seeds at {RATE:.0%} faults ({', '.join(faults)}): {ok} completed and "
            f"verified first time, {len(runs) - ok} ended whole and a rerun completed; clean {clean:.1f} s, "
            f"flaky median {median:.1f} s ({median / clean:.2f}x clean, goal ≤ 2x), worst {max(times):.1f} s "
            f"({max(times) / clean:.2f}x)",
            # where the time went: BuildKit's pushes (bake) and multibake's own registry reads and writes
            f"  split: bake clean {bake:.1f} s, flaky median {statistics.median(r.bake for r in runs.values()):.1f} s;"
            f" multibake's own (outside bake) clean {own_clean:.1f} s, flaky median {statistics.median(owns):.1f} s "
            f"({statistics.median(owns) / own_clean:.2f}x)",
        ]
        for seed, r in sorted(runs.items()):
            lines.append(
                f"  seed {seed}: {r.outcome}, {r.seconds:.1f} s ({r.seconds / clean:.2f}x; bake {r.bake:.1f} s, "
                f"own {r.seconds - r.bake:.1f} s), {r.faults} faults, {r.bake_runs} bake run(s)"
            )
    return lines


def _whole(plan: dict[str, Any]) -> list[str]:
    """What is wrong with the public tags of ``plan``: none missing, each on a complete index."""
    problems = []
    for cell in plan["cells"]:
        index = registry.get(upstream(cell["tags"][0]))
        for ref in cell["tags"]:
            held = registry.get(upstream(ref))
            if held is None or not held.is_index or sorted(held.platforms()) != sorted(cell["platforms"]):
                problems.append(f"{ref}: {held.media_type if held else 'missing'}")
        for platform, refs in cell["platform_tags"].items():
            for ref in refs:
                held = registry.get(upstream(ref))
                if held is None or index is None or held.digest != index.platforms().get(platform):
                    problems.append(f"{ref}: not its index's {platform} image")
    return problems


def _none_partial(plan: dict[str, Any]) -> list[str]:
    """Public multi-arch tags of ``plan`` that point at an index lacking a planned platform."""
    problems = []
    for cell in plan["cells"]:
        for ref in cell["tags"]:
            held = registry.get(upstream(ref))
            if held is not None and (not held.is_index or sorted(held.platforms()) != sorted(cell["platforms"])):
                problems.append(f"{ref}: {sorted(held.platforms())}")
    return problems


@pytest.mark.parametrize(("mix", "seed"), [("R1", s) for s in SEEDS] + [("R1 with stalls", s) for s in STALL_SEEDS])
def test_r1_a_release_at_20_percent_faults_completes_and_verifies(
    outcomes: tuple[Path, Outcomes], mix: str, seed: int, tmp_path: Path
) -> None:
    cfg, found = outcomes
    reg = namespace(PROXY, f"seed{seed}{'-stalls' if 'stall' in MIXES[mix] else ''}")
    proc = run("plan", "--json", "-c", str(cfg), "--registry", reg, *SELECT)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert len(plan["cells"]) == 3
    with FaultProxy(chaos=Chaos(rate=RATE, seed=seed, faults=MIXES[mix])) as proxy:
        started = time.monotonic()
        release = Release(cfg, reg, *SELECT)
        code = release.finish()
        seconds = time.monotonic() - started
        verify = run("verify", "-c", str(cfg), "--registry", reg, *SELECT)
        proxy.write_log(tmp_path / "injected.log")
    faults = sum(proxy.counts().values())
    seeded = Seeded("completed", seconds, faults, _bake_seconds(release), len(_report(release).get("bake_runs") or []))
    if code == 0:
        assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
        assert _whole(plan) == []
        found.flaky[mix, seed] = seeded
        return
    # the other acceptable end: nothing public on an incomplete index, each failure on its own cell
    report = release.report()
    assert _none_partial(plan) == [], release.stderr()[-3000:]
    failed = [c for c in report["cells"] if c["status"] == "failed"]
    assert failed and all(c["error"] for c in failed), report["cells"]
    with FaultProxy():
        rerun = Release(cfg, reg, *SELECT)
        assert rerun.finish() == 0, rerun.stderr()[-3000:]
    assert _whole(plan) == []
    found.flaky[mix, seed] = replace(seeded, outcome=f"failed ({len(failed)} cells), rerun completed")
