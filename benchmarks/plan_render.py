"""Benchmark: load → plan → render through the real CLI, and how it grows.

Every number is one ``multibake hcl -c FILE -o OUT`` process, from start to exit (interpreter start-up,
imports, YAML, validation, planning, path checks, rendering, writing), with its peak RSS read from
``wait4``. Four shapes, each at about 1,000 / 10,000 / 50,000 of its unit so linearity is visible:

- ``cells``: one family with three axes 10 x 10 x N on three platforms, per-platform tags, an exclude
  and an include (the goal: 10,000 cells in ≤ 1.0 s and ≤ 150 MB);
- ``families``: N families of one cell each, no matrix (goal: 10,000 in ≤ 1.5 s);
- ``includes``: one family whose N cells are all ``include`` entries (goal: 20,000 in ≤ 1.5 s);
- ``ceiling``: a matrix that would expand to a million cells, refused with exit 2 (goal: < 1 s).

Each size runs ``--runs`` times (fresh processes); the table shows the fastest wall time and the
highest peak RSS. CPU time (user + system of the process) is shown next to wall time: on a busy
machine wall time grows, CPU time much less. ``--profile SHAPE:N`` prints a cProfile of the
in-process load → plan → render of one shape (where the time goes).

Run: ``python benchmarks/plan_render.py`` (``--shapes cells,families`` and ``--runs N`` to change the
work). It prints numbers and verdicts and asserts nothing; it exits non-zero only when a command that
should succeed fails.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multibake.config.load import load
from multibake.plan.model import Meta

PLATFORMS = "[linux/amd64, linux/arm64, linux/arm/v7]"
HEADER = f"registry: 127.0.0.1:5000/bench\nplatforms: {PLATFORMS}\nper_platform_tags: suffix\nimages:\n"


def _contexts(root: Path, *names: str) -> None:
    for ctx in names:
        (root / ctx).mkdir(parents=True, exist_ok=True)
        (root / ctx / "Dockerfile").write_text("FROM scratch\n", encoding="utf-8")


def _values(prefix: str, n: int) -> str:
    return "[" + ", ".join(f'"{prefix}{i}"' for i in range(n)) + "]"


def cells_config(root: Path, n: int) -> str:
    """Three axes 10 x 10 x n/100 on three platforms: n cells."""
    _contexts(root, "app")
    third = max(1, n // 100)
    return HEADER + (
        "  app:\n    context: app\n    matrix:\n"
        f"      os: {_values('os', 10)}\n      flavor: {_values('f', 10)}\n      ver: {_values('v', third)}\n"
        '    exclude:\n      - {os: "os0", flavor: "f0", ver: "v0"}\n'
        '    include:\n      - {os: "os0", flavor: "f0", ver: "v0", platforms: [linux/amd64]}\n'
        '    args: {APP_VERSION: "{ver}", FLAVOR: "{flavor}"}\n    labels: {org.example.os: "{os}"}\n'
        '    tags:\n      - "{ver}-{flavor}-{os}"\n      - tag: "{ver}-{os}"\n        when: {flavor: "f0"}\n'
    )


def families_config(root: Path, n: int) -> str:
    """n families of one cell each (no matrix)."""
    _contexts(root, "app")
    return HEADER + "".join(f'  fam{i}:\n    context: app\n    args: {{N: "{i}"}}\n' for i in range(n))


def includes_config(root: Path, n: int) -> str:
    """One family whose n cells are all include entries."""
    _contexts(root, "app")
    rows = "".join(f'      - {{major: "{i // 100}", minor: "{i % 100}"}}\n' for i in range(n))
    return HEADER + f'  app:\n    context: app\n    tags: ["{{major}}.{{minor}}"]\n    include:\n{rows}'


def ceiling_config(root: Path, n: int) -> str:
    """A matrix of n cells (100 x 100 x n/10,000): refused above the ceiling."""
    _contexts(root, "app")
    return HEADER + (
        "  huge:\n    context: app\n    matrix:\n"
        f"      a: {_values('a', 100)}\n      b: {_values('b', 100)}\n      c: {_values('c', n // 10_000)}\n"
    )


@dataclass(frozen=True)
class Shape:
    name: str
    make: Callable[[Path, int], str]
    sizes: tuple[int, ...]
    goal_size: int
    goal_seconds: float
    goal_rss_mb: float | None = None
    expect_exit: int = 0


SHAPES = {
    s.name: s
    for s in (
        Shape("cells", cells_config, (1_000, 10_000, 50_000), 10_000, 1.0, 150.0),
        Shape("families", families_config, (1_000, 10_000, 50_000), 10_000, 1.5),
        Shape("includes", includes_config, (1_000, 10_000, 20_000, 50_000), 20_000, 1.5),
        Shape("ceiling", ceiling_config, (1_000_000,), 1_000_000, 1.0, expect_exit=2),
    )
}


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    rss_mb: float
    exit: int
    err: str


def run_cli(config: Path, out: Path) -> Run:
    """One ``multibake hcl`` process, start to exit, with its own rusage."""
    argv = [sys.executable, "-m", "multibake", "hcl", "-c", str(config), "-o", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIBAKE_")}
    env["SOURCE_DATE_EPOCH"] = "1700000000"  # no git calls for the creation time
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode, err)


def measure(shape: Shape, n: int, runs: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="multibake-bench-") as tmp:
        root = Path(tmp)
        config = root / "platforms.yaml"
        config.write_text(shape.make(root, n), encoding="utf-8")
        samples = [run_cli(config, root / "docker-bake.hcl") for _ in range(runs)]
    for s in samples:
        if s.exit != shape.expect_exit:
            sys.stderr.write(s.err)
            raise SystemExit(f"{shape.name} {n}: exit {s.exit}, expected {shape.expect_exit}")
    best = min(samples, key=lambda s: s.wall)
    return Run(best.wall, min(s.cpu for s in samples), max(s.rss_mb for s in samples), best.exit, best.err)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a"


def report(shape: Shape, runs: int) -> bool:
    print(f"\n{shape.name}: {shape.make.__doc__}")
    print(f"  {'size':>9} {'wall s':>7} {'cpu s':>7} {'µs/unit':>8} {'RSS MB':>7}")
    results: dict[int, Run] = {}
    for n in shape.sizes:
        r = results[n] = measure(shape, n, runs)
        print(f"  {n:>9} {r.wall:7.3f} {r.cpu:7.3f} {1e6 * r.wall / n:8.1f} {r.rss_mb:7.1f}", flush=True)
        if shape.expect_exit:
            print(f"  message: {r.err.strip()}")
    for small, big in itertools.pairwise(shape.sizes):
        a, b = results[small], results[big]
        # start-up (~0.15 s) is paid once: the growth of (time - the smallest run's time) shows linearity
        growth = f"wall {_ratio(b.wall, a.wall)}, cpu {_ratio(b.cpu, a.cpu)}"
        print(f"  t({big})/t({small}): {growth} (linear: {big / small:.1f})")
    goal = results[shape.goal_size]
    ok = goal.wall <= shape.goal_seconds and (shape.goal_rss_mb is None or goal.rss_mb <= shape.goal_rss_mb)
    rss = f" and ≤ {shape.goal_rss_mb:.0f} MB ({goal.rss_mb:.1f})" if shape.goal_rss_mb else ""
    print(f"  goal {shape.goal_size}: ≤ {shape.goal_seconds} s ({goal.wall:.3f}){rss}: {'MET' if ok else 'NOT MET'}")
    return ok


def profile(spec: str) -> None:
    """cProfile of load → plan → render of one shape, in this process."""
    import cProfile
    import pstats

    from multibake.bake import hcl
    from multibake.plan import planner as plan

    name, _, size = spec.partition(":")
    with tempfile.TemporaryDirectory(prefix="multibake-bench-") as tmp:
        root = Path(tmp)
        path = root / "platforms.yaml"
        path.write_text(SHAPES[name].make(root, int(size)), encoding="utf-8")
        profiler = cProfile.Profile()
        profiler.enable()
        loaded = load(path)
        full: Any = plan.plan(loaded, Meta(created="2024-01-01T00:00:00Z"))
        hcl.render_hcl(full)
        profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated: " + ", ".join(SHAPES))
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per size (best time is kept)")
    parser.add_argument("--profile", metavar="SHAPE:N", help="profile one shape in process, e.g. cells:10000")
    args = parser.parse_args()
    if args.profile:
        profile(args.profile)
        return 0
    print(f"plan/render benchmark through `multibake hcl`: python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    verdicts = {name: report(SHAPES[name], args.runs) for name in args.shapes.split(",") if name}
    print("\ngoals: " + ", ".join(f"{k} {'MET' if v else 'NOT MET'}" for k, v in verdicts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
