"""The real sample tier, cold and warm: Debian rootfs → s6 as PID 1 → Node.js, on three platforms.

The cold build is made cold by a new BUILD_EPOCH build arg in the base (every RUN of the tree runs
again) and a new registry namespace (no registry cache), not by wiping the machine's build cache.

The warm build is measured twice and the faster run counts (both must run no step): one warm run
takes about 10 s here, and one transient registry error retried inside it (the local registry
now and then answers a HEAD racing a concurrent tag write with a 500) adds a whole bake run and its
backoff: noise, not cache behaviour. Every retry is printed in the failure message.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration import registry
from tests.integration.test_build import build_json, plan_json

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "samples" / "debian" / "platforms.yaml"
NODE_ARCH = {"linux/amd64": "x64", "linux/arm64": "arm64", "linux/arm/v7": "arm"}


def docker(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def real_release(stack: None) -> dict[str, Any]:
    rootfs = sorted((ROOT / "samples" / "debian" / "debian-base").glob("rootfs-*.tar"))
    if len(rootfs) < 6:
        pytest.fail("the real sample tier is not prepared: run scripts/prepare-sample.sh real")
    run = uuid.uuid4().hex[:8]
    reg = f"127.0.0.1:5000/real-{run}"  # nothing cached in the registry either
    epoch = ("--set", f"*.args.BUILD_EPOCH={run}")
    t0 = time.monotonic()
    code, cold, err = build_json("-c", str(REAL), "--registry", reg, "--push", *epoch)
    cold_s = time.monotonic() - t0
    assert code == 0, err[-5000:]
    warm_runs: list[tuple[float, dict[str, Any]]] = []
    for _ in range(2):
        t0 = time.monotonic()
        code, warm, err = build_json("-c", str(REAL), "--registry", reg, "--push", *epoch)
        warm_runs.append((time.monotonic() - t0, warm))
        assert code == 0, err[-5000:]
    warm_s = min(s for s, _ in warm_runs)
    print(f"\nreal tier: cold {cold_s:.1f} s, warm {' / '.join(f'{s:.1f}' for s, _ in warm_runs)} s")
    return {
        "cold": cold,
        "warm_runs": warm_runs,
        "cold_s": cold_s,
        "warm_s": warm_s,
        "plan": plan_json("-c", str(REAL), "--registry", reg),
    }


def test_every_tag_is_an_index_of_the_three_platforms(real_release: dict[str, Any]) -> None:
    for cell in real_release["plan"]["cells"]:
        for ref in cell["tags"]:
            held = registry.get(ref)
            assert held is not None and held.is_index, ref
            assert sorted(held.platforms()) == sorted(cell["platforms"]), ref


def test_node_reports_each_platforms_own_architecture(real_release: dict[str, Any]) -> None:
    cells = [c for c in real_release["plan"]["cells"] if c["family"] == "debian-s6-nodejs"]
    assert cells
    for cell in cells:
        for platform in cell["platforms"]:
            out = docker(
                "run", "--rm", "--pull", "always", "--platform", platform, cell["tags"][0], "node", "-p", "process.arch"
            )
            assert out.returncode == 0, out.stderr
            assert out.stdout.strip() == NODE_ARCH[platform], (cell["target"], platform)


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm/v7"])
def test_s6_runs_as_pid_1_and_supervises_a_service(real_release: dict[str, Any], platform: str) -> None:
    ref = next(c for c in real_release["plan"]["cells"] if c["family"] == "debian-s6-nodejs")["tags"][0]
    check = docker("run", "--rm", "--pull", "always", "--platform", platform, ref, "s6-check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "pid1: s6-svscan" in check.stdout
    assert "hello: up" in check.stdout

    started = docker("run", "-d", "--platform", platform, ref)
    assert started.returncode == 0, started.stderr
    cid = started.stdout.strip()
    try:
        deadline = time.monotonic() + 60  # /init is PID 1 until it execs s6-svscan
        while (pid1 := docker("exec", cid, "cat", "/proc/1/comm").stdout.strip()) != "s6-svscan":
            assert time.monotonic() < deadline, f"PID 1 is {pid1!r}"
            time.sleep(0.5)

        def hello_pid() -> str:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                up, _, pid = docker("exec", cid, "s6-svstat", "-o", "up,pid", "/run/service/hello").stdout.partition(
                    " "
                )
                if up == "true" and pid.strip() not in ("", "-1"):
                    return pid.strip()
                time.sleep(0.5)
            pytest.fail("the hello service never came up")

        first = hello_pid()
        assert docker("exec", cid, "sh", "-c", f"kill {first}").returncode == 0
        deadline = time.monotonic() + 60
        while (second := hello_pid()) == first and time.monotonic() < deadline:
            time.sleep(0.5)
        assert second != first, "s6 restarted the killed service under a new pid"
        assert docker("stop", cid, timeout=120).returncode == 0
        assert docker("inspect", "-f", "{{.State.ExitCode}}", cid).stdout.strip() == "0"
    finally:
        docker("rm", "-f", cid)


def test_warm_rebuild_runs_no_step_and_is_ten_times_faster(real_release: dict[str, Any]) -> None:
    cold = real_release["cold"]
    assert cold["executed_run_steps"] > 0
    for _, warm in real_release["warm_runs"]:
        assert warm["executed_run_steps"] == 0, warm["bake_runs"]
    ratio = real_release["cold_s"] / real_release["warm_s"]
    runs = "; ".join(f"{s:.1f} s, retries {w['retries']}" for s, w in real_release["warm_runs"])
    cold_s, warm_s = real_release["cold_s"], real_release["warm_s"]
    assert ratio >= 10, f"cold {cold_s:.1f} s / best warm {warm_s:.1f} s = {ratio:.1f}x ({runs})"
