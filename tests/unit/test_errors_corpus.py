"""A corpus of malformed platforms.yaml files, each refused by the real CLI with a short, precise message.

Each file in ``bad_configs/`` starts with a header (comment lines before the YAML):

    # <what is wrong, in words>
    # expect: <line>:<column> <key.path or -> <message fragment...>
    # hint: <fragment of the hint line>              (optional: a second line such as "did you mean ...")
    # bug: <why the CLI's answer is wrong>           (optional: xfail both checks, strict)
    # bug-location: <...>                            (optional: xfail only the location check)
    # bug-message: <...>                             (optional: xfail only the message check)

``line:column`` are 1-based and count the header lines. ``-`` means the error has no key path (YAML
syntax, empty file, ...). Header lines state the CORRECT behaviour; a ``bug`` line marks where the
product does not (yet) meet it. Every case runs ``multibake validate -c FILE`` through ``cli.run``.
``bad_configs/ctx/`` is a real build context so only the intended problem is found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from multibake import cli
from multibake.errors import EXIT_USAGE

CORPUS = Path(__file__).parent / "bad_configs"
_EXPECT = re.compile(r"^# expect: (?P<line>\d+):(?P<col>\d+) (?P<path>\S+) (?P<fragment>.+)$")


@dataclass(frozen=True)
class Case:
    file: Path
    line: int
    column: int
    path: str | None
    fragment: str
    hint: str | None
    bug_location: str | None
    bug_message: str | None


def _parse(file: Path) -> Case:
    header: dict[str, str] = {}
    for raw in file.read_text(encoding="utf-8").splitlines():
        if not raw.startswith("#"):
            break
        key, sep, value = raw.removeprefix("# ").partition(": ")
        if sep and key in ("expect", "hint", "bug", "bug-location", "bug-message"):
            header[key] = value
    m = _EXPECT.match(f"# expect: {header.get('expect', '')}")
    if m is None:
        raise AssertionError(f"{file.name}: no valid '# expect: LINE:COL PATH FRAGMENT' header")
    bug = header.get("bug")
    return Case(
        file=file,
        line=int(m["line"]),
        column=int(m["col"]),
        path=None if m["path"] == "-" else m["path"],
        fragment=m["fragment"],
        hint=header.get("hint"),
        bug_location=header.get("bug-location") or bug,
        bug_message=header.get("bug-message") or bug,
    )


CASES = [_parse(f) for f in sorted(CORPUS.glob("*.yaml"))]


def _params(which: str) -> list[object]:
    out: list[object] = []
    for case in CASES:
        bug = case.bug_location if which == "location" else case.bug_message
        marks = [pytest.mark.xfail(strict=True, reason=f"BUG: {bug}")] if bug else []
        out.append(pytest.param(case, id=case.file.stem, marks=marks))
    return out


def _validate(case: Case, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = cli.run(["validate", "-c", str(case.file)])
    captured = capsys.readouterr()
    return code, captured.err.splitlines(), captured.out


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 35
    assert (CORPUS / "ctx" / "Dockerfile").is_file()


@pytest.mark.parametrize("case", _params("message"))
def test_message(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 2, a short message on stderr (no traceback), the expected fragment and hint."""
    code, err, out = _validate(case, capsys)
    text = "\n".join(err)
    assert code == EXIT_USAGE, text
    assert out == ""
    assert "Traceback" not in text
    assert err, "nothing on stderr"
    assert err[0].startswith("multibake: error: "), text
    hints = [line for line in err[1:] if line.startswith("  ")]
    assert len(err) <= (3 if hints else 2), text
    assert case.fragment in text, text
    if case.hint:
        assert any(case.hint in h for h in hints), text


@pytest.mark.parametrize("case", _params("location"))
def test_location(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    """The first line names file:line:column and the key path of the problem."""
    code, err, _ = _validate(case, capsys)
    assert code == EXIT_USAGE
    first = err[0] if err else ""
    where = f"multibake: error: {case.file}:{case.line}:{case.column}: "
    assert first.startswith(where), f"expected {where!r}, got {first!r}"
    rest = first.removeprefix(where)
    if case.path is None:
        assert not re.match(r"[\w.\[\]-]+: ", rest), f"expected no key path, got {rest!r}"
    else:
        assert rest.startswith(f"{case.path}: "), f"expected key path {case.path!r}, got {rest!r}"


def test_debug_shows_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    file = CORPUS / "base_cycle.yaml"
    assert cli.run(["--debug", "validate", "-c", str(file)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "ConfigError" in err
    assert err.rstrip().splitlines()[-1].startswith("multibake: error: ")
    # the flag does not stick: the next run is short again
    assert cli.run(["validate", "-c", str(file)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_debug_from_environment(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIBAKE_DEBUG", "1")
    assert cli.run(["validate", "-c", str(CORPUS / "base_self.yaml")]) == EXIT_USAGE
    assert "Traceback" in capsys.readouterr().err


def test_missing_config_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert cli.run(["validate", "-c", str(missing)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == f"multibake: error: {missing}: no such file (pass -c PATH or create platforms.yaml)\n"


@pytest.mark.parametrize(
    "command", [["plan"], ["plan", "--json"], ["hcl", "-o", "-"], ["hcl", "--format", "json", "-o", "-"]]
)
def test_every_command_refuses_bad_config_the_same_way(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    file = CORPUS / "include_duplicate_cell.yaml"
    assert cli.run([*command, "-c", str(file)]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "include repeats a cell the matrix already has" in captured.err
