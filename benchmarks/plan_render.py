"""Benchmark: load → plan → render of large matrices, and how it grows.

What it measures, for matrices of about 1,000 / 10,000 / 50,000 cells:

- ``load``: ``multibake.config.load`` (YAML with positions + pydantic validation) of a generated
  platforms.yaml, plus ``multibake.config.check_paths`` on the planned cells (what every CLI command does);
- ``plan``: ``multibake.plan.plan`` (the pure matrix expansion, tags, parents, cache refs);
- ``render``: ``multibake.hcl.render_hcl`` (the docker-bake HCL text);
- ``total``: the three together, and the process's peak RSS (``ru_maxrss``) next to its RSS right
  after the imports (the floor every run pays).

The generated file has three families on three platforms: ``base`` (10 cells), ``app`` built
``FROM base`` on the shared axis ``os`` (os x ver x flavor, with an exclude, an include narrowed to two
platforms so a parent view is planned, conditional tags and per-platform tags) and an independent
``tool`` family that pads the cell count to the exact size.

Each size runs in a fresh interpreter (so peak RSS belongs to that size alone), three times; the
table shows the fastest of the three runs (by total) and the highest peak RSS. CPU time is shown next
to wall time: on a busy machine wall time grows, CPU time much less.

Goals: a 10,000-cell matrix is planned and rendered in ≤ 1 s (plan + render; load + plan + render is
shown too) with ≤ 150 MB peak RSS, and time grows linearly: t(10k)/t(1k) ≈ 10, t(50k)/t(10k) ≈ 5.
When the 10k goal is missed, a cProfile of the 10k run is printed to show where the time goes.

Run: ``python benchmarks/plan_render.py`` (``--sizes 1000,10000`` and ``--runs N`` to change the work).
It prints numbers and verdicts and asserts nothing; it exits non-zero only when something crashes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL_SECONDS = 1.0
GOAL_RSS_MB = 150.0
GOAL_CELLS = 10_000
BASE_CELLS = 10  # the base family: one cell per value of the shared axis `os`
FLAVORS = 10
PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")
PHASES = ("load", "plan", "render")


def shape(cells: int) -> tuple[int, int]:
    """(versions of `app`, cells of `tool`) so that base + app + tool has exactly ``cells`` cells."""
    if cells < BASE_CELLS + BASE_CELLS * FLAVORS + 1:
        raise SystemExit(f"--sizes: {cells} is too small (at least {BASE_CELLS + BASE_CELLS * FLAVORS + 1})")
    per_version = BASE_CELLS * FLAVORS
    versions = (cells - BASE_CELLS - 1) // per_version
    tool = cells - BASE_CELLS - versions * per_version
    return versions, tool


def _yaml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def write_config(root: Path, cells: int) -> Path:
    """A platforms.yaml (and the contexts and Dockerfiles it names) with exactly ``cells`` cells."""
    versions, tool = shape(cells)
    for ctx in ("base", "app", "tool"):
        (root / ctx).mkdir(parents=True, exist_ok=True)
        (root / ctx / "Dockerfile").write_text("FROM scratch\n", encoding="utf-8")
    oses = [f"os{i}" for i in range(BASE_CELLS)]
    vers = [f"{i // 100}.{i % 100}" for i in range(versions)]
    flavors = [f"f{i}" for i in range(FLAVORS)]
    # tool: `tool` values, one excluded, one added back by an include (so exclude/include are exercised)
    tools = [f"t{i}" for i in range(tool - 1)]
    text = f"""\
registry: 127.0.0.1:5000/bench
platforms: [{", ".join(PLATFORMS)}]
per_platform_tags: suffix
cache:
  type: registry
