"""Benchmark: a release with SBOM attestations against one without, and ``multibake reproduce``.

Same run, same machine, same sample: the fast tier (``samples/offline/platforms.yaml``, 5 cells x 3
platforms), copied to a temporary directory, each release into a fresh namespace
``127.0.0.1:5000/bench-attest-<random>-<scenario>``, with ``SOURCE_DATE_EPOCH`` set as a CI release
sets it. Both scenarios start from the same cold state: ``docker buildx prune -af`` of the builder
just before each. The order alternates round by round.

- ``sbom off``: ``multibake build --push --attest sbom=off``.
- ``sbom on``: ``multibake build --push --attest sbom=generator=SCANNER``, the scanner image of
  scripts/sbom-scanner.sh (one SPDX scan per platform image).
- ``reproduce``: ``multibake reproduce`` of the last ``sbom off`` release: every cell rebuilt without
  cache into OCI tars and compared with the registry, file by file where layers differ.

Prints medians over the rounds and the on/off ratio; asserts nothing. Run:
``python benchmarks/attest.py [--rounds N] [--builder NAME]`` (default 3 rounds, builder
multibake-remote, where the rebuilt images are identical to the published ones).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "offline"
ENV = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}


def _multibake(*args: str) -> float:
    """Run the CLI; its wall time. A failure ends the benchmark (with the command's last output)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "multibake", *args], env=ENV, capture_output=True, text=True, check=False
    )
    took = time.perf_counter() - t0
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and args[0] != "reproduce"):
        sys.exit(f"multibake {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    if args[0] == "reproduce":
        print(f"  reproduce: exit {proc.returncode} ({'identical' if proc.returncode == 0 else 'differs'})")
    return took


def _prune(builder: str) -> None:
    subprocess.run(["docker", "buildx", "prune", "-af", "--builder", builder], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--builder", default="multibake-remote")
    opts = parser.parse_args()
    scanner = subprocess.run(
        ["bash", str(ROOT / "scripts" / "sbom-scanner.sh"), "--print-ref"], capture_output=True, text=True, check=True
    ).stdout.strip()
    times: dict[str, list[float]] = {"sbom off": [], "sbom on": [], "reproduce": []}
    with tempfile.TemporaryDirectory(prefix="multibake-bench-attest-") as tmp:
        work = Path(tmp) / "offline"
        shutil.copytree(SAMPLE, work, symlinks=True)
        cfg = str(work / "platforms.yaml")
        run_id = secrets.token_hex(3)
        for n in range(opts.rounds):
            order = [("sbom off", "sbom=off"), ("sbom on", f"sbom=generator={scanner}")]
            for name, attest in order if n % 2 == 0 else order[::-1]:
                ns = f"127.0.0.1:5000/bench-attest-{run_id}-{n}-{name.replace(' ', '')}"
                _prune(opts.builder)
                base = ("build", "--push", "-c", cfg, "--registry", ns, "--builder", opts.builder)
                times[name].append(_multibake(*base, "--progress", "quiet", "--attest", attest))
                if name == "sbom off":
                    off_ns = ns
            times["reproduce"].append(
                _multibake("reproduce", "-c", cfg, "--registry", off_ns, "--builder", opts.builder)
            )
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nfast tier, builder {opts.builder}, {opts.rounds} rounds, cold (BuildKit cache pruned), medians:")
    for name, value in median.items():
        print(f"  {name:10} {value:6.1f} s   ({', '.join(f'{t:.1f}' for t in times[name])})")
    print(f"  release time, SBOMs on / off: {median['sbom on'] / median['sbom off']:.2f} x")


if __name__ == "__main__":
    main()
