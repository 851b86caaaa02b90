"""Templates: ``{axis}`` replaced by a cell's value, ``{{`` and ``}}`` literal braces.

Compiled once per family and rendered once per cell. A lone ``{`` or ``}`` (``"{node"``, ``"node}"``)
is refused like an unknown axis: it is almost always a typo, and silently keeping it as text would
put a brace into a tag or a build arg.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from multibake.config.load import Loaded
from multibake.config.yamlpos import KeyPath
from multibake.errors import config_error, did_you_mean

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")

Template = tuple[str | tuple[str], ...]  # literal text, or (axis,) to substitute


def compile_template(text: str, axes: Sequence[str], loaded: Loaded, path: KeyPath) -> Template:
    """``text`` split into literals and axis references; an unknown axis or a lone brace is an error."""
    parts: list[str | tuple[str]] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        parts.append(text[pos : m.start()])
        token = m.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif token in ("{", "}"):
            raise config_error(
                loaded.loc(path),
                f"unbalanced {token!r} at character {m.start() + 1} of {text[:80]!r}",
                "write {axis} to use an axis value, {{ or }} for a literal brace",
            )
        else:
            parts.append((_axis(m.group(1).strip(), text, axes, loaded, path),))
        pos = m.end()
    parts.append(text[pos:])
    return tuple(p for p in parts if p != "")


def _axis(name: str, text: str, axes: Sequence[str], loaded: Loaded, path: KeyPath) -> str:
    if name not in axes:
        known = ", ".join(axes) if axes else "none (the family has no matrix)"
        raise config_error(
            loaded.loc(path), f"unknown axis {{{name}}} in {text[:80]!r}; axes: {known}", did_you_mean(name, axes)
        )
    return name


def render(template: Template, values: dict[str, str]) -> str:
    return "".join(p if isinstance(p, str) else values[p[0]] for p in template)
