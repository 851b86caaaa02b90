"""A corpus of malformed platforms.yaml files, each refused by the real CLI with a short, precise message.

Each file in ``bad_configs/`` starts with a header (comment lines before the YAML):

    # <what is wrong, in words>
    # expect: <line>:<column> <key.path or -> <message fragment...>
    # hint: <fragment of the hint line>              (optional: a second line such as "did you mean ...")
    # bug: <why the CLI's answer is wrong>           (optional: xfail both checks, strict)
    # bug-location: <...>                            (optional: xfail only the location check)
    # bug-message: <...>                             (optional: xfail only the message check)
    # secret: <text>                                 (optional: a credential that must never be printed)

``line:column`` are 1-based and count the header lines. ``-`` means the error has no key path (YAML
syntax, empty file, ...). Header lines state the CORRECT behaviour; a ``bug`` line marks where the
product does not (yet) meet it. Every case runs ``multibake validate -c FILE`` through ``cli.run``.
``bad_configs/ctx/`` is a real build context so only the intended problem is found.

Hostile input (alias bombs, deep nesting, huge values, a million cells, FIFOs, devices, sparse files,
symlinks out of the project) is also run as a real ``multibake hcl`` process, bounded in time and
memory, and nothing may be written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from multibake.cli import app as cli
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
    secret: str | None = None


def _parse(file: Path) -> Case:
    header: dict[str, str] = {}
    for raw in file.read_text(encoding="utf-8").splitlines():
        if not raw.startswith("#"):
            break
        key, sep, value = raw.removeprefix("# ").partition(": ")
        if sep and key in ("expect", "hint", "bug", "bug-location", "bug-message", "secret"):
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
        secret=header.get("secret"),
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
    assert len(CASES) >= 110
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
    if case.secret:
        assert case.secret not in text, "a credential was echoed"


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


@pytest.mark.parametrize("case", [pytest.param(c, id=c.file.stem) for c in CASES])
def test_nothing_is_written(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``hcl`` (which writes docker-bake.hcl beside the config) refuses and leaves the directory as it was."""
    shutil.copytree(CORPUS / "ctx", tmp_path / "ctx")
    config = tmp_path / case.file.name
    shutil.copy(case.file, config)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert cli.run(["hcl", "-c", str(config)]) == EXIT_USAGE
    capsys.readouterr()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# --- hostile input, as a real process: bounded time and memory ------------------------------------

SECONDS = 10.0
MAX_RSS_MB = 300.0
HEADER = "registry: localhost:5000/test\nplatforms: [linux/amd64]\nimages:\n  app:\n    context: ctx\n"


@dataclass(frozen=True)
class Bounded:
    code: int
    err: list[str]
    seconds: float
    rss_mb: float


def run_bounded(config: Path, cwd: Path) -> Bounded:
    """``multibake hcl -c CONFIG`` in its own process; its peak RSS from wait4, killed after SECONDS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTIBAKE_")}
    argv = [sys.executable, "-m", "multibake", "hcl", "-c", str(config)]
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - start > SECONDS:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            pytest.fail(f"multibake hcl -c {config.name} ran longer than {SECONDS} s")
        time.sleep(0.02)
    seconds = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    err = proc.stderr.read().splitlines()
    proc.stderr.close()
    return Bounded(proc.returncode, err, seconds, usage.ru_maxrss / 1024)


def _hostile_project(tmp_path: Path, name: str) -> Path:
    """A project directory holding the hostile config ``name``; returns the config's path."""
    project = tmp_path / "project"
    shutil.copytree(CORPUS / "ctx", project / "ctx")
    config = project / "platforms.yaml"
    if name.endswith(".yaml"):
        shutil.copy(CORPUS / name, config)
    elif name == "multi-megabyte value":
        config.write_text(HEADER + '    labels: {big: "' + "x" * 5_000_000 + '"}\n', encoding="utf-8")
    elif name == "multi-megabyte key":
        config.write_text(HEADER + "    labels: {" + "k" * 3_000_000 + ": v}\n", encoding="utf-8")
    elif name == "huge sparse file":
        with config.open("wb") as fh:
            fh.truncate(64 * 1024**3)  # 64 GiB, no block written
    elif name == "FIFO":
        os.mkfifo(config)
    elif name == "directory":
        config.mkdir()
    elif name == "/dev/zero":
        config = Path("/dev/zero")
    elif name == "context symlink out":
        outside = tmp_path / "outside"
        shutil.copytree(CORPUS / "ctx", outside)
        (project / "linked").symlink_to(outside, target_is_directory=True)
        config.write_text(HEADER.replace("context: ctx", "context: linked"), encoding="utf-8")
    elif name == "Dockerfile symlink out":
        (tmp_path / "Dockerfile.outside").write_text("FROM scratch\n", encoding="utf-8")
        (project / "ctx" / "Dockerfile.link").symlink_to(tmp_path / "Dockerfile.outside")
        config.write_text(HEADER + "    dockerfile: Dockerfile.link\n", encoding="utf-8")
    return config


