"""Size gates on the real stack: a 3 MB accident stops the release before tags move; diff --max-growth exits 1.

The busybox base and an app family FROM it (test_gc.project), released into a namespace of their own
on 127.0.0.1:5000; the sizes compared are what the registry serves.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.integration import registry
from tests.integration.test_gc import multibake, project, push

BIG = "RUN head -c 3000000 /dev/urandom > /accident\n"  # incompressible: 3 MB on every platform


def digests(cfg: Path) -> dict[str, str | None]:
    plan = json.loads(multibake("plan", "--json", "-c", str(cfg)).stdout)
    out: dict[str, str | None] = {}
    for cell in plan["cells"]:
        for ref in [*cell["tags"], *(r for refs in cell["platform_tags"].values() for r in refs)]:
            held = registry.get(ref)
            out[ref] = held.digest if held else None
    return out


def test_a_layer_that_grew_past_the_gate_stops_the_release_and_fails_diff(
    stack: None, tmp_path: Path, measured: Callable[[str], None]
) -> None:
    ns = f"127.0.0.1:5000/gate-{uuid.uuid4().hex[:8]}"
    cfg = project(tmp_path, ns, "a", retention="")
    cfg.write_text(cfg.read_text() + "gate: {max_growth: 10%}\n")
    push(cfg)
    before = digests(cfg)

    dockerfile = tmp_path / "app" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + BIG)
    stopped = multibake("build", "--push", "--progress", "plain", "-c", str(cfg))
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    lines = [ln for ln in stopped.stderr.splitlines() if "size gate:" in ln]
    assert len(lines) == 9, "three app cells, three platforms each"
    armv7 = next(ln for ln in lines if f"{ns}/app:1.0 linux/arm/v7 grew" in ln)
    found = re.search(r"grew (\S+ \S+) → (\S+ \S+) .*limit 10%.*layers that grew: sha256:\w+… (\S+ MB)", armv7)
    assert found is not None, armv7
    assert found.group(3) in ("3.0 MB", "3.1 MB"), "the accidental layer, by its size"
    measured(armv7.replace(ns, "NS"))
    assert digests(cfg) == before, "no tag moved"

    cfg.write_text(cfg.read_text().replace("gate: {max_growth: 10%}\n", ""))
    push(cfg)  # released without the gate: now the last release grew
    proc = multibake("diff", "-c", str(cfg), "--max-growth", "10%")
    assert proc.returncode == 1
    named = [ln for ln in proc.stderr.splitlines() if "size gate:" in ln]
    assert len(named) == 9 and any(f"{ns}/app:3.0 linux/arm64 grew" in ln for ln in named)
    doc = json.loads(multibake("diff", "-c", str(cfg), "--max-growth", "10%", "--json").stdout)
    assert doc["gate"]["max_growth"] == "10%" and len(doc["gate"]["breaches"]) == 9
    grown = doc["gate"]["breaches"][0]
    assert grown["after"] - grown["before"] > 2_900_000 and grown["grown_layers"][0]["bytes"] > 2_900_000
    assert multibake("diff", "-c", str(cfg), "--max-growth", "50MB").returncode == 0
