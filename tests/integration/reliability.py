"""What the reliability tests share: a fast-tier project to release, a running release, and a monitor.

The monitor polls every public tag of a plan on the real registry (127.0.0.1:5000, behind any proxy)
while a release runs, and records every moment a tag broke the promise: a multi-arch tag pointing at
an index that lacks a planned platform, or a per-platform tag whose image is not the one its cell's
index lists for that platform. While a release moves a cell from one complete index to the next, its
per-platform tags follow one by one, so during that window a per-platform tag may still show the
previous release's image of its platform: that one is allowed, nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import run_cli
from tests.integration import registry

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = ROOT / "samples" / "offline"
UPSTREAM = "127.0.0.1:5000"
# outside a git checkout the release time is "now": a fixed one makes rebuilds reproducible
ENV = {"SOURCE_DATE_EPOCH": "1764547200"}


def fast_project(tmp_path: Path, retry: str, rev: str = "1") -> Path:
    """The fast sample tier copied into ``tmp_path`` (once), with ``retry:`` settings and a revision of the app.

    A new ``rev`` changes every app cell (a new release of the same tags); the RUN step takes a
    couple of seconds so that a test can interrupt a build while it runs.
    """
    project = tmp_path / "project"
    if not project.exists():
        shutil.copytree(OFFLINE, project)
        base = (project / "app" / "Dockerfile").read_text()
        (project / "app" / "Dockerfile.base").write_text(base)
        cfg = project / "platforms.yaml"
        cfg.write_text(cfg.read_text() + f"retry: {{{retry}}}\n")
    dockerfile = (project / "app" / "Dockerfile.base").read_text()
    (project / "app" / "Dockerfile").write_text(dockerfile + f'RUN sleep 2 && echo "{rev}" > /etc/app-rev\n')
    return project / "platforms.yaml"


def namespace(host: str, prefix: str) -> str:
    return f"{host}/{prefix}-{uuid.uuid4().hex[:8]}"


def multibake_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "multibake", *args]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, env=ENV)


def plan_of(cfg: Path, reg: str) -> dict[str, Any]:
    proc = run("plan", "--json", "-c", str(cfg), "--registry", reg)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def upstream(ref: str) -> str:
    """A reference as the real registry names it (the proxy's host:port replaced)."""
    host, _, rest = ref.partition("/")
    return f"{UPSTREAM}/{rest}" if host.startswith("127.0.0.1:") else ref


class Release:
    """``multibake build --push --json`` running in its own process group (as a CI job does), stderr read live."""

    def __init__(self, cfg: Path, reg: str, *extra: str) -> None:
        argv = multibake_argv("build", "--push", "--json", "--progress", "plain", "-c", str(cfg), "--registry", reg)
        self.proc = subprocess.Popen(
            [*argv, *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, **ENV},
        )
        self.err: list[str] = []
        self.out = ""
        self._readers = [
            threading.Thread(target=self._read_err, daemon=True),
            threading.Thread(target=self._read_out, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_err(self) -> None:
        for line in self.proc.stderr or []:
            self.err.append(line)

    def _read_out(self) -> None:
        self.out = self.proc.stdout.read() if self.proc.stdout else ""

    def wait_for(self, text: str, timeout: float = 600) -> None:
        """Until a line of stderr contains ``text`` (fails when the release ends or time runs out first)."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.err):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"never saw {text!r} (exit {self.proc.poll()}):\n{self.stderr()[-3000:]}")
            time.sleep(0.05)

    def signal_group(self, sig: signal.Signals) -> None:
        os.killpg(self.proc.pid, sig)

    def bake_pids(self) -> list[int]:
        """The ``docker buildx bake`` processes of this release (the buildx plugin and its docker CLI)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = stat.read_bytes().split(b"\0")
                group = os.getpgid(int(stat.parent.name))
            except (OSError, ValueError):
                continue
            if group == self.proc.pid and b"bake" in argv and any(a.endswith(b"docker-buildx") for a in argv[:1]):
                found.append(int(stat.parent.name))
        return found

    def finish(self, timeout: float = 900) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=30)
        return code

    def stderr(self) -> str:
        return "".join(self.err)

    def report(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self.out)
        except ValueError as exc:
            raise AssertionError(f"no JSON (exit {self.proc.returncode}):\n{self.stderr()[-4000:]}") from exc
        return doc


@dataclass
class Monitor:
    """Polls every public tag of ``plan`` on the real registry until stopped; keeps what it saw wrong."""

    plan: dict[str, Any]
    interval: float = 0.1
    problems: list[str] = field(default_factory=list)
    polls: int = 0
    missed: int = 0  # polls a failed read of the registry cut short (the monitor keeps watching)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    _before: dict[str, set[str]] = field(default_factory=dict)  # cell → its platform images before

    def __enter__(self) -> Monitor:
        for cell in self.plan["cells"]:
            held = registry.get(upstream(cell["tags"][0]))
            self._before[cell["target"]] = set(held.platforms().values()) if held else set()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for cell in self.plan["cells"]:
                    self._check(cell)
                self.polls += 1
            except OSError:  # the registry itself answered 5xx or dropped a read (it is busy): poll again
                self.missed += 1
            self._stop.wait(self.interval)

    def _check(self, cell: dict[str, Any]) -> None:
        indexes = {}
        for ref in cell["tags"]:
            held = registry.get(upstream(ref))
            if held is None:
                continue
            if not held.is_index or sorted(held.platforms()) != sorted(cell["platforms"]):
                self.problems.append(f"{ref} points at {held.media_type} with {sorted(held.platforms())}")
            indexes[ref] = held.platforms()
        for platform, refs in cell["platform_tags"].items():
            for ref in refs:
                held = registry.get(upstream(ref))
                # the index is read again after the per-platform tag: a tag written since is then seen
                index = registry.get(upstream(cell["tags"][0]))
                wanted = index.platforms().get(platform) if index else None
                if held is not None and held.digest != wanted and held.digest not in self._before[cell["target"]]:
                    self.problems.append(f"{ref} is {held.digest}, its index lists {wanted}")


def public_state(plan: dict[str, Any]) -> dict[str, str | None]:
    """Every public tag of ``plan`` → the digest it points at on the real registry (None: no such tag)."""
    out: dict[str, str | None] = {}
    for cell in plan["cells"]:
        for ref in [*cell["tags"], *(r for refs in cell["platform_tags"].values() for r in refs)]:
            held = registry.get(upstream(ref))
            out[ref] = held.digest if held else None
    return out
