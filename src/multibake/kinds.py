"""The small vocabularies of a release: build modes, cell statuses, how a release splits into shards.

Standard library only, so the CLI can declare its options without importing the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Mode(StrEnum):
    """Where bake sends what it built."""

    CACHE = "cache"  # build every platform into the build cache only (a CI check)
    PUSH = "push"
    LOAD = "load"
    OUTPUT = "output"


class Status(StrEnum):
    """What happened to one cell; the values are those of ``build --json``."""

    PENDING = "pending"  # not decided yet (never in a finished report)
    BUILT = "built"
    PUBLISHED = "published"  # pushed, public tags pointed at it, verified
    UNCHANGED = "unchanged"  # pushed, but its public tags already held the same images: none moved
    STAGED = "staged"  # pushed to its staging tag only; public tags left alone
    UP_TO_DATE = "up-to-date"  # --skip-existing: its published image carries its build id
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def ok(self) -> bool:
        return self in (Status.BUILT, Status.PUBLISHED, Status.UNCHANGED, Status.UP_TO_DATE)


class Step(StrEnum):
    """The steps of a release whose durations ``build`` reports, in pipeline order."""

    START = "start"  # the interpreter and the command line, up to the build command
    PLAN = "plan"  # load, plan, build ids, --skip-existing reads, the bake file
    PREFLIGHT = "preflight"  # base images, the builder (and its nodes), the registry login
    BAKE = "bake"  # buildx bake runs, retries included
    PROMOTE = "promote"  # staged indexes read back, public and per-platform tags written (or a shard staged)
    VERIFY = "verify"  # every public tag read back, the release journal


class Progress(StrEnum):
    """How a build shows its progress (display.py)."""

    AUTO = "auto"  # tty on a terminal, plain otherwise
    PLAIN = "plain"  # buildx's lines verbatim, and now and then what is still running
    TTY = "tty"  # a live table of cells and platforms; errors in full
    QUIET = "quiet"  # multibake's own lines and buildx's errors only


class Split(StrEnum):
    """How a release is divided across CI runners; also the kind of one shard."""

    PLATFORM = "platform"
    FAMILY = "family"
    CELL = "cell"


class Provenance(StrEnum):
    """The provenance attestation BuildKit attaches to each pushed image (``attest: provenance:``)."""

    MIN = "min"  # build timestamps, the frontend, its source and platform, base images
    MAX = "max"  # min plus the whole build definition: every build arg, every material, the LLB
    OFF = "off"  # none: the index holds the platform images only


class Placement(StrEnum):
    """Where a release's attestation manifests go (``attest: placement:``)."""

    INDEX = "index"  # BuildKit's way: unknown/unknown entries of the multi-arch index
    REFERRERS = "referrers"  # OCI referrers of the platform image they describe: the index lists platforms only


class Change(StrEnum):
    """What became of a tag, or of one platform image of it, between two sides of ``multibake diff``."""

    NEW = "new"
    REMOVED = "removed"
    CHANGED = "changed"
    UNCHANGED = "unchanged"


Echo = Callable[[str], None]  # where a line of output goes (stderr, a list in tests)


@dataclass(frozen=True, kw_only=True, slots=True)
class PlatformSize:
    """One platform image as the registry serves it: compressed bytes (the sum of its layers) and layers."""

    platform: str
    compressed: int
    layers: int


class Signature(StrEnum):
    """The signature state of one image a tag serves (``verify --json``)."""

    SIGNED = "signed"  # a signature from the configured key verifies
    MISSING = "missing"  # no signature at all
    INVALID = "invalid"  # a signature that does not verify with the key (or could not be read)
    UNSIGNED = "unsigned"  # its family is not signed: nothing to check


class NodeLoss(StrEnum):
    """What a release does when a node does not answer (at preflight, or stops during the build)."""

    FAIL = "fail"  # its cells fail (exit 1; preflight: exit 2), naming the node
    EMULATE = "emulate"  # its platforms go to a remaining node, built under emulation
