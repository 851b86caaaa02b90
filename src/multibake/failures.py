"""Reading buildx output: which step belongs to which target, what failed, and whether to retry.

Pure functions over text, so the rules are unit-tested without docker. Retries are narrow: only a
registry operation failing for a reason that goes away by itself (5xx, 429, resets, timeouts,
temporary DNS failures, "blob upload unknown") is transient. A failed RUN step, 401/403, a parse
error or a missing base image fail at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from multibake.refs import untagged

_STEP = re.compile(r"^#(\d+) \[([^\]]*)\] (.*)$")
_STEP_ERROR = re.compile(r"^#(\d+) ERROR: (.*)$")
_STEP_CACHED = re.compile(r"^#(\d+) CACHED\s*$")
_STEP_DONE = re.compile(r"^#(\d+) DONE ")
# BuildKit's own push of a target's image: once this line says done, the whole image is in the registry.
_PUSHED = re.compile(r"^#(\d+) pushing manifest for (\S+)@(sha256:[0-9a-f]{64})\b.*\bdone\s*$")

# Checked before the transient markers: an error carrying both is not worth retrying.
_PERMANENT = re.compile(
    r"\b401\b|\b403\b|unauthorized|denied|forbidden|authentication required"
    r"|did not complete successfully|dockerfile parse error|failed to read dockerfile"
    r"|no such host|not found|manifest unknown|invalid reference format|unknown instruction",
    re.IGNORECASE,
)
_TRANSIENT = re.compile(
    r"\b50[0-4]\b|\b429\b|too many requests|toomanyrequests|internal server error|bad gateway"
    r"|service unavailable|gateway timeout|connection reset|broken pipe|unexpected eof|\beof\b"
    r"|i/o timeout|tls handshake timeout|context deadline exceeded|client\.timeout|timed out"
    r"|blob upload unknown|blob upload invalid|temporary failure in name resolution|server misbehaving"
    r"|connection refused"
    # containerd's error classes, which BuildKit >= 0.2x prints instead of the HTTP status (503, 429)
    r"|\bunavailable:|resource exhausted",
    re.IGNORECASE,
)


# an ERROR line that does not stop the build: a cache that does not exist yet
IGNORED_ERROR = re.compile(r"failed to configure registry cache importer|importing cache manifest from", re.IGNORECASE)


# BuildKit (containerd snapshotter) keeps a cache record whose snapshot a cancelled build removed; every
# later build of that step fails the same way until the step is built without the cache.
_STALE_CACHE = re.compile(r"failed to commit .* during finalize|snapshot \S+ does not exist", re.IGNORECASE)


class Kind(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    STALE_CACHE = "stale-cache"  # rebuild without BuildKit's cache


@dataclass(frozen=True, slots=True)
class Failure:
    kind: Kind
    reason: str  # the line that decided it
    targets: tuple[str, ...]  # targets whose steps failed, when the output tells


def classify(output: str, targets: Iterable[str] = ()) -> Failure:
    """Classify a failed bake from its output (stderr of ``buildx bake --progress plain``)."""
    lines = output.splitlines()
    # a cache that does not exist yet is reported as an ERROR line but the build goes on
    errors = [
        ln for ln in lines if ("ERROR" in ln or ln.startswith(("error:", "failed to"))) and not IGNORED_ERROR.search(ln)
    ]
    decisive = errors or lines[-5:]
    steps = Steps(set(targets))
    for ln in lines:
        steps.feed(ln)
    failed = tuple(sorted(steps.failed_targets()))
    for ln in decisive:
        if _STALE_CACHE.search(ln):
            return Failure(Kind.STALE_CACHE, ln.strip(), failed)
    for ln in decisive:
        if _PERMANENT.search(ln):
            return Failure(Kind.PERMANENT, ln.strip(), failed)
    for ln in decisive:
        if _TRANSIENT.search(ln):
            return Failure(Kind.TRANSIENT, ln.strip(), failed)
    return Failure(Kind.PERMANENT, (decisive[-1] if decisive else "buildx failed without output").strip(), failed)


@dataclass
class Steps:
    """Follows BuildKit's plain progress: step ids → targets, RUN steps executed vs cached."""

    known_targets: set[str]
    target_of: dict[str, str] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)  # step id → header, for RUN steps
    cached: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)
    lines_of: dict[str, list[str]] = field(default_factory=dict)  # target → its step lines
    push_lines: dict[str, tuple[str, str]] = field(default_factory=dict)  # step id → (target, pinned image)

    def feed(self, line: str) -> str | None:
        """Take one progress line; returns the target it belongs to, when known."""
        line = line.rstrip("\n")
        if m := _STEP.match(line):
            step, inside, op = m.groups()
            target = next((t for t in inside.split() if t in self.known_targets), None)
            if target:
                self.target_of[step] = target
            if op.startswith("RUN "):
                self.runs[step] = line
        elif m := _STEP_CACHED.match(line):
            self.cached.add(m.group(1))
        elif m := _STEP_DONE.match(line):
            self.done.add(m.group(1))
        elif (m := _STEP_ERROR.match(line)) and not IGNORED_ERROR.search(line):
            self.errors[m.group(1)] = m.group(2)
        elif (m := _PUSHED.match(line)) and m.group(1) in self.target_of:
            self.push_lines[m.group(1)] = (self.target_of[m.group(1)], f"{untagged(m.group(2))}@{m.group(3)}")
        step_id = line[1:].split(" ", 1)[0] if line.startswith("#") else ""
        target = self.target_of.get(step_id)
        if target:
            self.lines_of.setdefault(target, []).append(line)
        return target

    def executed_runs(self) -> list[str]:
        """RUN steps BuildKit actually executed (not answered from cache)."""
        return [
            hdr for step, hdr in self.runs.items() if step not in self.cached and step in self.done | set(self.errors)
        ]

    @property
    def pushed(self) -> dict[str, str]:
        """target → the image BuildKit pushed for it, pinned by digest.

        Only from an export step that ended DONE: the push line says "done" even when the push
        failed (its ERROR line comes after it).
        """
        return {t: ref for step, (t, ref) in self.push_lines.items() if step in self.done and step not in self.errors}

    def failed_targets(self) -> set[str]:
        return {self.target_of[s] for s in self.errors if s in self.target_of}

    def tail(self, target: str, n: int = 15) -> list[str]:
        return self.lines_of.get(target, [])[-n:]


_LOGFMT_MSG = re.compile(r'level=\w+ msg="((?:[^"\\]|\\.)*)"')


def first_line(text: str | None) -> str:
    """The line of a tool's output that says what went wrong: an error or panic line, else the last."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return "no output"
    said = next((ln for ln in reversed(lines) if ln.startswith(("ERROR", "error", "panic:", "Error"))), None)
    said = said or next((ln for ln in reversed(lines) if "level=fatal" in ln or "level=error" in ln), lines[-1])
    m = _LOGFMT_MSG.search(said)
    return m.group(1).replace('\\"', '"') if m else said
