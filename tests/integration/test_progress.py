"""Build progress against the real stack: the offline sample, plain progress, a short interval.

Its app cells get a build arg no earlier build used, so their RUN steps really run (under QEMU for
arm); the "still running" and "done" lines must name the cells and platforms of the plan.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
FAST = ROOT / "samples" / "offline" / "platforms.yaml"
BUSYBOX_BASE = ROOT / "samples" / "offline" / "busybox-base"
_STILL = re.compile(r"^multibake: still running after \S+(?: \([^)]*\))?: (.*)$")
_FINISHED = re.compile(r"^multibake: (done|cached|failed) (\S+) \(([^)]*)\) in \S+$")
_NAMED = re.compile(r"^(?:(\S+) )?(linux/\S+)(?: step (\d+)/(\d+))?$")


def run_multibake(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, timeout=900)


def still_running(line: str) -> list[tuple[str, str]]:
    """(cell, platform) pairs a "still running" line names."""
    m = _STILL.match(line)
    assert m is not None, line
    pairs = []
    for group in m.group(1).split("; "):
        if group.startswith("and "):
            continue
        cell = None
        for named in group.split(", "):
            parts = _NAMED.match(named)
            assert parts is not None, (named, line)
            cell = parts.group(1) or cell
            assert cell is not None, line
            pairs.append((cell, parts.group(2)))
            if parts.group(3):
                assert 1 <= int(parts.group(3)) <= int(parts.group(4)), line
    return pairs


def test_plain_progress_names_the_cells_and_platforms_still_running_and_done(stack: None) -> None:
    if not (BUSYBOX_BASE / "busybox" / "busybox-armv7").exists():
        pytest.fail("the fast sample tier is not prepared: run scripts/prepare-sample.sh fast")
    registry = f"127.0.0.1:5000/progress-{uuid.uuid4().hex[:8]}"
    planned = json.loads(run_multibake("plan", "--json", "-c", str(FAST), "--registry", registry, env={}).stdout)
    platforms = {c["target"]: c["platforms"] for c in planned["cells"]}
    # a version of its own for each app cell: their RUN steps run anew (the same one would make two cells
    # one build, which BuildKit runs once, under one cell's name)
    nonce = uuid.uuid4().hex[:8]
    sets = [arg for t in platforms if t.startswith("app-") for arg in ("--set", f"{t}.args.APP_VERSION={t}-{nonce}")]
    proc = run_multibake(
        *("build", "-c", str(FAST), "--registry", registry, "--progress", "plain", *sets),
        env={"MULTIBAKE_PROGRESS_INTERVAL": "0.2"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stderr.splitlines()
    assert any(line.startswith("#") and "] RUN " in line for line in lines)  # buildx's own lines, verbatim

    still = [line for line in lines if line.startswith("multibake: still running")]
    assert still, "\n".join(lines[-50:])
    named = {pair for line in still for pair in still_running(line)}
    assert named <= {(cell, p) for cell, ps in platforms.items() for p in ps}
    assert any(cell.startswith("app-") for cell, _ in named), still

    finished = {m.group(2): m for line in lines if (m := _FINISHED.match(line))}
    assert set(finished) == set(platforms)  # each cell said once it finished, under its own name
    for cell, m in finished.items():
        assert m.group(3).split(", ") == platforms[cell], m.group(0)
        # the app cells' RUN steps ran; busybox-base may come from an earlier build's cache
        assert m.group(1) == "done" if cell.startswith("app-") else m.group(1) in ("done", "cached"), m.group(0)
