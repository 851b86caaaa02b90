"""Benchmark: how long the multibake command takes to start, and which imports it pays for.

What it measures (wall time of the real process, median and best of N runs after one warm-up run):

- ``python -c pass``: the interpreter's own start-up, the floor nothing can beat;
- ``multibake --help`` and ``multibake plan -c platforms.yaml`` (the shipped families, run from the
  repository root), both through the console-script entry point next to ``sys.executable`` and
  through ``python -m multibake``. ``plan`` includes everything a user waits for: imports, loading and
  validating the YAML, ``git`` calls for the provenance labels, planning, checking the files, printing.

The CPU time (user + system, the command and its children such as git) is shown next to the wall
time: on a busy machine wall time grows, CPU time much less.

Then ``python -X importtime -m multibake plan`` shows the 10 imports with the highest cumulative time
(and the 10 with the highest own time), and whether the heavy modules the CLI defers (python-on-whales,
rich, tenacity) were imported by ``--help`` or ``plan`` anyway.

Goals: ``multibake --help`` ≤ 0.08 s and ``multibake plan`` ≤ 0.2 s (median, entry point): what they
took before the package was laid out by pipeline stage.

Run: ``python benchmarks/startup.py`` (``--runs N`` to change the number of runs). It prints numbers
and verdicts and asserts nothing; it exits non-zero only when something crashes (including a command
that fails).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "platforms.yaml"
# Goals: no slower than before the package was laid out by stage (measured then: 0.08 s and 0.2 s).
GOALS = {"--help": 0.08, "plan": 0.2}
DEFERRED = ("python_on_whales", "rich", "tenacity")  # cli.py imports these only inside the commands that need them


def _goal(label: str) -> float:
    return GOALS["--help"] if "--help" in label else GOALS["plan"]


def _env() -> dict[str, str]:
    # the shipped file as written: no registry/config overrides from the caller's environment
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIBAKE_")}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled modules in use, as after pip install
    return env


def _run(argv: list[str], pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    env = _env() | ({"PYTHONPATH": pythonpath} if pythonpath else {})
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"`{' '.join(argv)}` failed with exit code {proc.returncode}")
    return proc


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(argv: list[str], runs: int, pythonpath: str | None = None) -> tuple[list[float], list[float]]:
    """Wall times and CPU times (the process and everything it waited for, e.g. git) of ``runs`` runs."""
    _run(argv, pythonpath)  # warm-up: bytecode caches, page cache
    walls, cpus = [], []
    for _ in range(runs):
        c0 = _children_cpu()
        t0 = time.perf_counter()
        _run(argv, pythonpath)
        walls.append(time.perf_counter() - t0)
        cpus.append(_children_cpu() - c0)
    return walls, cpus


def importtime(argv: list[str]) -> list[tuple[int, int, int, str]]:
    """(self µs, cumulative µs, depth, module) for every import ``argv`` makes, from ``-X importtime``."""
    proc = _run([sys.executable, "-X", "importtime", *argv])
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|", 2)
        depth = (len(name) - len(name.lstrip(" "))) // 2
        rows.append((int(own), int(cumulative), depth, name.strip()))
    return rows


def compare_with(rev: str, runs: int) -> None:
    """``--help`` and ``plan`` of revision ``rev`` and of this checkout, interleaved runs, as ratios."""
    with tempfile.TemporaryDirectory(prefix="multibake-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        add = ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev]
        made = subprocess.run(add, capture_output=True, check=False)
        if made.returncode != 0:
            print(f"baseline {rev}: not available ({made.stderr.decode().strip()[:120]})\n")
            return
        try:
            print(f"this checkout against {rev} (python -m multibake, {runs} runs each, interleaved):")
            for label, args in (("--help", ["--help"]), ("plan", ["plan", "-c", CONFIG])):
                argv = [sys.executable, "-m", "multibake", *args]
                old, new = [], []
                for _ in range(runs):
                    old += time_command(argv, 1, str(tree / "src"))[0]
                    new += time_command(argv, 1, str(ROOT / "src"))[0]
                o, n = statistics.median(old), statistics.median(new)
                print(f"  {label:<7} {rev[:12]} {o:.3f} s  this {n:.3f} s  ratio {n / o:.2f}x")
            print()
        finally:
            remove = ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)]
            subprocess.run(remove, capture_output=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command (median and best are shown)")
    parser.add_argument(
        "--baseline", metavar="REV", help="also time `python -m multibake` of this git revision, same run, as a ratio"
    )
    args = parser.parse_args()
    if args.baseline:
        compare_with(args.baseline, args.runs)

    py = sys.executable
    script = Path(py).parent / "multibake"
    commands: list[tuple[str, list[str], bool]] = [("python -c pass (floor)", [py, "-c", "pass"], False)]
    if script.is_file():
        commands += [
            ("multibake --help", [str(script), "--help"], True),
            (f"multibake plan -c {CONFIG}", [str(script), "plan", "-c", CONFIG], True),
        ]
    else:
        print(f"note: no console script at {script}; timing `python -m multibake` only (install with pip -e .)")
    commands += [
        ("python -m multibake --help", [py, "-m", "multibake", "--help"], script.is_file() is False),
        (f"python -m multibake plan -c {CONFIG}", [py, "-m", "multibake", "plan", "-c", CONFIG], not script.is_file()),
    ]

    print(f"start-up benchmark: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, cwd {ROOT}")
    print(f"median and best of {args.runs} runs after one warm-up; goals (median): {GOALS}")
    print("cpu s: median CPU time (user + system) of the command and its children; wall ≫ cpu means a busy machine\n")
    width = max(len(label) for label, _, _ in commands)
    header = (
        f"{'command':<{width}}  {'median s':>8}  {'best s':>7}  {'worst s':>7}  {'cpu s':>6}  {'vs floor':>8}  goal"
    )
    print(header)
    print("-" * len(header))
    floor = 0.0
    verdicts: list[tuple[str, bool]] = []
    for label, argv, graded in commands:
        samples, cpus = time_command(argv, args.runs)
        med = statistics.median(samples)
        floor = floor or med
        verdict = ""
        if graded:
            goal = _goal(label)
            ok = med <= goal
            verdicts.append((label, ok))
            verdict = "MET" if ok else "NOT MET"
        print(
            f"{label:<{width}}  {med:8.3f}  {min(samples):7.3f}  {max(samples):7.3f}  "
            f"{statistics.median(cpus):6.3f}  {med / floor:7.1f}x  {verdict}",
            flush=True,
        )

    plan_argv = ["-m", "multibake", "plan", "-c", CONFIG]
    rows = importtime(plan_argv)
    total_imports = sum(cum for _, cum, depth, _ in rows if depth == 0)
    print(f"\n`python -X importtime -m multibake plan -c {CONFIG}`: {len(rows)} modules, {total_imports / 1e6:.3f} s")
    print("in top-level imports (importtime's own overhead inflates this a little)")
    for title, key in (("cumulative", 1), ("own (self)", 0)):
        print(f"\ntop 10 imports by {title} time:")
        print(f"  {'cumul ms':>8}  {'self ms':>7}  {'depth':>5}  module (depth 0: imported by __main__ or at run time)")
        for row in sorted(rows, key=lambda r: r[key], reverse=True)[:10]:
            own, cumulative, depth, name = row
            print(f"  {cumulative / 1000:8.1f}  {own / 1000:7.1f}  {depth:>5}  {name}")

    help_rows = importtime(["-m", "multibake", "--help"])
    print("\nmodules the CLI defers to the commands that need them:")
    for cmd, found in (("--help", help_rows), ("plan", rows)):
        names = {name for _, _, _, name in found}
        loaded = [m for m in DEFERRED if m in names]
        print(f"  multibake {cmd:<7} imports {', '.join(loaded) if loaded else 'none of them'}")
        roots = sorted(((cum, name) for _, cum, _, name in found if "." not in name), reverse=True)[:6]
        print("    heaviest packages (cumulative): " + ", ".join(f"{n} {us / 1000:.0f} ms" for us, n in roots))

    print()
    for label, ok in verdicts:
        print(f"goal `{label}` ≤ {_goal(label)} s: {'MET' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
