"""Benchmark: what signing costs a release. Signed vs unsigned, same run, same cold state, ratio printed.

The fast tier (``samples/offline``: a busybox base and four ``app`` cells, each for linux/amd64,
linux/arm64 and linux/arm/v7: 5 indexes and 15 platform images) is copied to a temporary directory and
released twice per round with ``multibake build --push``: once as it is, once with
``sign: {cosign: {key: cosign.key}}`` (a key pair made here with ``cosign generate-key-pair``, no
transparency log). Each release starts from the same state: BuildKit's cache pruned
(``docker buildx prune -af``) and a namespace of its own in the registry on 127.0.0.1:5000. The order
of the two sides alternates between rounds; medians are printed, with the ratio signed / unsigned and
the seconds signing added per image.

A second table shows why multibake signs a cell's images in one cosign run and cells in parallel: the
same 20 images of a release signed again with cosign directly, one process per image one after the
other (a shell loop's way), against one process per cell, four at a time (multibake's way).

Run: ``python benchmarks/signing.py [--rounds N]`` (the stack of ``nox -s setup`` and cosign:
``scripts/setup-stack.sh --with cosign``). It prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "offline"
REGISTRY = "127.0.0.1:5000"
CACHED = Path(os.environ.get("MULTIBAKE_CACHE", "/var/cache/multibake")) / "cosign-v2.6.5" / "cosign"
PASSWORD = secrets.token_hex(8)


def cosign() -> str:
    found = shutil.which("cosign") or (str(CACHED) if CACHED.is_file() else None)
    if found is None:
        sys.exit("cosign is not installed: scripts/setup-stack.sh --with cosign")
    return found


def env(cosign_bin: str) -> dict[str, str]:
    return {**os.environ, "COSIGN_PASSWORD": PASSWORD, "MULTIBAKE_COSIGN": cosign_bin}


def timed(argv: list[str], log: Path, **kw: object) -> tuple[float, str]:
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        t0 = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=out, text=True, check=False, **kw)  # type: ignore[call-overload]
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"`{' '.join(argv[:4])}` failed (exit {proc.returncode}); log {log}")
    return seconds, str(proc.stdout)


def release(config: Path, signed: bool, cosign_bin: str, log: Path) -> tuple[float, dict[str, object], str]:
    ns = f"{REGISTRY}/bench-sign-{secrets.token_hex(4)}-{'signed' if signed else 'unsigned'}"
    timed(["docker", "buildx", "prune", "-af"], log)
    argv = [sys.executable, "-m", "multibake", "build", "--push", "--json", "--progress", "plain"]
    seconds, out = timed([*argv, "-c", str(config), "--registry", ns], log, env=env(cosign_bin), cwd=config.parent)
    return seconds, json.loads(out), ns


def project(tmp: Path, cosign_bin: str, log: Path) -> tuple[Path, Path]:
    snap = tmp / "sample"
    shutil.copytree(SAMPLE, snap, symlinks=True)
    timed([cosign_bin, "generate-key-pair"], log, cwd=snap, env=env(cosign_bin), stdin=subprocess.DEVNULL)
    unsigned = snap / "platforms.yaml"
    signed = snap / "signed.yaml"
    signed.write_text(unsigned.read_text() + "sign: {cosign: {key: cosign.key}}\n")
    return unsigned, signed


def resign(doc: dict[str, object], cosign_bin: str, key: Path, log: Path) -> tuple[float, float, int]:
    """The images a signed release signed, signed again: one run per image in a row, then one per cell, 4 at once."""
    cells = [list(c["signatures"]) for c in doc["cells"]]  # type: ignore[attr-defined]
    per_cell = [[s["image"] for s in cell] for cell in cells]
    base = [cosign_bin, "sign", "--yes", "--allow-http-registry", "--key", str(key), "--tlog-upload=false"]
    kw = {"env": env(cosign_bin), "stdin": subprocess.DEVNULL}
    t0 = time.perf_counter()
    for image in (i for cell in per_cell for i in cell):
        timed([*base, image], log, **kw)
    serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda images: timed([*base, *images], log, **kw), per_cell))
    parallel = time.perf_counter() - t0
    return serial, parallel, sum(len(c) for c in per_cell)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cosign_bin = cosign()
    with tempfile.TemporaryDirectory(prefix="multibake-bench-sign-") as folder:
        tmp = Path(folder)
        log = tmp / "bench.log"
        unsigned, signed = project(tmp, cosign_bin, log)
        times: dict[bool, list[float]] = {False: [], True: []}
        last: dict[str, object] = {}
        for rnd in range(args.rounds):
            for side in (False, True) if rnd % 2 == 0 else (True, False):
                seconds, doc, _ = release(signed if side else unsigned, side, cosign_bin, log)
                times[side].append(seconds)
                print(f"round {rnd + 1}: {'signed' if side else 'unsigned'} {seconds:.1f} s", flush=True)
                last = doc if side else last
        images = sum(len(c["signatures"]) for c in last.get("cells", []))  # type: ignore[attr-defined, misc]
        plain, sign = statistics.median(times[False]), statistics.median(times[True])
        print(
            f"\nfast tier release, cold BuildKit cache, {args.rounds} round(s), "
            f"medians (load {os.getloadavg()[0]:.1f}):"
        )
        print(f"  unsigned  {plain:6.1f} s")
        print(f"  signed    {sign:6.1f} s   ({images} images signed)")
        print(
            f"  ratio signed / unsigned: {sign / plain:.2f}x; signing adds {(sign - plain):.1f} s, "
            f"{(sign - plain) / max(images, 1):.2f} s per image"
        )
        serial, parallel, count = resign(last, cosign_bin, signed.parent / "cosign.key", log)
        print(f"\nsigning {count} images again with cosign directly:")
        print(f"  one cosign run per image, one after another   {serial:6.1f} s")
        print(f"  one run per cell, 4 cells at once (multibake) {parallel:6.1f} s   ({serial / parallel:.1f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
