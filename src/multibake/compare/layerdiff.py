"""What differs between two image configs and two layer tars: the answer diffoci gives, in process.

Pure functions over bytes: an image config (JSON) and a layer blob (a tar, gzip-compressed or not).
A file is described by its path, kind, size, mode, owner, mtime and (regular files) the sha256 of its
content; link targets count as content.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from typing import Any

# The config fields worth naming one by one; anything else that differs is named by its key.
_CONFIG_FIELDS = ("created", "author", "architecture", "os", "variant")
_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    """One file of a layer."""

    kind: str
    size: int
    mode: str  # octal permission bits
    owner: str  # uid:gid
    mtime: int
    content: str  # sha256 of a regular file's bytes, a link's target, else ""

    def fields(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "size": self.size,
            "mode": self.mode,
            "owner": self.owner,
            "mtime": self.mtime,
            "content": self.content,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class FileDiff:
    path: str
    change: str  # "added" (rebuilt only), "removed" (published only) or "changed"
    fields: tuple[tuple[str, str, str], ...] = ()  # (field, published, rebuilt) of a changed file


@dataclass(frozen=True, kw_only=True, slots=True)
class FieldDiff:
    field: str
    published: str
    rebuilt: str


def decompress(blob: bytes) -> bytes:
    """A layer's tar: gzip (BuildKit's default) is undone, an uncompressed tar is returned as is."""
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        raise ValueError("a zstd-compressed layer: reproduce reads gzip and uncompressed layers only")
    return blob


def entries(blob: bytes) -> dict[str, Entry]:
    """path → its entry, for every member of a layer blob."""
    out: dict[str, Entry] = {}
    with tarfile.open(fileobj=io.BytesIO(decompress(blob)), mode="r:") as tar:
        for member in tar:
            content = ""
            if member.isfile():
                handle = tar.extractfile(member)
                content = hashlib.sha256(handle.read() if handle else b"").hexdigest()
            elif member.issym() or member.islnk():
                content = member.linkname
            out[member.name.removeprefix("./")] = Entry(
                kind=_KINDS.get(member.type, member.type.decode(errors="replace")),
                size=member.size,
                mode=oct(member.mode & 0o7777),
                owner=f"{member.uid}:{member.gid}",
                mtime=int(member.mtime),
                content=content,
            )
    return out


def files(published: bytes, rebuilt: bytes) -> list[FileDiff]:
    """The files that differ between two layer blobs, by path."""
    old, new = entries(published), entries(rebuilt)
    out = []
    for path in sorted(old.keys() | new.keys()):
        was, now = old.get(path), new.get(path)
        if was is None:
            out.append(FileDiff(path=path, change="added"))
        elif now is None:
            out.append(FileDiff(path=path, change="removed"))
        elif was != now:
            a, b = was.fields(), now.fields()
            differ = tuple((k, str(a[k]), str(b[k])) for k in a if a[k] != b[k])
            out.append(FileDiff(path=path, change="changed", fields=differ))
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 200 else text[:197] + "..."


def config(published: dict[str, Any], rebuilt: dict[str, Any]) -> list[FieldDiff]:
    """Config fields that differ: created, history, the runtime config's keys (Env, Labels…), rootfs."""
    out = []
    for key in _CONFIG_FIELDS:
        if published.get(key) != rebuilt.get(key):
            out.append(FieldDiff(field=key, published=_short(published.get(key)), rebuilt=_short(rebuilt.get(key))))
    runtime_a, runtime_b = published.get("config") or {}, rebuilt.get("config") or {}
    for key in sorted(runtime_a.keys() | runtime_b.keys()):
        if runtime_a.get(key) != runtime_b.get(key):
            out.append(
                FieldDiff(
                    field=f"config.{key}", published=_short(runtime_a.get(key)), rebuilt=_short(runtime_b.get(key))
                )
            )
    history_a, history_b = published.get("history") or [], rebuilt.get("history") or []
    for i in range(max(len(history_a), len(history_b))):
        a = history_a[i] if i < len(history_a) else None
        b = history_b[i] if i < len(history_b) else None
        if a != b:
            out.append(FieldDiff(field=f"history[{i}]", published=_short(a), rebuilt=_short(b)))
    if (published.get("rootfs") or {}) != (rebuilt.get("rootfs") or {}):
        out.append(FieldDiff(field="rootfs.diff_ids", published="(see layers)", rebuilt="(see layers)"))
    return out
