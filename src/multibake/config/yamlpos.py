"""YAML with positions, bounded: platforms.yaml text → plain data plus where every key and value was written.

Built from the parser's events in one loop (libyaml's parser when PyYAML has it, else PyYAML's own), so
depth, size and alias expansion are counted as the data is made and hostile input is refused early:
nesting deeper than ``MAX_DEPTH``, a value longer than ``MAX_SCALAR`` characters, aliases expanding to
more than ``MAX_ALIAS_VALUES`` values ("billion laughs"), recursive aliases, merge keys and any explicit
tag other than YAML's own ``!!str``/``!!map``/``!!seq`` (``!foo``, ``!!python/object``). Scalars keep
the text exactly as written: an unquoted ``3.20`` stays "3.20".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from multibake.errors import ConfigError, Location, config_error

MAX_DEPTH = 64
MAX_SCALAR = 65_536
MAX_ALIAS_VALUES = 100_000

# key path (tuple of str keys and int indexes) → (line, column), both 1-based
KeyPath = tuple[str | int, ...]
Positions = dict[KeyPath, tuple[int, int]]

_PARSER: Any
try:  # libyaml's parser is about ten times faster; events and marks are the same
    from yaml.cyaml import CParser as _PARSER  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _PARSER = yaml.SafeLoader
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_STD = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {
    yaml.ScalarEvent: (None, "!", _STD + "str"),
    yaml.MappingStartEvent: (None, _STD + "map"),
    yaml.SequenceStartEvent: (None, _STD + "seq"),
}


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(slots=True)
class _Frame:
    container: dict[str, Any] | list[Any]
    path: KeyPath
    key: str | None = None  # a mapping's key waiting for its value


@dataclass(slots=True)
class _Recorder:
    anchor: str
    depth: int
    events: list[Any] = field(default_factory=list)


class _Builder:
    """Turns parser events into data; records anchored nodes and replays them for aliases."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.positions: Positions = {}
        self.keys: Positions = {}
        self.stack: list[_Frame] = []
        self.root: Any = None
        self.done = False
        self.anchors: dict[str, list[Any]] = {}
        self.recording: list[_Recorder] = []
        self.replayed = 0
        self.alias_at: tuple[Any, KeyPath] = (None, ())  # the alias being expanded, for errors

    def error(self, mark: Any, path: KeyPath, message: str) -> ConfigError:
        shown = format_path(path[:8]) + "…" if len(path) > 8 else format_path(path)  # one line, even 64 deep
        return config_error(Location(self.file, mark.line + 1, mark.column + 1, shown), message)

    def feed(self, ev: Any, replay: bool = False) -> None:
        if isinstance(ev, yaml.AliasEvent):
            self.alias(ev, replay)
            return
        if not replay:
            for rec in self.recording:
                rec.events.append(ev)
            anchor = getattr(ev, "anchor", None)
            if anchor is not None:
                if isinstance(ev, yaml.ScalarEvent):
                    self.anchors[anchor] = [ev]
                else:
                    self.recording.append(_Recorder(anchor, len(self.stack), [ev]))
        else:
            self.replayed += 1
            if self.replayed > MAX_ALIAS_VALUES:
                raise self.error(
                    *self.alias_at,
                    f"aliases expand to more than {MAX_ALIAS_VALUES:,} values (an alias bomb?)",
                )
        if isinstance(ev, yaml.CollectionEndEvent):
            self.stack.pop()
            while not replay and self.recording and self.recording[-1].depth == len(self.stack):
                rec = self.recording.pop()
                self.anchors[rec.anchor] = rec.events
            return
        self.value(ev)

    def alias(self, ev: Any, replay: bool) -> None:
        if not replay:
            for rec in self.recording:
                rec.events.append(ev)
            self.alias_at = (ev.start_mark, self.here())
        name = ev.anchor
        if any(rec.anchor == name for rec in self.recording):
            raise self.error(ev.start_mark, self.here(), f"recursive alias *{name[:40]} refers to itself")
        if name not in self.anchors:
            raise self.error(ev.start_mark, self.here(), f"invalid YAML: found undefined alias *{name[:40]}")
        for recorded in self.anchors[name]:
            self.feed(recorded, replay=True)

    def here(self) -> KeyPath:
        """The key path the next value gets."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.container, list):
            return (*top.path, len(top.container))
        return (*top.path, top.key) if top.key is not None else top.path

    def value(self, ev: Any) -> None:
        mark = ev.start_mark
        top = self.stack[-1] if self.stack else None
        if top is not None and isinstance(top.container, dict) and top.key is None:
            self.key(top, ev)
            return
        path = self.here()
        if self.done and top is None:
            raise self.error(mark, (), "invalid YAML: expected a single document in the stream")
        tag: str | None = getattr(ev, "tag", None)
        if tag is not None and tag not in _ALLOWED_TAGS[type(ev)]:
            raise self.error(mark, path, f"unknown YAML tag {tag[:60]!r}: multibake reads plain values; remove the tag")
        data: Any
        if isinstance(ev, yaml.ScalarEvent):
            if len(ev.value) > MAX_SCALAR:
                raise self.error(mark, path, f"the value has {len(ev.value):,} characters, more than {MAX_SCALAR:,}")
            plain = tag is None and ev.implicit[0]
            data = None if plain and ev.value in _NULLS else ev.value
        else:
            if len(self.stack) >= MAX_DEPTH:
                raise self.error(mark, path, f"nesting deeper than {MAX_DEPTH} levels")
            data = {} if isinstance(ev, yaml.MappingStartEvent) else []
        self.positions[path] = (mark.line + 1, mark.column + 1)
        if top is None:
            self.root, self.done = data, True
        elif isinstance(top.container, list):
            top.container.append(data)
        else:
            top.container[top.key] = data  # type: ignore[index]
            top.key = None
        if not isinstance(ev, yaml.ScalarEvent):
            self.stack.append(_Frame(data, path))

    def key(self, top: _Frame, ev: Any) -> None:
        mark = ev.start_mark
        if not isinstance(ev, yaml.ScalarEvent) or ev.tag not in _ALLOWED_TAGS[yaml.ScalarEvent]:
            raise self.error(mark, top.path, "mapping keys must be plain strings")
        key = ev.value
        if len(key) > MAX_SCALAR:
            raise self.error(mark, top.path, f"a key has {len(key):,} characters, more than {MAX_SCALAR:,}")
        assert isinstance(top.container, dict)
        if key == "<<":
            raise self.error(mark, top.path, "YAML merge keys (<<) are not supported; write the keys out")
        if key in top.container:
            raise self.error(mark, (*top.path, key), f"duplicate key {key[:80]!r}")
        self.keys[(*top.path, key)] = (mark.line + 1, mark.column + 1)
        top.key = key


_SKIP = (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentStartEvent, yaml.DocumentEndEvent)


_BRACKETS = re.compile(r"[\[\]{}]")
_FLOW_CHARS = re.compile(r"[\[\]{}\"'#\n]")


def _flow_depth(text: str) -> tuple[int, int, int]:
    """The deepest ``[``/``{`` nesting outside quotes and comments, and where it first passes MAX_DEPTH.

    A rough scan (it does not parse): enough to refuse a deeply nested file before any parser,
    whose cost grows with the depth, sees it. Only the characters that matter are visited.
    """
    depth = deepest = 0
    line, line_start, where = 1, 0, (0, 0)
    quote = ""
    comment = False
    for m in _FLOW_CHARS.finditer(text):
        ch = m.group()
        if ch == "\n":
            line, line_start, comment = line + 1, m.end(), False
        elif comment or (quote and ch != quote):
            continue
        elif ch in "\"'":
            quote = "" if quote else ch  # inside quotes only the closing quote gets here
        elif ch == "#":
            comment = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if depth == MAX_DEPTH + 1 and where == (0, 0):
                where = (line, m.start() - line_start + 1)
        else:
            depth = max(depth - 1, 0)
    return deepest, *where


def _maybe_deep(text: str) -> bool:
    """Whether the text could nest deeply (an upper bound: quotes and comments are not told apart)."""
    depth = 0
    for m in _BRACKETS.finditer(text):
        depth = depth + 1 if m.group() in "[{" else max(depth - 1, 0)
        if depth > 4 * MAX_DEPTH:
            return True
    # block style: each level is at least one more column of indentation or a `- ` indicator
    return any(len(raw) - len(raw.lstrip(" -?:")) > 4 * MAX_DEPTH for raw in text.splitlines())


def parse_yaml(text: str, file: str) -> tuple[Any, Positions, Positions]:
    """The data, the positions of its values and the positions of its keys."""
    deepest, line, col = _flow_depth(text)
    if deepest > MAX_DEPTH:
        raise config_error(Location(file, line, col, ""), f"nesting deeper than {MAX_DEPTH} levels")
    builder = _Builder(file)
    try:
        _run(_PARSER, text, builder.feed)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, text, file) from None
    except yaml.YAMLError as exc:
        raise config_error(Location(file, 0, 0, ""), f"invalid YAML: {exc}") from None
    if not builder.done:
        raise config_error(Location(file, 1, 1, ""), "the file is empty")
    return builder.root, builder.positions, builder.keys


def _run(parser_class: Any, text: str, feed: Any) -> None:
    parser = parser_class(text)
    try:
        while (ev := parser.get_event()) is not None:
            if not isinstance(ev, _SKIP):
                feed(ev)
    finally:
        parser.dispose()


def _syntax_error(exc: yaml.MarkedYAMLError, text: str, file: str) -> ConfigError:
    """PyYAML's own parser words syntax errors better than libyaml ("found character '\\t'"): ask it again."""
    # bounded: a second parse in Python, whose cost grows with the text and its nesting
    if _PARSER is not yaml.SafeLoader and len(text) < 1_000_000 and not _maybe_deep(text):
        try:
            _run(yaml.SafeLoader, text, lambda ev: None)
        except yaml.MarkedYAMLError as again:
            exc = again
    mark = exc.problem_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    return config_error(Location(file, line, col, ""), f"invalid YAML: {exc.problem}")
