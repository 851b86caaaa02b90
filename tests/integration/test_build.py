"""`multibake build` against the real stack: buildx bake, the registry on 127.0.0.1, QEMU for arm.

Every assertion reads what the registry (or a running container) holds, not what we meant to send.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import local_context, run_cli
from tests.integration import registry
from tests.integration.faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parents[2]
FAST = ROOT / "samples" / "offline" / "platforms.yaml"
BUSYBOX_BASE = ROOT / "samples" / "offline" / "busybox-base"
UNAME = {"linux/amd64": "x86_64", "linux/arm64": "aarch64", "linux/arm/v7": "armv7l"}


def multibake(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd)


def build_json(*args: str) -> tuple[int, dict[str, Any], str]:
    proc = multibake("build", "--json", "--progress", "plain", *args)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"build printed no JSON (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc.returncode, doc, proc.stderr


def plan_json(*args: str) -> dict[str, Any]:
    proc = multibake("plan", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def namespace(prefix: str) -> str:
    return f"127.0.0.1:5000/{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def fast_release(stack: None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    if not (BUSYBOX_BASE / "busybox" / "busybox-armv7").exists():
        pytest.fail("the fast sample tier is not prepared: run scripts/prepare-sample.sh fast")
    reg = namespace("fast")
    code, report, err = build_json("-c", str(FAST), "--registry", reg, "--push")
    assert code == 0, err[-4000:]
    return reg, report, plan_json("-c", str(FAST), "--registry", reg)


def test_fast_tier_every_tag_is_an_index_of_exactly_the_planned_platforms(
    fast_release: tuple[str, dict[str, Any], dict[str, Any]],
) -> None:
    _, report, plan = fast_release
    assert report["ok"] is True
    cells = {c["target"]: c for c in report["cells"]}
    assert set(cells) == {c["target"] for c in plan["cells"]}
    for cell in plan["cells"]:
        assert cells[cell["target"]]["status"] == "published"
        for ref in cell["tags"]:
            held = registry.get(ref)
            assert held is not None, f"{ref} is not in the registry"
            assert held.is_index, f"{ref} is a {held.media_type}, not an index"
            assert sorted(held.platforms()) == sorted(cell["platforms"]), ref
        # the digests in the report are the registry's index entries
        first = registry.get(cell["tags"][0])
        assert first is not None
        assert cells[cell["target"]]["platform_digests"] == first.platforms()


def test_fast_tier_platform_images_run_their_own_architecture(
    fast_release: tuple[str, dict[str, Any], dict[str, Any]],
) -> None:
    _, _, plan = fast_release
    child = next(c for c in plan["cells"] if c["parent"])
    ref = child["tags"][0]
    for platform in child["platforms"]:
        out = subprocess.run(
            ["docker", "run", "--rm", "--pull", "always", "--platform", platform, ref, "uname", "-m"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == UNAME[platform], (platform, out.stdout)


def test_second_identical_build_executes_no_run_step(fast_release: tuple[str, dict[str, Any], dict[str, Any]]) -> None:
    reg, _, _ = fast_release
    code, report, err = build_json("-c", str(FAST), "--registry", reg, "--push")
    assert code == 0, err[-3000:]
    assert report["executed_run_steps"] == 0, report["bake_runs"]
    # the proof is BuildKit's own progress: every RUN step header is followed by CACHED
    run_headers = [ln for ln in err.splitlines() if ln.startswith("#") and "] RUN " in ln]
    assert run_headers, "the fast tier has RUN steps; the log must show them"
    cached = {ln.split()[0] for ln in err.splitlines() if ln.rstrip().endswith(" CACHED")}
    assert {h.split()[0] for h in run_headers} <= cached


def _retry_config(tmp_path: Path, registry_host: str) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text('FROM base\nARG NONCE\nRUN echo "$NONCE" > /nonce && uname -m > /arch\n')
    cfg = tmp_path / "platforms.yaml"
    cfg.write_text(
        f"registry: {registry_host}/retry-{uuid.uuid4().hex[:8]}\n"
        "platforms: [linux/amd64, linux/arm64]\n"
        "retry: {attempts: 6, initial_delay: 1, max_delay: 4}\n"
        "images:\n"
        "  bb:\n"
        f"    context: {local_context(tmp_path, BUSYBOX_BASE)}\n"
        '    args: {BUSYBOX_VERSION: "1.35"}\n'
        "  app:\n"
        "    context: app\n"
        "    base: bb\n"
        f'    args: {{NONCE: "{uuid.uuid4().hex}"}}\n'
    )
    return cfg


def build_json_healing(proxy: FaultProxy, *args: str) -> tuple[int, dict[str, Any], str]:
    """``build --json`` while the proxy fails every matching request until multibake starts its own retry.

    How many failures outlast BuildKit's own push retries depends on the stack (4 PUTs on BuildKit in
    dockerd 26, 8 in dockerd 28), so the registry "heals" when multibake announces its retry instead.
    """
    argv = [sys.executable, "-m", "multibake", "build", "--json", "--progress", "plain", *args]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else ""))
    reader.start()
    err: list[str] = []
    for line in proc.stderr or []:
        err.append(line)
        if "transient failure" in line:
            proxy.fail_puts = proxy.injected  # no more failures from now on
    code = proc.wait(timeout=1800)
    reader.join()
    try:
        return code, json.loads(out[0]), "".join(err)
    except ValueError:
        pytest.fail(f"build printed no JSON (exit {code}):\n{out[0][-2000:]}\n{''.join(err)[-4000:]}")


def test_transient_5xx_is_retried_and_the_retry_rebuilds_nothing(stack: None, tmp_path: Path) -> None:
    # The app's manifest PUTs fail until BuildKit's own retries are spent and the bake run fails;
    # multibake's own retry must then carry the release through, pushing again without rebuilding.
    with FaultProxy(fail_puts=-1, status=503, match="/app/manifests/") as proxy:
        cfg = _retry_config(tmp_path, f"127.0.0.1:{proxy.port}")
        code, report, err = build_json_healing(proxy, "-c", str(cfg), "--push")
        assert proxy.injected >= 4
    assert code == 0, err[-4000:]
    runs = report["bake_runs"]
    assert len(runs) >= 2 and runs[0]["outcome"] == "transient", runs
    assert runs[0]["executed_run_steps"], "the first run built the app (its RUN steps executed)"
    assert runs[-1]["outcome"] == "ok"
    assert runs[-1]["executed_run_steps"] == [], "a retry must only push again, not rebuild"
    app = next(c for c in report["cells"] if c["family"] == "app")
    assert app["status"] == "published"
    # read through the real registry, not the proxy
    held = registry.get(app["tags"][0].replace(f"127.0.0.1:{proxy.port}", "127.0.0.1:5000"))
    assert held is not None and held.is_index
    assert sorted(held.platforms()) == ["linux/amd64", "linux/arm64"]


def test_a_failed_second_push_by_dockerd_redoes_nothing(stack: None, tmp_path: Path) -> None:
    # On the docker driver buildx pushes each image twice: BuildKit's push, then dockerd's. When only
    # dockerd's fails, every image is already in the registry: nothing is baked again.
    with FaultProxy(fail_puts=-1, status=503, match="/manifests/", agent="docker/") as proxy:
        cfg = _retry_config(tmp_path, f"127.0.0.1:{proxy.port}")
        code, report, err = build_json("-c", str(cfg), "--push")
        if proxy.injected == 0 and code == 0 and len(report["bake_runs"]) == 1:
            pytest.skip("this stack (dockerd >= 28) pushes each image once: there is no second push to fail")
        assert proxy.injected >= 1, "dockerd's second push must have been refused"
    assert code == 0, err[-4000:]
    assert "every image was already pushed, nothing to redo" in err
    runs = report["bake_runs"]
    assert len(runs) == 1 and runs[0]["outcome"] == "transient", runs
    assert report["retries"] == []
    for cell in report["cells"]:
        assert cell["status"] == "published", cell
        held = registry.get(cell["tags"][0].replace(f"127.0.0.1:{proxy.port}", "127.0.0.1:5000"))
        assert held is not None and held.is_index
        assert sorted(held.platforms()) == ["linux/amd64", "linux/arm64"]


def test_401_is_not_retried_and_no_public_tag_appears(stack: None, tmp_path: Path) -> None:
    with FaultProxy(fail_puts=-1, status=401) as proxy:
        cfg = _retry_config(tmp_path, f"127.0.0.1:{proxy.port}")
        code, report, err = build_json("-c", str(cfg), "--push")
    assert code == 1, err[-3000:]
    assert len(report["bake_runs"]) == 1, "a 401 must fail at once"
    assert report["bake_runs"][0]["outcome"] == "permanent"
    assert report["retries"] == []
    for cell in report["cells"]:
        assert cell["status"] != "published"
        for ref in cell["tags"]:
            assert registry.get(ref.replace(f"127.0.0.1:{proxy.port}", "127.0.0.1:5000")) is None


def test_keep_going_publishes_the_cells_that_build_and_reports_the_one_that_fails(stack: None, tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text('FROM base\nARG V\nRUN test "$V" != "broken" && echo "$V" > /v\n')
    reg = namespace("keepgoing")
    cfg = tmp_path / "platforms.yaml"
    cfg.write_text(
        f"registry: {reg}\nplatforms: [linux/amd64, linux/arm64]\nimages:\n"
        f"  bb:\n    context: {local_context(tmp_path, BUSYBOX_BASE)}\n"
        '    args: {BUSYBOX_VERSION: "1.35"}\n'
        '  app:\n    context: app\n    base: bb\n    matrix: {v: ["good", "broken", "fine"]}\n'
        '    args: {V: "{v}"}\n'
    )
    # without --keep-going the release is all or nothing: no public tag is written
    code, report, _ = build_json("-c", str(cfg), "--push")
    assert code == 1
    assert all(registry.get(t) is None for c in report["cells"] for t in c["tags"])
    broken = next(c for c in report["cells"] if c["target"] == "app-broken")
    assert broken["status"] == "failed" and broken["log_tail"], broken

    code, report, _ = build_json("-c", str(cfg), "--push", "--keep-going")
    assert code == 1
    status = {c["target"]: c["status"] for c in report["cells"]}
    assert status == {
        "bb--image": "published",
        "app-good": "published",
        "app-broken": "failed",
        "app-fine": "published",
    }
    assert registry.get(f"{reg}/app:broken") is None
    held = registry.get(f"{reg}/app:fine")
    assert held is not None and sorted(held.platforms()) == ["linux/amd64", "linux/arm64"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["no-such-family"], "matches no cell"),
        (["--platform", "linux/s390x"], "unknown platform"),
        (["--platform", "armhf"], "ambiguous"),
        (["--builder", "no-such-builder"], "no-such-builder"),
        (["--push", "--load"], "one of --push"),
        (["--push", "--platform", "linux/arm64"], "missing platforms"),
    ],
)
def test_bad_build_input_exits_2_before_building(stack: None, args: list[str], fragment: str) -> None:
    reg = namespace("bad")
    proc = multibake("build", "-c", str(FAST), "--registry", reg, *args)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("buildx ")]
    assert 1 <= len(lines) <= 2, proc.stderr
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "#1 " not in proc.stderr, "bake must not have started"
    assert registry.get(f"{reg}/app:1.0-slim") is None


def test_a_registry_that_always_fails_ends_the_release_within_its_retry_budget(stack: None, tmp_path: Path) -> None:
    with FaultProxy(fail_puts=-1, status=503, match="/manifests/") as proxy:
        cfg = _retry_config(tmp_path, f"127.0.0.1:{proxy.port}")
        cfg.write_text(
            cfg.read_text().replace(
                "attempts: 6, initial_delay: 1, max_delay: 4", "attempts: 2, initial_delay: 1, max_delay: 2"
            )
        )
        started = time.monotonic()
        code, report, err = build_json("-c", str(cfg), "--push")
        elapsed = time.monotonic() - started
    assert code == 1, err[-3000:]
    assert "up to 2 attempts per step, waits up to 2 s each (2 s in all" in err
    # two bake runs, each outlasting BuildKit's own retries (about 10 s), and one wait: bounded
    assert len(report["bake_runs"]) == 2 and elapsed < 120, (elapsed, report["bake_runs"])
    failed = [c for c in report["cells"] if c["status"] == "failed"]
    assert failed and all(
        f"registry 127.0.0.1:{proxy.port}: still failing after 2 attempts" in (c["error"] or "") for c in failed
    ), failed
    for cell in report["cells"]:
        assert registry.get(cell["tags"][0].replace(f"127.0.0.1:{proxy.port}", "127.0.0.1:5000")) is None
