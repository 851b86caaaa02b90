"""Benchmark: multibake build --push against raw ``docker buildx bake`` and the old per-image loop.

Same run, same machine, same sample: the fast tier (``samples/offline/platforms.yaml``: a busybox base
and four ``app`` cells built ``FROM base``, each for linux/amd64, linux/arm64 and linux/arm/v7; RUN
steps of the arm platforms run under QEMU). The sample is copied to a temporary directory first, so
files others edit meanwhile cannot change what is measured, and every scenario pushes into its own
fresh namespace ``127.0.0.1:5000/bench-<random>-<scenario>``: nothing is already in the registry,
neither images nor registry cache. "cold" means ``docker buildx prune -af`` just before (BuildKit's
cache is empty); "warm" repeats the scenario at once, with its cache and pushed images in place;
"fresh runner" prunes BuildKit's cache again and repeats it once more: a CI release job on a new
runner, whose registry still holds the previous release and, for bake, its registry cache. The old
scripts have no cache, so on a fresh runner they build everything again.

Scenarios (wall time of the whole command, ``time.perf_counter`` around the subprocess):

- ``multibake``: ``multibake build --push -c platforms.yaml --registry NS``. It does more than bake:
  start-up and builder checks, one bake that pushes every cell to a private staging tag, then it reads
  each staged index back, points the public multi-arch tags at it, writes every per-platform tag, and
  reads every public tag back to verify it. Its own bake duration (``--json``) is shown, so the time
  spent outside bake is visible.
- ``raw bake``: ``multibake hcl -c platforms.yaml --registry NS -o FILE`` (not timed), then
  ``docker buildx bake -f FILE --push`` from the sample's directory: the same targets, platforms,
  cache import/export and public tags, pushed directly, nothing checked afterwards.
- ``loop``: the way the old shell scripts worked (``docker build``, then ``docker push``), per image
  and platform: ``docker buildx build --platform P --load -t IMAGE:TAG-ARCH …``, then one
  ``docker push`` per tag; parents first, a child getting its parent through
  ``--build-context base=docker-image://PARENT:TAG-ARCH``; no cache export, no multi-arch manifest
  lists, only per-platform tags.
- ``multibake --skip-existing`` (a diagnostic row, fresh runner only): the same release once more
  with nothing changed; every cell's build id is already published, so nothing is built or pushed.
- ``raw bake, no cache`` (a diagnostic row, cold only): raw bake of the same sample rendered with
  ``cache: type: none``, to separate what bake's parallelism buys over the loop from what the
  registry cache export costs.

Each round runs every scenario (cold, warm, fresh runner), starting with a different scenario each round so
that none always runs first; the table shows medians over the rounds.

A raw bake or loop step that fails with a transient registry error (a 5xx, a reset) is retried (6
attempts in all), every attempt counted, as multibake counts its own retries; every retry is printed
as a note.

Goals: multibake cold ≤ 1.05 x raw bake cold; multibake at least 3 x faster than the loop. The loop
goal is evaluated in every state and reported per state: cold against cold is the machine's build
work (2 cores, QEMU), the fresh runner is what a CI release job costs.

Run: ``python benchmarks/build.py`` (needs dockerd with the containerd store, buildx, QEMU binfmt and
the registry on 127.0.0.1:5000: ``nox -s setup``; ``--rounds N`` repeats everything and reports
medians, default 3). It prunes the BuildKit cache of the current builder, so it disturbs builds running
at the same time (and they disturb it: the load average is printed). It prints numbers and verdicts and
asserts nothing; it exits non-zero only when something crashes, including a build that fails.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "offline"
REGISTRY = "127.0.0.1:5000"
GOAL_VS_RAW = 1.05
GOAL_VS_LOOP = 3.0
BUSYBOX = ("busybox-amd64", "busybox-arm64", "busybox-armv7")
ATTEMPTS = 6  # of a raw bake or loop step that fails with a transient registry error


class BenchError(Exception):
    """A step of the benchmark failed: reported with the tail of its log, exit code 1."""


@dataclass
class Results:
    seconds: dict[str, list[float]] = field(default_factory=dict)
    retried: dict[str, list[bool]] = field(default_factory=dict)  # per run: did a transient error force a retry?
    bake_seconds: dict[str, list[float]] = field(default_factory=dict)
    steps: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # `build --json`'s steps, per run
    notes: list[str] = field(default_factory=list)

    def add(self, scenario: str, seconds: float, retried: bool) -> None:
        self.seconds.setdefault(scenario, []).append(seconds)
        self.retried.setdefault(scenario, []).append(retried)

    def median(self, scenario: str) -> float:
        return statistics.median(self.seconds[scenario])

    def clean(self, scenario: str) -> list[float]:
        """The runs of ``scenario`` that needed no retry."""
        return [t for t, r in zip(self.seconds[scenario], self.retried[scenario], strict=True) if not r]

    def clean_median(self, scenario: str) -> float | None:
        runs = self.clean(scenario)
        return statistics.median(runs) if runs else None


def _env() -> dict[str, str]:
    # as a user's shell runs it: no MULTIBAKE_ overrides, and Python's compiled modules in use (a
    # PYTHONDONTWRITEBYTECODE inherited from a CI image would make every run compile multibake again)
    skip = ("PYTHONDONTWRITEBYTECODE",)
    return {k: v for k, v in os.environ.items() if not k.startswith("MULTIBAKE_") and k not in skip}


def compile_multibake() -> None:
    """Compile multibake's modules once, as pip does at install time (an editable install compiles at first use)."""
    spec = importlib.util.find_spec("multibake")
    for folder in spec.submodule_search_locations or [] if spec else []:
        compileall.compile_dir(folder, quiet=1)