HOSTILE = {
    "alias_bomb.yaml": "aliases expand to more than",
    "alias_recursive.yaml": "recursive alias",
    "nesting_deep.yaml": "nesting deeper than 64 levels",
    "nesting_deep_flow.yaml": "nesting deeper than 64 levels",
    "nesting_deep_flow_10k.yaml": "nesting deeper than 64 levels",
    "nesting_deep_block_compact.yaml": "nesting deeper than 64 levels",
    "matrix_million_cells.yaml": "would expand to 1,000,000 cells",
    "unknown_tag_python.yaml": "unknown YAML tag",
    "multi-megabyte value": "the value has 5,000,000 characters",
    "multi-megabyte key": "a key has 3,000,000 characters",
    "huge sparse file": "bytes, more than a platforms.yaml may have",
    "FIFO": "not a regular file",
    "directory": "is a directory",
    "/dev/zero": "not a regular file",
    "context symlink out": "build context 'linked' is outside",
    "Dockerfile symlink out": "Dockerfile 'Dockerfile.link' is outside",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_is_refused_within_bounds(name: str, tmp_path: Path) -> None:
    """Exit 2, one or two lines naming the file (and line:col and key where there is one), no traceback,
    in seconds and at most 300 MB, and nothing written."""
    config = _hostile_project(tmp_path, name)
    before = sorted(tmp_path.rglob("*"))
    result = run_bounded(config, cwd=tmp_path)
    text = "\n".join(result.err)
    assert result.code == EXIT_USAGE, text
    assert "Traceback" not in text
    assert 1 <= len(result.err) <= 2, text
    assert result.err[0].startswith(f"multibake: error: {config}"), text
    assert HOSTILE[name] in text, text
    assert result.seconds < SECONDS
    assert result.rss_mb <= MAX_RSS_MB, f"peak RSS {result.rss_mb:.0f} MB"
    assert sorted(tmp_path.rglob("*")) == before, "something was written"
    if name.endswith(".yaml"):
        assert re.match(rf"multibake: error: {re.escape(str(config))}:\d+:\d+: ", result.err[0]), text


@pytest.mark.parametrize("command", [["validate"], ["ci", "matrix"], ["hcl", "-o", "-"], ["plan"]])
@pytest.mark.parametrize("case", ["missing_context_dir.yaml", "context_dotdot.yaml", "dockerfile_absolute.yaml"])
def test_every_command_checks_contexts_and_dockerfiles(
    command: list[str], case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken checkout must not fan out: ``ci matrix`` makes the file checks ``validate`` makes."""
    assert cli.run([*command, "-c", str(CORPUS / case)]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.match(rf"multibake: error: {re.escape(str(CORPUS / case))}:\d+:\d+: images\.app\.", captured.err)
