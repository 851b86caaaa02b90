"""The paths rule: build contexts and Dockerfiles are files of the project, checked before anything runs.

A local context, and the Dockerfile in it, must resolve (symlinks followed) inside the project: the git
work tree that holds platforms.yaml, or its directory outside git. An absolute path, a ``..`` or a
symlink leading elsewhere is refused, so a config cannot send a build (or its cache) to files outside
the checkout it came with. Remote contexts (git URLs, ``target:`` and ``docker-image://`` references)
are left to buildx.

The same rule gives bake its file-system entitlements: buildx >= 0.20 refuses to read paths outside
the directory it runs in unless ``--allow fs.read=PATH`` names them, so multibake names exactly the
context directories (and local cache folders) that lie outside that directory, and nothing more.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from multibake.errors import Location, config_error

if TYPE_CHECKING:
    from multibake.config.load import Loaded
    from multibake.plan.model import Plan

RULE = "contexts and Dockerfiles must resolve inside the git work tree holding the config (else its directory)"


def project_root(config_dir: Path) -> Path:
    """The git work tree holding ``config_dir`` (a ``.git`` directory or file), else ``config_dir``."""
    here = config_dir.resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    return here


def is_remote(context: str) -> bool:
    return "://" in context or context.startswith(("target:", "git@"))


class SymlinkLoop(Exception):
    """A path whose symbolic links lead back to themselves: it names no file."""


def resolved(path: Path) -> Path:
    """``path.resolve()``; a symlink loop raises SymlinkLoop (Python 3.11 says RuntimeError, 3.13 OSError)."""
    try:
        return path.resolve()
    except RuntimeError as exc:
        raise SymlinkLoop(str(path)) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SymlinkLoop(str(path)) from exc
        raise


def _inside(path: Path, root: Path) -> bool:
    try:
        resolved(path).relative_to(root)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class BuildFiles:
    """What one family builds from: its build context and its Dockerfile, as the plan resolved them."""

    family: str
    context: str
    dockerfile: str


def check_paths(loaded: Loaded, items: list[BuildFiles]) -> None:
    """Refuse a missing or escaping build context or Dockerfile."""
    base, root = loaded.root.resolve(), project_root(loaded.root)
    seen: set[tuple[str, str]] = set()
    for item in items:
        family, context, dockerfile = item.family, item.context, item.dockerfile
        if (context, dockerfile) in seen or is_remote(context):
            continue
        seen.add((context, dockerfile))
        ctx_loc = loaded.loc(("images", family, "context"))
        file_loc = loaded.loc(("images", family, "dockerfile"))
        _check_one(base / context, dockerfile, root=root, ctx_loc=ctx_loc, file_loc=file_loc, context=context)


def _check_one(ctx: Path, dockerfile: str, *, root: Path, ctx_loc: Location, file_loc: Location, context: str) -> None:
    for path, loc, what in ((ctx, ctx_loc, f"build context {context!r}"), (ctx / dockerfile, file_loc, "Dockerfile")):
        try:
            resolved(path)
        except SymlinkLoop:
            raise config_error(loc, f"{what} is a symbolic link loop ({path.name} leads back to itself)") from None
    if not _inside(ctx, root):
        raise config_error(ctx_loc, f"build context {context!r} is outside {root.name or '/'}/", RULE)
    if not ctx.is_dir():
        raise config_error(ctx_loc, f"build context {context!r} is not a directory")
    if not _inside(ctx / dockerfile, root):
        raise config_error(file_loc, f"Dockerfile {dockerfile!r} is outside {root.name or '/'}/", RULE)
    if not (ctx / dockerfile).is_file():
        raise config_error(file_loc, f"no Dockerfile at {context}/{dockerfile}")


def check_files(loaded: Loaded, plan: Plan) -> None:
    """``validate``'s checks on disk for every cell: contexts and Dockerfiles exist, inside the project."""
    check_paths(loaded, [BuildFiles(c.family, c.context, c.dockerfile) for c in plan.cells])


def _or_itself(path: Path) -> Path:
    try:
        return resolved(path)
    except SymlinkLoop:
        return path  # refused by check_paths; never a reason to stop here


def entitlements(loaded: Loaded, plan: Plan) -> tuple[str, ...]:
    """The ``--allow`` entitlements bake needs for this plan's paths outside ``loaded.root``.

    Contexts, local cache folders and secret files: bake asks for each of them when it lies elsewhere.
    """
    root = loaded.root.resolve()
    reads: set[Path] = set()
    writes: set[Path] = set()
    for cell in plan.cells:
        if not is_remote(cell.context):
            reads.add(_or_itself(root / cell.context))
        for entry in (*cell.cache_from, *cell.cache_to, *cell.secrets):
            fields = dict(part.partition("=")[::2] for part in entry.split(","))
            if fields.get("type") == "local" or ("id" in fields and "src" in fields):  # a local cache, a secret file
                (reads if "src" in fields else writes).add(_or_itself(root / (fields.get("src") or fields["dest"])))
    return tuple(
        sorted(
            f"fs.{kind}={path}"
            for kind, paths in (("read", reads), ("write", writes))
            for path in paths
            if not _inside(path, root)
        )
    )