_TRANSIENT = re.compile(
    r"\b50[0234]\b|Internal Server Error|unexpected status|connection reset|i/o timeout|TLS handshake timeout"
)


def run(
    argv: list[str], *, log: Path, cwd: Path | None = None, notes: list[str] | None = None, label: str = ""
) -> tuple[float, str]:
    """Run ``argv``, stdout and stderr appended to ``log``; (seconds, stdout). A failure raises BenchError.

    With ``notes``, a failure that looks like a transient registry error is retried, up to
    ``ATTEMPTS`` attempts in all, each retry noted; the time of every attempt counts, as multibake's own
    retries count in its time.
    """
    elapsed = 0.0
    for attempt in range(1, ATTEMPTS + 1):
        with log.open("a", encoding="utf-8") as out:
            out.write(f"\n$ {' '.join(argv)}\n")
            out.flush()
            start = out.tell()
            t0 = time.perf_counter()
            proc = subprocess.run(argv, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=out, text=True, check=False)
            elapsed += time.perf_counter() - t0
            out.write(proc.stdout)
        if proc.returncode == 0:
            return elapsed, proc.stdout
        with log.open(encoding="utf-8") as f:
            f.seek(start)
            output = f.read()
        match = _TRANSIENT.search(output)
        if notes is not None and attempt < ATTEMPTS and match:
            line = next((ln for ln in output.splitlines() if match.group(0) in ln), match.group(0))
            what = f"{label}: " if label else ""
            notes.append(f"{what}`{' '.join(argv[:3])}` retried after a transient error: {line.strip()[:160]}")
            continue
        tail = "".join(output.splitlines(keepends=True)[-25:])
        raise BenchError(f"`{' '.join(argv)}` exited {proc.returncode} after {elapsed:.1f} s; log {log}:\n{tail}")
    raise AssertionError("unreachable")


def multibake() -> list[str]:
    script = Path(sys.executable).parent / "multibake"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "multibake"]


def prune(log: Path) -> float:
    seconds, _ = run(["docker", "buildx", "prune", "-af"], log=log)
    return seconds


def registry_tags(namespace: str, repo: str) -> list[str]:
    """Tags of ``namespace/repo`` in the local registry (its HTTP API), [] if none."""
    path = namespace.removeprefix(REGISTRY + "/")
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/{path}/{repo}/tags/list", timeout=10) as resp:
            doc: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError:
        return []
    return sorted(doc.get("tags") or [])


