"""One error hierarchy; the CLI catches it once and turns it into an exit code and a short message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended


class Terminated(BaseException):
    """SIGTERM arrived (a CI job cancelled, a container stopped): unwind as for Ctrl-C, cleaning up."""


class MultibakeError(Exception):
    """Base of every error multibake reports to a user."""

    exit_code = EXIT_FAILED


class UsageError(MultibakeError):
    """Bad command line or environment: nothing was built or pushed."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """Bad platforms.yaml: nothing was built or pushed."""


class BuildError(MultibakeError):
    """A build, push or verification failed."""


@dataclass(frozen=True, slots=True)
class Location:
    """Where a value was written: file, 1-based line and column, and its key path."""

    file: str
    line: int
    column: int
    path: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.path}" if self.path else where


def config_error(loc: Location, message: str, hint: str | None = None) -> ConfigError:
    text = f"{loc}: {message}"
    if hint:
        text += f"\n  {hint}"
    return ConfigError(text)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A "did you mean" hint for a misspelt name, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None
