"""Facts about the checkout a release is built from: creation time, revision, source URL.

Resolved once per run (and written into a shard's plan for distributed releases) so every image
agrees. ``created`` honours SOURCE_DATE_EPOCH, else the commit time, so the same checkout renders
the same bake file.
"""

from __future__ import annotations

import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from multibake.errors import UsageError
from multibake.plan.model import Meta

_CREDENTIALS = re.compile(r"(?<=://)[^/@]+@")


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def public_url(url: str) -> str:
    """A remote URL without user:password@ (tokens in remotes must never reach a label)."""
    url = _CREDENTIALS.sub("", url)
    if url.startswith("git@") and ":" in url:  # git@host:org/repo.git → https://host/org/repo
        host, _, path = url[4:].partition(":")
        url = f"https://{host}/{path}"
    return url.removesuffix(".git")


def _rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve(root: Path, config: Path | None = None) -> Meta:
    """The checkout's facts; ``config`` (platforms.yaml) dates a release built outside git."""
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    if sde is not None:
        try:
            created = _rfc3339(int(sde))
        except ValueError:
            raise UsageError(f"SOURCE_DATE_EPOCH={sde!r} is not a number of seconds") from None
    else:
        commit_time = _git(root, "log", "-1", "--format=%ct")
        created = _rfc3339(int(commit_time) if commit_time else _untracked_time(config))
    revision = _git(root, "rev-parse", "HEAD")
    remote = _git(root, "remote", "get-url", "origin")
    return Meta(created=created, revision=revision, source=public_url(remote) if remote else None)


def _untracked_time(config: Path | None) -> int:
    """When a checkout outside git last changed: platforms.yaml's modification time, else now.

    Not the time of the run: every image's creation label would change with it, so an unchanged
    release from a source archive or a copied tree would move every tag.
    """
    try:
        return int(config.stat().st_mtime) if config is not None else int(datetime.now(UTC).timestamp())
    except OSError:
        return int(datetime.now(UTC).timestamp())