def preflight(log: Path) -> None:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=10):
            pass
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(f"no registry at {REGISTRY} ({exc}); start the stack: nox -s setup") from None
    run(["docker", "buildx", "version"], log=log)
    run(["docker", "info"], log=log)
    folder = SAMPLE / "busybox-base" / "busybox"
    if not all((folder / name).is_file() for name in BUSYBOX):
        print("busybox binaries missing: running scripts/prepare-sample.sh fast", flush=True)
        run(["bash", str(ROOT / "scripts" / "prepare-sample.sh"), "fast"], log=log)


# --- scenarios --------------------------------------------------------------------------------


def scenario_multibake(snap: Path, ns: str, log: Path, res: Results, label: str) -> None:
    config = str(snap / "platforms.yaml")
    argv = [*multibake(), "build", "--push", "-c", config, "--registry", ns, "--progress", "plain", "--json"]
    if "skip-existing" in label:
        argv.append("--skip-existing")
    seconds, stdout = run(argv, log=log)
    try:
        doc = json.loads(stdout)
    except ValueError:
        res.add(label, seconds, False)
        res.notes.append(f"{label}: could not read `build --json` output; bake duration and retries unknown")
        return
    res.add(label, seconds, bool(doc.get("retries")))
    if not doc.get("ok", False):
        raise BenchError(f"{label}: multibake build reported ok=false; log {log}")
    if isinstance(doc.get("duration"), int | float):
        res.bake_seconds.setdefault(label, []).append(float(doc["duration"]))
    steps = doc.get("steps")
    if isinstance(steps, dict):
        # the process's own wall time next to the steps multibake measured inside it
        res.steps.setdefault(label, []).append({**steps, "wall": seconds})
    for reason in doc.get("retries") or []:
        res.notes.append(f"{label}: multibake retried its bake after a transient error: {str(reason)[:160]}")


def render_bake_file(config: Path, ns: str, dest: Path, log: Path) -> None:
    run([*multibake(), "hcl", "-c", str(config), "--registry", ns, "-o", str(dest)], log=log)


def nocache_config(snap: Path) -> Path | None:
    """A copy of the sample's platforms.yaml with ``cache: type: none`` (for the diagnostic row)."""
    text = (snap / "platforms.yaml").read_text(encoding="utf-8")
    changed, n = re.subn(r"(?m)^(cache:[ \t]*\n[ \t]+type:[ \t]*)\S+", r"\g<1>none", text)
    if n != 1:
        return None
    path = snap / "platforms-nocache.yaml"
    path.write_text(changed, encoding="utf-8")
    return path


def scenario_raw(snap: Path, bake_file: Path, log: Path, res: Results, label: str) -> None:
    argv = ["docker", "buildx", "bake", "-f", str(bake_file), "--push", "--progress", "plain"]
    before = len(res.notes)
    seconds, _ = run(argv, log=log, cwd=snap, notes=res.notes, label=label)
    res.add(label, seconds, len(res.notes) > before)


def loop_commands(snap: Path, ns: str, log: Path) -> list[list[str]]:
    """The old scripts' way, per cell and platform: `docker buildx build --load`, then `docker push` per tag.

    Parents come first (plan order); a child gets its parent's pushed per-platform image as ``base``.
    """
    _, stdout = run([*multibake(), "plan", "--json", "-c", str(snap / "platforms.yaml"), "--registry", ns], log=log)
    plan: dict[str, Any] = json.loads(stdout)
    by_target = {c["target"]: c for c in plan["cells"]}
    commands = []
    for cell in plan["cells"]:  # plan order: every parent comes before its children
        for platform in cell["platforms"]:
            refs = cell["platform_tags"].get(platform) or [f"{t}-{platform.replace('/', '-')}" for t in cell["tags"]]
            argv = ["docker", "buildx", "build", "--platform", platform, "--progress", "plain", "--load"]
            argv += ["-f", str(snap / cell["context"] / cell["dockerfile"])]
            for key, value in cell["args"].items():
                argv += ["--build-arg", f"{key}={value}"]
            for ref in refs:
                argv += ["-t", ref]
            if cell["parent"]:
                parent = by_target[cell["parent"]]
                argv += ["--build-context", f"base=docker-image://{parent['platform_tags'][platform][0]}"]
            commands.append([*argv, str(snap / cell["context"])])
            commands += [["docker", "push", "--quiet", ref] for ref in refs]
    return commands


