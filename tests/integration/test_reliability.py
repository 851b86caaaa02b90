"""Releases under faults, on the real stack: a flaky registry (R1), and releases killed or interrupted (R3).

Every release goes through the fault proxy on 127.0.0.1:5001, in front of the real registry; what
the tests assert is read from the real registry (127.0.0.1:5000) by a monitor polling every public
tag while the release runs, and afterwards. ``nox -s reliability`` runs them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration import registry
from tests.integration.faultproxy import Chaos, FaultProxy
from tests.integration.reliability import (
    Monitor,
    Release,
    fast_project,
    namespace,
    plan_of,
    public_state,
    run,
    upstream,
)

PROXY = "127.0.0.1:5001"
# enough attempts for a 20 % fault rate; a stalled request gives up after 5 s (the proxy stalls 7 s)
FLAKY_RETRY = "attempts: 10, initial_delay: 0.5, max_delay: 4, timeout: 5"
RETRY = "attempts: 3, initial_delay: 0.5, max_delay: 2, timeout: 10"


def _release(cfg: Path, reg: str) -> tuple[int, dict[str, Any], str, float]:
    started = time.monotonic()
    release = Release(cfg, reg)
    code = release.finish()
    return code, release.report(), release.stderr(), time.monotonic() - started


def _assert_whole(plan: dict[str, Any]) -> None:
    """Every public tag of ``plan`` exists: an index of exactly its cell's platforms, per-platform tags matching."""
    for cell in plan["cells"]:
        for ref in cell["tags"]:
            held = registry.get(upstream(ref))
            assert held is not None and held.is_index, ref
            assert sorted(held.platforms()) == sorted(cell["platforms"]), ref
        index = registry.get(upstream(cell["tags"][0]))
        assert index is not None
        for platform, refs in cell["platform_tags"].items():
            for ref in refs:
                held = registry.get(upstream(ref))
                assert held is not None and held.digest == index.platforms()[platform], ref


def test_r1_a_release_through_a_flaky_registry_completes_and_no_public_tag_is_ever_partial(
    stack: None, tmp_path: Path, measured: Callable[[str], None]
) -> None:
    cfg = fast_project(tmp_path, FLAKY_RETRY)
    with FaultProxy() as proxy:  # warms BuildKit's cache, so that both timed releases below start alike
        code, _, err, cold = _release(cfg, namespace(PROXY, "r1-warm"))
        assert code == 0, err[-3000:]
    with FaultProxy() as proxy:
        code, _, err, clean = _release(cfg, namespace(PROXY, "r1-clean"))
        assert code == 0, err[-3000:]
    reg = namespace(PROXY, "r1-flaky")
    plan = plan_of(cfg, reg)
    with FaultProxy(chaos=Chaos(rate=0.2, seed=8)) as proxy, Monitor(plan) as monitor:
        code, report, err, flaky = _release(cfg, reg)
        verify = run("verify", "-c", str(cfg), "--registry", reg)
        proxy.write_log(tmp_path / "injected.log")
    assert code == 0, err[-4000:]
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
    assert monitor.problems == [], monitor.problems[:10]
    assert monitor.polls >= 3, "the monitor watched the release"
    _assert_whole(plan)
    faults = proxy.counts()
    assert sum(faults.values()) >= 10 and {"reset", "stall", "429"} <= set(faults), faults
    bake_runs = report["bake_runs"]
    measured(
        f"R1: {proxy.requests} requests, {sum(faults.values())} faults injected {faults}; "
        f"{len(bake_runs)} bake runs, {len(report['retries'])} release retries, "
        f"{sum('transient failure' in ln for ln in err.splitlines())} retries announced; "
        f"cold {cold:.1f} s, clean {clean:.1f} s, flaky {flaky:.1f} s ({flaky / clean:.2f}x clean)"
    )