images:
  base:
    context: base
    matrix:
      os: {_yaml_list(oses)}
    args:
      OS: "{{os}}"
    tags:
      - "{{os}}"
      - tag: latest
        when: {{os: "{oses[0]}"}}
  app:
    context: app
    base: base
    matrix:
      os: {_yaml_list(oses)}
      ver: {_yaml_list(vers)}
      flavor: {_yaml_list(flavors)}
    exclude:
      - {{os: "{oses[0]}", ver: "{vers[0]}", flavor: "{flavors[0]}"}}
    include:
      - {{os: "{oses[0]}", ver: "{vers[0]}", flavor: "{flavors[0]}", platforms: [linux/amd64, linux/arm64]}}
    args:
      APP_VERSION: "{{ver}}"
      APP_FLAVOR: "{{flavor}}"
    labels:
      org.example.flavor: "{{flavor}}"
    tags:
      - "{{ver}}-{{flavor}}-{{os}}"
      - tag: "{{ver}}-{{os}}"
        when: {{flavor: "{flavors[0]}"}}
  tool:
    context: tool
    matrix:
      tool: {_yaml_list([*tools, "extra"])}
    exclude:
      - {{tool: "extra"}}
    include:
      - {{tool: "extra", platforms: [linux/amd64]}}
    tags:
      - "{{tool}}"
"""
    path = root / "platforms.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _rss_now_mb() -> float:
    """Resident set size of this process now (Linux /proc), in MB."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def worker(cells: int, profile: bool) -> dict[str, Any]:
    """One measurement in this (fresh) process; returns the numbers as a JSON-able dict."""
    t0 = time.perf_counter()
    from multibake import config, hcl, plan

    imports = time.perf_counter() - t0
    baseline = _rss_now_mb()
    baseline_peak = _peak_rss_mb()
    with tempfile.TemporaryDirectory(prefix="multibake-bench-") as tmp:
        path = write_config(Path(tmp), cells)
        meta = plan.Meta(created="2024-01-01T00:00:00Z")
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        c1 = time.process_time()
        t1 = time.perf_counter()
        loaded = config.load(path)
        t2 = time.perf_counter()
        full = plan.plan(loaded, meta)
        t3 = time.perf_counter()
        config.check_paths(loaded, [(c.family, c.context, c.dockerfile) for c in full.cells])
        t4 = time.perf_counter()
        text = hcl.render_hcl(full)
        t5 = time.perf_counter()
        c5 = time.process_time()
        if profiler is not None:
            profiler.disable()
            _print_profile(profiler, t5 - t1)
        result = {
            "cells": len(full.cells),
            "views": len(full.views),
            "hcl_bytes": len(text.encode()),
            "imports": imports,
            "load": (t2 - t1) + (t4 - t3),
            "plan": t3 - t2,
            "render": t5 - t4,
            "cpu": c5 - c1,
            "baseline_rss_mb": baseline,
            "baseline_peak_mb": baseline_peak,
            "peak_rss_mb": _peak_rss_mb(),
        }
        del text, full, loaded
    return result


def _print_profile(profiler: Any, wall: float) -> None:
    """Where the time goes: the top functions by own time and by cumulative time, as % of the run."""
    import pstats

    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    rows = [(func, tt, ct, nc) for func, (_cc, nc, tt, ct, _callers) in raw.items()]

    def label(func: tuple[str, int, str]) -> str:
        file, line, name = func
        if file == "~":
            return name
        parts = Path(file).parts
        short = "/".join(parts[parts.index("multibake") :]) if "multibake" in parts else Path(file).name
        return f"{short}:{line}({name})"

    out = sys.stderr
    print(f"\ncProfile of one run ({wall:.3f} s wall, {total:.3f} s profiled; profiling slows it down):", file=out)
    for title, key in (("own time (tottime)", 1), ("cumulative time (cumtime)", 2)):
        print(f"  top 15 by {title}:", file=out)
        print(f"    {'%':>6} {'seconds':>8} {'calls':>9}  function", file=out)
        for row in sorted(rows, key=lambda r: r[key], reverse=True)[:15]:
            secs = row[key]
            print(f"    {100 * secs / total:6.1f} {secs:8.3f} {row[3]:9d}  {label(row[0])}", file=out)


