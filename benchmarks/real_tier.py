"""Benchmark: the real tier on a fresh CI runner, multibake against the old per-image loop, same run.

The real tier (``samples/debian/platforms.yaml``: a Debian base, s6 on it, Node.js on that, two
suites, three platforms, every RUN under QEMU for the arm ones) is first released once by multibake
into a fresh namespace (not timed: the previous release, whose registry cache a CI runner finds).
Then both sides start from the same fresh-runner state, BuildKit's cache pruned just before each:

- ``multibake fresh runner``: ``multibake build --push`` of the same release; the registry cache
  that release exported answers every step, so little runs again;
- ``loop fresh runner``: the old scripts' way (``docker buildx build --load`` then ``docker push``
  per image and platform, parents first, no cache import or export), which builds everything again.

Goal: the loop ≥ 10 x multibake. It prints numbers and the verdict and asserts nothing.

Run: ``python benchmarks/real_tier.py`` (needs the stack and ``scripts/prepare-sample.sh real``);
it takes as long as a cold build of the real tier plus the loop, tens of minutes on 2 cores.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build as bench  # the fast-tier benchmark's helpers (run, prune, loop commands)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "debian"
GOAL = 10.0


def main() -> int:
    if len(list((SAMPLE / "debian-base").glob("rootfs-*.tar"))) < 6:
        print("the real tier is not prepared: run scripts/prepare-sample.sh real", file=sys.stderr)
        return 1
    logs = Path(tempfile.mkdtemp(prefix="multibake-bench-real-"))
    log = logs / "real.log"
    snap = logs / "debian"
    shutil.copytree(SAMPLE, snap, ignore=shutil.ignore_patterns(".multibake", ".cache"))
    ns = f"{bench.REGISTRY}/bench-real-{secrets.token_hex(3)}"
    argv = [*bench.multibake(), "build", "--push", "-c", str(snap / "platforms.yaml"), "--registry", ns]
    argv += ["--progress", "plain", "--json"]
    try:
        print(f"real tier: {SAMPLE.relative_to(ROOT)} into {ns}; logs in {logs}", flush=True)
        bench.prune(log)
        previous, _ = bench.run(argv, log=log)
        print(f"  the previous release (cold, not compared): {previous:.1f} s", flush=True)
        bench.prune(log)
        fresh, out = bench.run(argv, log=log)
        steps = json.loads(out).get("steps") or {}
        print(f"  multibake, fresh runner: {fresh:.1f} s (steps: {steps})", flush=True)
        commands = bench.loop_commands(snap, f"{ns}-loop", log)
        bench.prune(log)
        res = bench.Results()
        bench.scenario_loop(commands, log, res, "loop fresh")
        loop = res.median("loop fresh")
        print(f"  loop of {sum(a[1] == 'buildx' for a in commands)} docker build + push, fresh runner: {loop:.1f} s")
    except bench.BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    verdict = "MET" if loop >= GOAL * fresh else "NOT MET"
    print(f"\nloop fresh runner / multibake fresh runner = {loop / fresh:.1f} ≥ {GOAL:g}: {verdict}")
    for note in res.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