def _moves(method: str, path: str, agent: str) -> bool:
    """multibake moving a public tag: its own PUT of a manifest by tag (not by digest)."""
    return method == "PUT" and "/manifests/" in path and "sha256:" not in path and _ours(agent)


def _stages(method: str, path: str, agent: str) -> bool:
    """BuildKit pushing an image (by digest, or to a staging tag): a manifest PUT that is not multibake's."""
    return method == "PUT" and "/manifests/" in path and not _ours(agent)


def _ours(agent: str) -> bool:
    """A request of multibake's own registry client (its agent says ``multibake/``)."""
    return agent.startswith("multibake/")


def _published_once(tmp_path: Path, reg: str) -> tuple[Path, dict[str, Any], dict[str, str | None]]:
    cfg = fast_project(tmp_path, RETRY, rev="1")
    code, _, err, _ = _release(cfg, reg)
    assert code == 0, err[-3000:]
    plan = plan_of(cfg, reg)
    before = public_state(plan)
    assert all(before.values())
    fast_project(tmp_path, RETRY, rev="2")  # the next release changes every app cell
    return cfg, plan, before


def _converges(cfg: Path, reg: str, plan: dict[str, Any]) -> None:
    """A rerun completes; a release after it changes nothing (the state an uninterrupted release leaves)."""
    code, _, err, _ = _release(cfg, reg)
    assert code == 0, err[-3000:]
    _assert_whole(plan)
    assert run("verify", "-c", str(cfg), "--registry", reg).returncode == 0
    code, report, err, _ = _release(cfg, reg)
    assert code == 0, err[-3000:]
    moved = [c["target"] for c in report["cells"] if c["status"] != "unchanged"]
    assert moved == [], f"a release after the rerun moved {moved}: the rerun did not converge"
    apps = [c for c in plan["cells"] if c["family"] == "app"]
    for cell in apps:  # and it is the new release: rev 2 is in every app image
        index = registry.get(upstream(cell["tags"][0]))
        assert index is not None
        host, repo, _ = registry.split(upstream(cell["tags"][0]))
        config = registry.config_of(host, repo, index.platforms()["linux/amd64"])
        assert any("app-rev" in (h.get("created_by") or "") for h in config["history"])


KillPoint = Callable[[Release, FaultProxy | None], None]


def _during_build(release: Release, proxy: FaultProxy | None = None) -> None:
    release.wait_for("sleep 2 && echo")  # the app's RUN step has started (under QEMU for two platforms)


def _at_hold(release: Release, proxy: FaultProxy | None) -> None:
    assert proxy is not None
    deadline = time.monotonic() + 600
    while not proxy.held.wait(0.2):
        assert release.proc.poll() is None and time.monotonic() < deadline, release.stderr()[-3000:]


@dataclass(frozen=True)
class KillAt:
    point: str
    wait: KillPoint
    hold: Callable[[str, str, str], bool] | None = None  # a request the proxy holds until the kill
    hold_at: int = 1
    hold_later: bool = False  # hold every later matching request too (tags are written in parallel)


KILL_POINTS = [
    KillAt("during the build", _during_build),
    KillAt("during the staging push", _at_hold, _stages),
    KillAt("between staging and the tag moves", _at_hold, _moves, hold_later=True),
    KillAt("in the middle of the tag moves", _at_hold, _moves, hold_at=3),
]


