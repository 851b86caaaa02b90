"""Benchmark: a release on two BuildKit hosts over mutual TLS beside the same release on one of them.

The hosts are those of ``scripts/buildkit-net.sh`` (network namespaces, buildkitd on TCP with mutual
TLS, a TLS registry at 10.215.0.1:5443), under a name of this benchmark's own: node ``amd64`` (its
BuildKit's own platforms: amd64 natively, arm under QEMU) and node ``arm`` (linux/arm64 and
linux/arm/v7, the stand-in for a native arm host). The sample is the fast tier
(``samples/offline``), copied to a temporary directory and pushed into a fresh namespace per side.

- ``two hosts``: ``builder:`` of both nodes; each platform is built on the node that declares it.
- ``one host``: ``builder:`` of node amd64 alone, declaring all three platforms (arm emulated).

Both sides start cold: the hosts are made again (empty BuildKit state, empty registry) before
each. On one 2-core machine the two nodes share the CPU, so the ratio is expected near 1 and is
printed as it is; on real hosts the arm side runs natively on its own CPU. Prints numbers, asserts
nothing; exits non-zero only when something crashes or a build fails.

Run: ``python benchmarks/remote_hosts.py`` as root, after ``scripts/setup-stack.sh --stack buildkit``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NET = ["bash", str(ROOT / "scripts" / "buildkit-net.sh")]
NAME = ["--name", "mbbench", "--subnet", "10.215.0"]


def _net(command: str) -> dict[str, str]:
    out = subprocess.run([*NET, command, *NAME], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _node(env: dict[str, str], node: str, platforms: str) -> str:
    files = f"cacert: '{env['CA']}', cert: '{env['CLIENT_CERT']}', key: '{env['CLIENT_KEY']}'"
    return (
        f"    - {{name: {node}, driver: remote, endpoint: '{env[f'NODE_{node}_ENDPOINT']}', "
        f"platforms: [{platforms}], servername: '{env[f'NODE_{node}_SERVERNAME']}', {files}}}\n"
    )


def _side(label: str, work: Path, two: bool) -> float:
    env = _net("up")
    try:
        config = work / "platforms.yaml"
        text = (ROOT / "samples" / "offline" / "platforms.yaml").read_text()
        namespace = f"{env['REGISTRY']}/bench-{uuid.uuid4().hex[:8]}"
        text = "\n".join(
            f"registry: {namespace}" if line.startswith("registry:") else line for line in text.splitlines()
        )
        builder = f"mbbench-{label.replace(' ', '-')}-{uuid.uuid4().hex[:4]}"
        text += f"\nbuilder:\n  name: {builder}\n  nodes:\n"
        if two:
            text += _node(env, "amd64", "linux/amd64") + _node(env, "arm", "linux/arm64, linux/arm/v7")
        else:
            text += _node(env, "amd64", "linux/amd64, linux/arm64, linux/arm/v7")
        config.write_text(text)
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "multibake", "build", "--push", "--json", "--progress", "quiet", "-c", str(config)],
            capture_output=True,
            text=True,
            env={**os.environ, "SSL_CERT_FILE": env["SSL_CERT_FILE"]},
            check=False,
        )
        took = time.perf_counter() - started
        subprocess.run(["docker", "buildx", "rm", builder], capture_output=True, check=False)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-3000:])
            raise SystemExit(f"{label}: multibake exited {proc.returncode}")
        report = json.loads(proc.stdout)
        print(f"  {label:9} {took:7.1f} s  ({report['executed_run_steps']} RUN steps executed)")
        return took
    finally:
        subprocess.run([*NET, "down", *NAME], capture_output=True, check=False)


def main() -> int:
    if os.geteuid() != 0:
        print("remote hosts: skipped (network namespaces need root)")
        return 0
    print("release of samples/offline over mutual TLS (cold each side; both nodes share this machine's CPU)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "offline"
        shutil.copytree(ROOT / "samples" / "offline", work)
        one = _side("one host", work, two=False)
        two = _side("two hosts", work, two=True)
    print(f"  two hosts / one host: {two / one:.2f} x the time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
