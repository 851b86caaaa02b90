"""Where each setting comes from, decided once: command line > environment > platforms.yaml > default.

The environment is a parameter (tests pass a dict, nothing patches ``os.environ``). Each resolved
value says its source, so an error about it names what to fix: the flag, the variable or the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

CONFIG_ENV = "MULTIBAKE_CONFIG"
REGISTRY_ENV = "MULTIBAKE_REGISTRY"
DEBUG_ENV = "MULTIBAKE_DEBUG"
DEFAULT_CONFIG = Path("platforms.yaml")


class Source(StrEnum):
    """Where a value came from, as a message names it."""

    DEFAULT = "default"
    FILE = "file"
    ENVIRONMENT = "environment"
    COMMAND_LINE = "command line"


@dataclass(frozen=True, kw_only=True, slots=True)
class Override:
    """A value given outside platforms.yaml, and how the user gave it (``--registry``, ``$VAR``)."""

    value: str
    source: Source
    named: str  # the flag or variable, for messages

    def __str__(self) -> str:
        return self.named


def registry(flag: str | None, environ: Mapping[str, str]) -> Override | None:
    """The registry that beats platforms.yaml's: ``--registry``, else ``$MULTIBAKE_REGISTRY``, else None."""
    if flag:
        return Override(value=flag, source=Source.COMMAND_LINE, named="--registry")
    if environ.get(REGISTRY_ENV):
        return Override(value=environ[REGISTRY_ENV], source=Source.ENVIRONMENT, named=f"${REGISTRY_ENV}")
    return None


def config_path(flag: Path | None, environ: Mapping[str, str]) -> Path:
    """``-c/--config``, else ``$MULTIBAKE_CONFIG``, else platforms.yaml."""
    if flag is not None:
        return flag
    return Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else DEFAULT_CONFIG


def debug(flag: bool, environ: Mapping[str, str]) -> bool:
    """``--debug``, or ``MULTIBAKE_DEBUG=1``."""
    return flag or environ.get(DEBUG_ENV) == "1"
