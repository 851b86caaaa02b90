"""Editing platforms.yaml in place: new values for some sequences, every other byte kept.

ruamel.yaml's round-trip mode keeps comments, key order, flow or block style and each scalar's
quotes; what it cannot know is the file's indentation, so the settings that reproduce the file
unchanged are found first (a file no setting reproduces is refused rather than reformatted). New
values take the quoting of the values they replace (``"3.20"`` stays a quoted string, a plain
``3.20`` stays plain: multibake reads it as the text it is), comments stay with their positions, and
comment lines after a block sequence stay after it. The result is read back with multibake's own
loader and must hold exactly the old data with the new values, or nothing is returned.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString
from ruamel.yaml.tokens import CommentToken
from ruamel.yaml.util import load_yaml_guess_indent

from multibake.config.yamlpos import KeyPath, format_path, parse_yaml
from multibake.errors import BuildError

_NULL = "tag:yaml.org,2002:null"
_STR = "tag:yaml.org,2002:str"
# (mapping, sequence, offset) indentations people write; the guessed one is tried first
_INDENTS = ((2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 4, 0), (4, 6, 4), (4, 6, 2), (3, 3, 0), (3, 5, 2))


class _Plain(str):
    """A value written without quotes, as the values it replaces were."""

    __slots__ = ()


def _yaml(indent: tuple[int, int, int]) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 1 << 16  # never fold a long line
    yaml.indent(mapping=indent[0], sequence=indent[1], offset=indent[2])

    def plain(representer: Any, value: _Plain) -> Any:
        # the tag the resolver would give the text, so the emitter may write it bare (3.20, 22);
        # a null-looking value is quoted: multibake would read a bare one as nothing
        tag = yaml.resolver.resolve(ScalarNode, str(value), (True, False))
        return representer.represent_scalar(_STR if tag == _NULL else tag, str(value))

    yaml.representer.add_representer(_Plain, plain)
    return yaml


def _dump(yaml: YAML, data: Any) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _faithful(text: str) -> tuple[YAML, Any]:
    """A round-trip parser whose dump of the unchanged file is the file, and the file's data."""
    _, guessed_seq, guessed_offset = load_yaml_guess_indent(text)
    first = [i for i in _INDENTS if i[1:] == (guessed_seq, guessed_offset or 0)]
    for indent in [*first, *_INDENTS]:
        yaml = _yaml(indent)
        data = yaml.load(text)
        if _dump(yaml, data) == text:
            return yaml, data
    raise BuildError(
        "cannot rewrite the file without changing its layout (an indentation or spacing ruamel.yaml does not "
        "reproduce); change the values by hand"
    )


def _styled(value: str, like: Any) -> str:
    style: type[str] = _Plain
    if isinstance(like, DoubleQuotedScalarString | SingleQuotedScalarString):
        style = type(like)
    return style(value)


def _replace(seq: CommentedSeq, values: Sequence[str]) -> None:
    """``seq``'s items become ``values``, each comment kept on its position; comment lines after the
    last item (ruamel hangs them on it) move to the new last item."""
    like = seq[0] if len(seq) else None
    old_last = len(seq) - 1
    trailing = _split_trailing(seq, old_last) if old_last >= 0 else None
    for i, value in enumerate(values):
        if i < len(seq):
            seq[i] = _styled(value, like)
        else:
            seq.append(_styled(value, like))
    while len(seq) > len(values):
        del seq[len(seq) - 1]  # a positive index: ruamel shifts comments wrongly for -1
    if trailing is not None and values:
        _hang_trailing(seq, len(values) - 1, trailing)


def _split_trailing(seq: CommentedSeq, index: int) -> CommentToken | None:
    """Take the comment lines after item ``index`` off it, leaving its end-of-line comment."""
    entry = seq.ca.items.get(index)
    token = entry[0] if entry else None
    if not isinstance(token, CommentToken):
        return None
    eol, newline, rest = token.value.partition("\n")
    if not rest:
        return None
    if eol.strip():
        token.value = eol + newline
    else:
        del seq.ca.items[index]
    return CommentToken("\n" + rest, token.start_mark, None)


def _hang_trailing(seq: CommentedSeq, index: int, trailing: CommentToken) -> None:
    entry = seq.ca.items.get(index)
    if entry and isinstance(entry[0], CommentToken):
        entry[0].value = entry[0].value.rstrip("\n") + trailing.value
    else:
        seq.ca.items[index] = [trailing, None, None, None]


def _at(data: Any, path: KeyPath) -> Any:
    for key in path:
        data = data[key]
    return data


def replace_sequences(text: str, changes: Mapping[KeyPath, Sequence[str]], file: str) -> str:
    """``text`` with the sequence at each key path holding the new values, and nothing else changed."""
    yaml, data = _faithful(text)
    expected, _, _ = parse_yaml(text, file)
    for path, values in changes.items():
        seq = _at(data, path)
        if not isinstance(seq, CommentedSeq) or not values:
            raise BuildError(f"{file}: {format_path(path)} is not a list of values")
        _replace(seq, values)
        parent: dict[str | int, Any] = _at(expected, path[:-1])
        parent[path[-1]] = list(values)
    result = _dump(yaml, data)
    if parse_yaml(result, file)[0] != expected:
        raise BuildError(f"{file}: the rewritten file would not read back as the update; change the values by hand")
    return result
