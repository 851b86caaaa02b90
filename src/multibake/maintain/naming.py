"""Reading a family's tags back into matrix values: the tag templates run backwards. Pure.

Retention works on tags the current plan may no longer name (a value dropped from the matrix last
month): ``{node}-alpine{alpine}`` becomes a pattern that reads ``20-alpine3.19`` as
``node=20, alpine=3.19``, and a per-platform tag (``20-alpine3.19-armv7``, or ``arm32v7-…`` with
the prefix style) as the same values on one platform. A tag no template reads is not the family's,
and retention leaves it alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from multibake.compare.update import Version, version

Template = tuple[str | tuple[str], ...]  # literal text, or (axis,): the plan's compiled tag templates
# an axis value as a tag holds it: no dash (it separates values and platform names) unless the
# current matrix has such a value; a version where the matrix has versions only, so that a bare
# ``{node}`` template does not read ``latest`` as a Node.js version
_VALUE = r"[A-Za-z0-9_.]+"
_NUMBERED = r"[0-9][A-Za-z0-9_.]*"


@dataclass(frozen=True, kw_only=True, slots=True)
class Parsed:
    values: tuple[tuple[str, str], ...]  # axis → value, for the axes the tag names
    platform: str | None = None  # a per-platform tag's platform


@dataclass(frozen=True, kw_only=True, slots=True)
class Naming:
    """How one family names its tags; ``affixes``: platform → how a per-platform tag adds it."""

    templates: tuple[Template, ...]
    known: Mapping[str, Sequence[str]]  # axis → the values the current matrix has
    affixes: Mapping[str, str]  # platform → "-armv7" (suffix style) or "arm32v7-" (prefix style)

    def parse(self, tag: str) -> Parsed | None:
        """The matrix values (and platform) ``tag`` names, None when no template reads it."""
        for platform, affix in [(None, ""), *sorted(self.affixes.items())]:
            if affix.startswith("-"):
                base = tag.removesuffix(affix) if tag.endswith(affix) else None
            else:
                base = tag.removeprefix(affix) if affix and tag.startswith(affix) else tag if not affix else None
            if base is None:
                continue
            for template in self.templates:
                found = _pattern(template, self.known).fullmatch(base)
                if found:
                    values = tuple((axis, found.group(f"a{i}")) for i, axis in enumerate(_axes(template)))
                    return Parsed(values=values, platform=platform)
        return None


def _axes(template: Template) -> list[str]:
    return list(dict.fromkeys(p[0] for p in template if isinstance(p, tuple)))


def _pattern(template: Template, known: Mapping[str, Sequence[str]]) -> re.Pattern[str]:
    axes = _axes(template)
    out = []
    for part in template:
        if isinstance(part, str):
            out.append(re.escape(part))
            continue
        i = axes.index(part[0])
        if f"(?P<a{i}>" in "".join(out):
            out.append(f"(?P=a{i})")  # the same axis twice: the same value
            continue
        have = known.get(part[0], ())
        values = sorted((re.escape(v) for v in have if "-" in v), key=len, reverse=True)
        shape = _NUMBERED if have and all(v[:1].isdigit() for v in have) else _VALUE
        out.append(f"(?P<a{i}>{'|'.join([*values, shape])})")
    return re.compile("".join(out))


def version_order(values: Sequence[str]) -> list[str]:
    """``values`` oldest first: version numbers compared as numbers, others after them as text."""

    def sort_key(value: str) -> tuple[int, Version | tuple[()], str]:
        found = version(value)
        return (0, found, value) if found is not None else (1, (), value)

    return sorted(values, key=sort_key)
