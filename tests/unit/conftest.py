"""Unit tests never run docker: every way of starting a process is guarded.

git (used by provenance.py) and python itself (the hash-seed test) still run; anything whose
program is or ends with ``docker`` raises instead. Integration tests live in tests/integration.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# import before the guard is installed, so the module's own Popen can be patched and restored
with contextlib.suppress(ImportError):
    import python_on_whales.utils  # noqa: F401


class DockerCalledError(AssertionError):
    """A unit test tried to run docker."""


def _program(cmd: Any) -> str:
    """The program a command would start (argv[0] of a list, the first word of a shell string)."""
    if isinstance(cmd, bytes | os.PathLike):
        cmd = os.fsdecode(cmd)
    if isinstance(cmd, str):
        try:
            words = shlex.split(cmd)
        except ValueError:
            words = cmd.split()
        # skip `env`, VAR=value assignments and the like so `env X=1 docker ps` is caught too
        words = [w for w in words if "=" not in w and Path(w).name != "env"]
        return words[0] if words else ""
    if isinstance(cmd, list | tuple) and cmd:
        return os.fsdecode(cmd[0])
    return ""


def is_docker(cmd: Any, executable: Any = None) -> bool:
    names = [_program(cmd)]
    if executable is not None:
        names.append(os.fsdecode(executable))
    return any(n.endswith(("docker", "docker-buildx")) for n in names)


def _refuse(cmd: Any) -> None:
    raise DockerCalledError(f"unit tests must not run docker (tried {cmd!r}); move the test to tests/integration")


_ORIGINAL_POPEN = subprocess.Popen


class _GuardedPopen(_ORIGINAL_POPEN):  # type: ignore[type-arg]
    def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
        if is_docker(args, kwargs.get("executable")):
            _refuse(args)
        super().__init__(args, *rest, **kwargs)


def _guard_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        cmd = args[0] if args else kwargs.get("args", "")
        if is_docker(cmd, kwargs.get("executable")):
            _refuse(cmd)
        return fn(*args, **kwargs)

    guarded.__wrapped__ = fn  # type: ignore[attr-defined]
    return guarded


def _guard_exec(fn: Callable[..., Any]) -> Callable[..., Any]:
    # os.exec*(path, ...) / os.spawn*(mode, path, ...) / os.posix_spawn(path, argv, env)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        for a in args[:2]:
            if isinstance(a, str | bytes | os.PathLike) and is_docker([a]):
                _refuse(args)
        return fn(*args, **kwargs)

    return guarded


_SUBPROCESS_FUNCS = ("run", "call", "check_call", "check_output", "getoutput", "getstatusoutput")
_OS_FUNCS = (
    "system",
    "popen",
    "execl",
    "execle",
    "execlp",
    "execlpe",
    "execv",
    "execve",
    "execvp",
    "execvpe",
    "spawnl",
    "spawnle",
    "spawnlp",
    "spawnlpe",
    "spawnv",
    "spawnve",
    "spawnvp",
    "spawnvpe",
    "posix_spawn",
    "posix_spawnp",
)


@pytest.fixture(autouse=True)
def _no_docker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(subprocess, "Popen", _GuardedPopen)
    for name in _SUBPROCESS_FUNCS:
        monkeypatch.setattr(subprocess, name, _guard_call(getattr(subprocess, name)))
    for name in _OS_FUNCS:
        if hasattr(os, name):
            fn = getattr(os, name)
            guard = _guard_call(fn) if name in ("system", "popen") else _guard_exec(fn)
            monkeypatch.setattr(os, name, guard)
    # Modules that did `from subprocess import Popen` keep their own reference; patch the known ones.
    for module_name, attr in (("python_on_whales.utils", "Popen"),):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attr):
            monkeypatch.setattr(module, attr, _GuardedPopen)
    yield