def scenario_loop(commands: list[list[str]], log: Path, res: Results, label: str) -> None:
    before = len(res.notes)
    t0 = time.perf_counter()
    for argv in commands:
        run(argv, log=log, notes=res.notes, label=label)
    res.add(label, time.perf_counter() - t0, len(res.notes) > before)


# --- report -----------------------------------------------------------------------------------


def _x(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


ROWS = (  # (title, key, raw bake row of the same cache state, loop row of the same cache state)
    ("multibake build --push, cold", "multibake cold", "raw bake cold", "loop cold"),
    ("raw docker buildx bake --push, cold", "raw bake cold", "raw bake cold", "loop cold"),
    ("loop of {n} docker build + push, cold", "loop cold", "raw bake cold", "loop cold"),
    ("multibake build --push, warm", "multibake warm", "raw bake warm", "loop warm"),
    ("raw docker buildx bake --push, warm", "raw bake warm", "raw bake warm", "loop warm"),
    ("loop of {n} docker build + push, warm", "loop warm", "raw bake warm", "loop warm"),
    ("multibake build --push, fresh runner", "multibake fresh", "raw bake fresh", "loop fresh"),
    ("raw docker buildx bake --push, fresh runner", "raw bake fresh", "raw bake fresh", "loop fresh"),
    ("loop of {n} docker build + push, fresh runner", "loop fresh", "raw bake fresh", "loop fresh"),
    ("(diagnostic) raw bake, no cache import/export, cold", "raw bake no cache cold", "raw bake cold", "loop cold"),
    (
        "(diagnostic) multibake --skip-existing, fresh runner, nothing changed",
        "multibake skip-existing fresh",
        "raw bake fresh",
        "loop fresh",
    ),
)


def _clean_text(res: Results, key: str) -> str:
    clean = res.clean(key)
    if not clean:
        return f"- (0/{len(res.seconds[key])})"
    return f"{statistics.median(clean):.2f} ({len(clean)}/{len(res.seconds[key])})"


STATES = (("cold", "cold"), ("warm", "warm"), ("fresh", "fresh runner"))


def _goals(pick: Callable[[str], float | None], indent: str = "  ") -> None:
    """Print each goal's ratio and verdict; ``pick`` gives a scenario's median, None when it has none."""
    mb, raw = pick("multibake cold"), pick("raw bake cold")
    if mb and raw:
        verdict = "MET" if mb <= GOAL_VS_RAW * raw else "NOT MET"
        print(f"{indent}multibake cold / raw bake cold = {mb / raw:.2f} ≤ {GOAL_VS_RAW}: {verdict}")
    else:
        print(f"{indent}multibake cold / raw bake cold: not evaluated (no such run of one of them)")
    for state, title in STATES:
        mb, loop = pick(f"multibake {state}"), pick(f"loop {state}")
        if mb and loop:
            verdict = "MET" if loop >= GOAL_VS_LOOP * mb else "NOT MET"
            print(f"{indent}loop {title} / multibake {title} = {loop / mb:.2f} ≥ {GOAL_VS_LOOP}: {verdict}")


def report(res: Results, n_builds: int, namespaces: dict[str, str], rounds: int) -> None:
    rows = [(title.format(n=n_builds), key, raw, loop) for title, key, raw, loop in ROWS if key in res.seconds]
    width = max(len(r[0]) for r in rows)
    print(f"\nresults ({'median of ' + str(rounds) + ' rounds' if rounds > 1 else 'one round'}; ratios against")
    print("the scenario in the same cache state: cold against cold, warm against warm; the last column is")
    print("the median of the runs that needed no retry after a transient registry error, and how many)\n")
    header = (
        f"{'scenario':<{width}}  {'seconds':>7}  {'/ raw bake':>10}  {'/ loop':>7}  {'speed-up over loop':>18}  "
        f"{'no-retry runs':>13}"
    )
    print(header)
    print("-" * len(header))
    for title, key, raw, loop in rows:
        t = res.median(key)
        vs_raw = _x(t, res.median(raw)) if raw in res.seconds else "n/a"
        vs_loop = _x(t, res.median(loop)) if loop in res.seconds else "n/a"
        speed_up = _x(res.median(loop), t) if loop in res.seconds else "n/a"
        print(f"{title:<{width}}  {t:7.2f}  {vs_raw:>10}  {vs_loop:>7}  {speed_up:>18}  {_clean_text(res, key):>13}")
    if rounds > 1:
        print("\nevery round (seconds; * = a transient registry error forced a retry, its time included):")
        for key, values in res.seconds.items():
            marks = res.retried[key]
            print(
                f"  {key:<29} " + "  ".join(f"{v:7.2f}{'*' if m else ' '}" for v, m in zip(values, marks, strict=True))
            )

    print("\nwhat multibake's time is made of (each run: wall = its bake run, as multibake measured it, + the rest:")
    print("start-up, builder checks, reading staged indexes, writing public and per-platform tags, verifying):")
    for state, _ in STATES:
        key = f"multibake {state}"
        bakes = res.bake_seconds.get(key, [])
        if key not in res.seconds or len(bakes) != len(res.seconds[key]):
            continue
        parts = [
            f"{t:.2f}{'*' if r else ''} = {b:.2f} + {t - b:.2f}"
            for t, b, r in zip(res.seconds[key], bakes, res.retried[key], strict=True)
        ]
        print(f"  {state}: " + "; ".join(parts))
    steps_table(res)
    print(
        "  multibake does more work than raw bake: bake pushes every cell to a private staging tag; then each\n"
        "  staged index is read back and checked, the public multi-arch tags are pointed at it and every\n"
        "  per-platform tag is written as that platform's manifest; finally every public tag is read back and\n"
        "  verified. Raw bake pushes the public multi-arch tags directly (no per-platform tags) and checks nothing.\n"
        "  The loop pushes only per-platform tags (no manifest lists, no cache export) and checks nothing."
    )

    print("\nwhat each scenario left in the registry (first round):")
    for key, ns in namespaces.items():
        for repo in ("busybox-base", "app"):
            tags = registry_tags(ns, repo)
            staging = [t for t in tags if t.startswith("multibake-staging-")]
            public = [t for t in tags if t not in staging]
            per_platform = [t for t in public if t.endswith(("-amd64", "-arm64", "-armv7"))]
            multi = len(public) - len(per_platform)
            extra = f", {len(staging)} staging" if staging else ""
            print(f"  {key:<18} {repo:<13} {multi:2d} multi-arch tags, {len(per_platform):2d} per-platform tags{extra}")

    print("\ngoals (medians of all runs, retries included):")
    _goals(lambda key: res.median(key) if key in res.seconds else None)
    print("goals on the runs that needed no retry:")
    _goals(lambda key: res.clean_median(key) if key in res.seconds else None)
    for note in res.notes:
        print(f"note: {note}")


STEP_COLUMNS = ("start", "plan", "preflight", "bake", "promote", "verify")


def own_time(steps: dict[str, float]) -> float:
    """multibake's own time in one run: the process's wall time less its bake run(s)."""
    return steps["wall"] - steps.get("bake", 0.0)


def steps_table(res: Results) -> None:
    """Medians of the steps ``build --json`` reports, per multibake scenario: where its time went."""
    keys = [k for k in res.steps if res.steps[k]]
    if not keys:
        print("  (no per-step durations: this multibake's `build --json` has no `steps`)")
        return
    width = max(len(k) for k in keys)
    cols = [*STEP_COLUMNS, "other", "own", "wall"]
    print("\n  medians, seconds (own = wall - bake: what multibake adds to bake; other = outside every step):")
    print(f"  {'scenario':<{width}}  " + "  ".join(f"{c:>9}" for c in cols))
    for key in keys:
        runs = res.steps[key]
        row = []
        for col in cols:
            if col == "own":
                values = [own_time(r) for r in runs]
            elif col == "other":
                values = [r["wall"] - sum(r.get(c, 0.0) for c in STEP_COLUMNS) for r in runs]
            else:
                values = [r.get(col, 0.0) for r in runs]
            row.append(f"{statistics.median(values):9.3f}")
        print(f"  {key:<{width}}  " + "  ".join(row))


def wide_config(snap: Path, cells: int) -> Path | None:
    """A copy of the sample's platforms.yaml whose ``app`` family has ``cells - 1`` cells (one flavor)."""
    text = (snap / "platforms.yaml").read_text(encoding="utf-8")
    versions = ", ".join(f'"{n}.0"' for n in range(1, cells))
    changed, n = re.subn(r"(?m)^(\s+app: )\[[^\]]*\]$", rf"\g<1>[{versions}]", text)
    changed, m = re.subn(r"(?m)^(\s+flavor: )\[[^\]]*\]$", r"\g<1>[slim]", changed)
    if n != 1 or m != 1:
        return None
    path = snap / f"platforms-{cells}.yaml"
    path.write_text(changed, encoding="utf-8")
    return path


def tag_count(config: Path, ns: str, log: Path) -> tuple[int, int]:
    """(cells, public tags: multi-arch and per-platform) the plan of ``config`` has."""
    _, stdout = run([*multibake(), "plan", "--json", "-c", str(config), "--registry", ns], log=log)
    cells = json.loads(stdout)["cells"]
    tags = sum(len(c["tags"]) + sum(len(r) for r in c["platform_tags"].values()) for c in cells)
    return len(cells), tags


def scale(snap: Path, run_id: str, logs: Path, res: Results, *, rounds: int, wide: int) -> None:
    """multibake's own time, warm, at the sample's size and at ``wide`` cells: how it grows with the tags."""
    log = logs / "scale.log"
    sizes: list[tuple[str, Path]] = [("sample", snap / "platforms.yaml")]
    config = wide_config(snap, wide)
    if config is None:
        res.notes.append("the sample's app matrix was not found: the scale rows were skipped")
        return
    sizes.append(("wide", config))
    print(f"\nscale: multibake's own time, warm (built once, then {rounds} runs with nothing to rebuild):")
    own: dict[str, tuple[int, int, float]] = {}
    for name, cfg in sizes:
        ns = f"{REGISTRY}/bench-{run_id}-scale-{name}"
        cells, tags = tag_count(cfg, ns, log)
        label = f"multibake warm, {cells} cells"
        argv = [*multibake(), "build", "--push", "-c", str(cfg), "--registry", ns, "--progress", "plain", "--json"]
        run(argv, log=log)  # fills BuildKit's cache and the namespace
        for _ in range(rounds):
            seconds, stdout = run(argv, log=log)
            steps = json.loads(stdout).get("steps") or {}
            res.steps.setdefault(label, []).append({**steps, "wall": seconds})
        own_s = statistics.median(own_time(r) for r in res.steps[label])
        own[name] = (cells, tags, own_s)
        print(f"  {cells:3d} cells, {tags:4d} public tags: own time {own_s:.3f} s (median)", flush=True)
    (c1, t1, o1), (c2, t2, o2) = own["sample"], own["wide"]
    if t2 > t1:
        print(f"  growth: {1000 * (o2 - o1) / (t2 - t1):.2f} ms per public tag ({c1} → {c2} cells)")


def per_platform_check(namespace: str, snap: Path, log: Path) -> list[str]:
    """Per-platform tags the plan promises for ``namespace`` that the registry does not hold."""
    argv = [*multibake(), "plan", "--json", "-c", str(snap / "platforms.yaml"), "--registry", namespace]
    _, stdout = run(argv, log=log)
    missing = []
    for cell in json.loads(stdout)["cells"]:
        for refs in cell["platform_tags"].values():
            for ref in refs:
                repo, _, tag = ref.rpartition(":")
                if tag not in registry_tags(namespace, repo.removeprefix(namespace + "/")):
                    missing.append(ref)
    return missing


SCENARIO_KEYS = ("mb", "raw", "nc", "loop")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="repeat every scenario; medians are reported")
    parser.add_argument("--no-warm", action="store_true", help="skip the warm and fresh-runner runs")
    parser.add_argument(
        "--wide", type=int, default=50, help="cells of the scale rows (0: no scale rows); the sample has 5"
    )
    args = parser.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="multibake-bench-build-"))
    setup_log = logs / "setup.log"
    res = Results()
    run_id = secrets.token_hex(3)
    namespaces: dict[str, str] = {}
    compile_multibake()
    try:
        preflight(setup_log)
        snap = logs / "offline"
        shutil.copytree(SAMPLE, snap, ignore=shutil.ignore_patterns(".multibake", ".cache"))
        nocache = nocache_config(snap)
        load = os.getloadavg()
        print(f"build benchmark: fast tier ({SAMPLE.relative_to(ROOT)}), {os.cpu_count()} CPUs, run id {run_id}")
        print(f"builder: {os.environ.get('BUILDX_BUILDER') or 'the current one (docker buildx ls)'}")
        print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; logs in {logs}", flush=True)
        n_builds = 0
        for rnd in range(args.rounds):
            ns = {k: f"{REGISTRY}/bench-{run_id}{rnd}-{k}" for k in SCENARIO_KEYS}
            if rnd == 0:
                namespaces = {
                    "multibake": ns["mb"],
                    "raw bake": ns["raw"],
                    "raw bake no cache": ns["nc"],
                    "loop": ns["loop"],
                }
            log = logs / f"round{rnd}.log"

            def step(label: str, fn: Any, *fn_args: Any, _log: Path = log) -> None:
                if label.endswith(("cold", "fresh")):
                    prune(_log)
                elif args.no_warm:
                    return
                fn(*fn_args, _log, res, label)
                print(f"  {label:<29} {res.seconds[label][-1]:7.2f} s", flush=True)

            def multibake_unit(_ns: dict[str, str] = ns) -> None:
                step("multibake cold", scenario_multibake, snap, _ns["mb"])
                step("multibake warm", scenario_multibake, snap, _ns["mb"])
                step("multibake fresh", scenario_multibake, snap, _ns["mb"])
                step("multibake skip-existing fresh", scenario_multibake, snap, _ns["mb"])

            def raw_unit(_ns: dict[str, str] = ns, _rnd: int = rnd, _log: Path = log) -> None:
                bake_file = logs / f"raw-{_rnd}.hcl"
                render_bake_file(snap / "platforms.yaml", _ns["raw"], bake_file, _log)
                step("raw bake cold", scenario_raw, snap, bake_file)
                step("raw bake warm", scenario_raw, snap, bake_file)
                step("raw bake fresh", scenario_raw, snap, bake_file)

            def loop_unit(_ns: dict[str, str] = ns, _log: Path = log) -> None:
                nonlocal n_builds
                commands = loop_commands(snap, _ns["loop"], _log)
                n_builds = sum(argv[1] == "buildx" for argv in commands)
                step("loop cold", scenario_loop, commands)
                step("loop warm", scenario_loop, commands)
                step("loop fresh", scenario_loop, commands)

            def nocache_unit(_ns: dict[str, str] = ns, _rnd: int = rnd, _log: Path = log) -> None:
                if nocache is not None:
                    nc_file = logs / f"raw-nocache-{_rnd}.hcl"
                    render_bake_file(nocache, _ns["nc"], nc_file, _log)
                    step("raw bake no cache cold", scenario_raw, snap, nc_file)

            # each round starts with another scenario, so none always runs first or after the same one
            units = [multibake_unit, raw_unit, loop_unit, nocache_unit]
            shift = rnd % len(units)
            print(f"\nround {rnd + 1}/{args.rounds}:")
            for unit in units[shift:] + units[:shift]:
                unit()
        load = os.getloadavg()
        print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        if nocache is None:
            res.notes.append("no `cache: type:` line found in the sample: the no-cache diagnostic row was skipped")
        missing = per_platform_check(namespaces["multibake"], snap, setup_log)
        if missing:
            res.notes.append(
                f"`multibake build --push` did not push {len(missing)} per-platform tags its plan lists, "
                f"e.g. {missing[0]}"
            )
        if args.wide > 0 and not args.no_warm:
            scale(snap, run_id, logs, res, rounds=args.rounds, wide=args.wide)
        report(res, n_builds, namespaces, args.rounds)
    except BenchError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(logs / "offline", ignore_errors=True)
    # Not removed here: the docker driver keeps every image it built in dockerd's image store, and
    # removing hundreds of them from the containerd store takes seconds each, long after this ends.
    print(f"\nimages this run left in dockerd's image store: `docker image ls | grep bench-{run_id}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