def measure(cells: int, runs: int) -> dict[str, Any]:
    """Best-of-``runs`` times (each in a fresh interpreter) and the highest peak RSS."""
    samples = []
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", str(cells)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"worker for {cells} cells failed with exit code {proc.returncode}")
        samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    for s in samples:
        s["total"] = sum(s[p] for p in PHASES)
        s["plan_render"] = s["plan"] + s["render"]
    best: dict[str, Any] = dict(min(samples, key=lambda s: s["total"]))  # the fastest run, all its phases
    best["imports"] = min(s["imports"] for s in samples)
    best["cpu"] = min(s["cpu"] for s in samples)
    best["peak_rss_mb"] = max(s["peak_rss_mb"] for s in samples)
    best["baseline_rss_mb"] = max(s["baseline_rss_mb"] for s in samples)
    return best


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000,10000,50000", help="comma-separated cell counts")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per size (best time is kept)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=int, metavar="CELLS", help="profile one run of CELLS cells and exit")
    args = parser.parse_args()

    if args.worker is not None:
        print(json.dumps(worker(args.worker, profile=False)))
        return 0
    if args.profile is not None:
        worker(args.profile, profile=True)
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(f"plan/render benchmark: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, best of {args.runs} runs")
    print("(the fastest run of each size; load = config.load + check_paths; total = load + plan + render;")
    print(" cpu = the process's CPU time for the same work, best run: wall ≫ cpu means the machine was busy;")
    print(" times in seconds; RSS in MB: after the imports, and the process's peak)\n")
    header = (
        f"{'cells':>7} {'views':>5} {'load':>7} {'plan':>7} {'render':>7} {'plan+rnd':>8} {'total':>7} {'cpu':>7} "
        f"{'µs/cell':>7} {'HCL MB':>7} {'RSS imp':>7} {'RSS peak':>8}"
    )
    print(header)
    print("-" * len(header))
    results: dict[int, dict[str, Any]] = {}
    for size in sizes:
        r = measure(size, args.runs)
        results[size] = r
        print(
            f"{r['cells']:>7} {r['views']:>5} {r['load']:7.3f} {r['plan']:7.3f} {r['render']:7.3f} "
            f"{r['plan_render']:8.3f} {r['total']:7.3f} {r['cpu']:7.3f} {1e6 * r['total'] / r['cells']:7.1f} "
            f"{r['hcl_bytes'] / 1e6:7.2f} {r['baseline_rss_mb']:7.1f} {r['peak_rss_mb']:8.1f}",
            flush=True,
        )
    first = results[sizes[0]]
    print(f"\nimports of multibake.config/plan/hcl: {first['imports']:.3f} s (not in the table's times)")

    print("\ngrowth (linear ≈ the ratio of cell counts):")
    for small, big in itertools.pairwise(sizes):
        a, b = results[small], results[big]
        expect = b["cells"] / a["cells"]
        print(
            f"  t({big})/t({small}): total {_ratio(b['total'], a['total'])}, plan {_ratio(b['plan'], a['plan'])}, "
            f"render {_ratio(b['render'], a['render'])}, load {_ratio(b['load'], a['load'])}, "
            f"cpu {_ratio(b['cpu'], a['cpu'])}  (linear: {expect:.1f})"
        )

    goal = results.get(GOAL_CELLS)
    if goal is None:
        print(f"\ngoal: not evaluated ({GOAL_CELLS} is not among --sizes)")
        return 0
    time_ok = goal["plan_render"] <= GOAL_SECONDS
    rss_ok = goal["peak_rss_mb"] <= GOAL_RSS_MB
    print(f"\ngoal for {GOAL_CELLS} cells:")
    print(
        f"  plan + render {goal['plan_render']:.3f} s ≤ {GOAL_SECONDS} s: {'MET' if time_ok else 'NOT MET'} "
        f"(load + plan + render {goal['total']:.3f} s: {'within' if goal['total'] <= GOAL_SECONDS else 'over'} 1 s)"
    )
    print(
        f"  CPU time of load + plan + render {goal['cpu']:.3f} s (what an idle machine's wall time would be close to)"
    )
    print(f"  peak RSS {goal['peak_rss_mb']:.1f} MB ≤ {GOAL_RSS_MB:.0f} MB: {'MET' if rss_ok else 'NOT MET'}")
    if not (time_ok and goal["total"] <= GOAL_SECONDS):
        sys.stdout.flush()
        subprocess.run([sys.executable, __file__, "--profile", str(GOAL_CELLS)], check=True, stderr=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
