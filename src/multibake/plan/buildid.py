"""Content-addressed build ids: what a cell's image is made of, hashed, for ``build --skip-existing``.

A cell's id covers its Dockerfile, every file of its build context (minus .dockerignore'd ones),
its build args (per-platform ones too), its stage and platforms, and its parent's id, so changing
one Dockerfile changes the id of that cell and of its children, and nothing else. The id is
recorded in the image as a label; a cell whose published image carries its id is not rebuilt.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from pathlib import Path
from typing import Any

from multibake.errors import UsageError
from multibake.plan.model import Cell, Plan

LABEL = "org.multibake.build-id"
_CHUNK = 1 << 20


def _ignored(root: Path) -> list[str]:
    ignore = root / ".dockerignore"
    if not ignore.is_file():
        return []
    lines = [ln.strip() for ln in ignore.read_text(encoding="utf-8", errors="replace").splitlines()]
    return [ln.rstrip("/") for ln in lines if ln and not ln.startswith(("#", "!"))]


def _context_digest(root: Path, dockerfile: Path) -> str:
    h = hashlib.sha256()
    patterns = _ignored(root)
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            files.append(Path(dirpath) / name)
    for path in [*files, dockerfile]:
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else f"//{path.name}"
        if any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p + "/*") for p in patterns):
            continue
        try:
            _hash_file(h, rel, path)
        except OSError as exc:
            raise UsageError(f"build context {root.name}: cannot read {rel}: {exc.strerror}") from None
    return h.hexdigest()


def _hash_file(h: Any, rel: str, path: Path) -> None:
    if path.is_symlink() and not path.exists():  # a dangling link or a loop: BuildKit sends it as a link
        h.update(rel.encode() + b"\0link\0" + str(path.readlink()).encode() + b"\0")
        return
    h.update(rel.encode() + b"\0" + oct(path.stat().st_mode & 0o111).encode() + b"\0")
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    h.update(b"\0")


def compute(plan: Plan, root: Path) -> dict[str, str]:
    """target → build id, for every cell of ``plan`` (parents before children, as planned)."""
    ids: dict[str, str] = {}
    contexts: dict[tuple[str, str], str] = {}
    for cell in plan.cells:
        key = (cell.context, cell.dockerfile)
        if key not in contexts:
            ctx = root / cell.context
            contexts[key] = _context_digest(ctx, ctx / cell.dockerfile)
        ids[cell.target] = _cell_id(cell, contexts[key], ids.get(cell.parent or "", ""))
    return ids


def _cell_id(cell: Cell, context: str, parent: str) -> str:
    h = hashlib.sha256()
    parts = [
        context,
        parent,
        cell.dockerfile,
        cell.stage or "",
        ",".join(cell.platforms),
        repr(cell.args),
        repr([(piece.platform, piece.args) for piece in cell.split]),
    ]
    for part in parts:
        h.update(part.encode() + b"\0")
    return "sha256:" + h.hexdigest()