@pytest.mark.parametrize("kill", KILL_POINTS, ids=[k.point.replace(" ", "-") for k in KILL_POINTS])
def test_r3_a_release_killed_at_any_point_leaves_whole_tags_and_a_rerun_converges(
    stack: None, tmp_path: Path, kill: KillAt
) -> None:
    reg = namespace(PROXY, "r3-kill")
    with FaultProxy(hold_at=kill.hold_at, hold_later=kill.hold_later) as proxy:
        cfg, plan, before = _published_once(tmp_path, reg)
        proxy.hold = kill.hold  # armed for the release that is killed only
        with Monitor(plan) as monitor:
            release = Release(cfg, reg)
            kill.wait(release, proxy)
            release.signal_group(signal.SIGKILL)  # the CI job cancelled: multibake and its bake process
            assert release.finish(timeout=60) == -signal.SIGKILL
            proxy.hold = None  # disarmed for the rerun
            proxy.unhold.set()
            time.sleep(1)
        assert monitor.problems == [], (kill.point, monitor.problems[:10])
        after = public_state(plan)
        moved = [ref for ref in after if after[ref] != before[ref]]
        if kill.hold is _moves and not kill.hold_later:
            assert 0 < len(moved) < len(after), "killed in the middle: some tags moved, not all"
        else:
            assert moved == [], f"killed {kill.point}: no public tag may have moved"
        _converges(cfg, reg, plan)


def test_r3_killing_only_the_bake_process_fails_the_release_and_leaves_the_public_tags(
    stack: None, tmp_path: Path
) -> None:
    reg = namespace(PROXY, "r3-bake")
    with FaultProxy():
        cfg, plan, before = _published_once(tmp_path, reg)
        release = Release(cfg, reg)
        _during_build(release)
        pids = release.bake_pids()
        assert pids, "the bake process is running"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
                os.kill(pid, signal.SIGKILL)
        code = release.finish(timeout=300)
        assert code == 1, release.stderr()[-3000:]
        assert public_state(plan) == before
        _converges(cfg, reg, plan)


def test_r3_ctrl_c_exits_130_and_leaves_the_public_tags_as_they_were(stack: None, tmp_path: Path) -> None:
    reg = namespace(PROXY, "r3-int")
    with FaultProxy():
        cfg, plan, before = _published_once(tmp_path, reg)
        release = Release(cfg, reg)
        _during_build(release)
        release.signal_group(signal.SIGINT)  # what a terminal's Ctrl-C sends to the whole foreground group
        started = time.monotonic()
        code = release.finish(timeout=120)
        assert code == 130, release.stderr()[-3000:]
        assert time.monotonic() - started < 60, "an interrupt ends the release promptly"
        assert public_state(plan) == before
        assert "Traceback" not in release.stderr()


def test_a_registry_that_stalls_every_request_is_a_timeout_not_a_wait(stack: None, tmp_path: Path) -> None:
    cfg = fast_project(tmp_path, "attempts: 2, initial_delay: 0.5, max_delay: 1, timeout: 2")
    with FaultProxy(chaos=Chaos(rate=1.0, faults=("stall",), stall_seconds=30)) as proxy:
        started = time.monotonic()
        checked = run("verify", "-c", str(cfg), "--registry", namespace(PROXY, "stall"))
        elapsed = time.monotonic() - started
    assert checked.returncode == 1, checked.stderr[-2000:]
    # two attempts of 2 s and a wait of at most 1 s, plus start-up: far below the proxy's 30 s stall
    assert elapsed < 20, elapsed
    assert proxy.counts()["stall"] >= 2
    # each tag's row says why; after the first tag outlasted its attempts the others are not tried
    assert f"registry {PROXY} was still failing after 2 attempts" in checked.stdout, checked.stdout[-2000:]
    assert "Traceback" not in checked.stderr


def test_sigterm_to_multibake_alone_stops_its_bake_exits_143_and_moves_no_tag(stack: None, tmp_path: Path) -> None:
    reg = namespace(PROXY, "r3-term")
    with FaultProxy():
        cfg, plan, before = _published_once(tmp_path, reg)
        release = Release(cfg, reg)
        _during_build(release)
        assert release.bake_pids()
        release.proc.send_signal(signal.SIGTERM)  # a CI runner or `timeout` stopping the main process only
        code = release.finish(timeout=120)
        assert code == 143, release.stderr()[-3000:]
        deadline = time.monotonic() + 60
        while release.bake_pids() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert release.bake_pids() == [], "the bake process was stopped with multibake"
        assert public_state(plan) == before
        _converges(cfg, reg, plan)
