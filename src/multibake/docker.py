"""The one door to docker: every docker and buildx argv multibake runs is built here, and only this
module imports python-on-whales.

Other modules describe *what* to run (a bake with these flags, a builder node with these options, a
login for this host) and get back plain data or a ``DockerFailure``; how docker is spelled and run,
and which client configuration it reads, stays here. Tests fake the runner callables, never docker.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

if TYPE_CHECKING:
    from python_on_whales import DockerClient

Client: TypeAlias = "DockerClient"  # the docker client other modules hold and pass back here

# python-on-whales logs each docker command it runs on its own logger; multibake logs the bake runs
# (which python-on-whales streams without logging) on its own.
_COMMAND_LOGGERS = ("python_on_whales", "multibake")
T = TypeVar("T")


class DockerFailure(Exception):
    """A docker command that failed: its argv and what it said on stderr."""

    def __init__(self, argv: Sequence[str], stderr: str, return_code: int = 1) -> None:
        super().__init__(stderr)
        self.argv = tuple(argv)
        self.stderr = stderr
        self.return_code = return_code


def _caught(fn: Callable[[], T]) -> T:
    """``fn()``, python-on-whales' DockerException turned into multibake's DockerFailure."""
    from python_on_whales.exceptions import DockerException

    try:
        return fn()
    except DockerException as exc:
        raise DockerFailure(exc.docker_command, exc.stderr or "", exc.return_code) from exc


# --- argv ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class BakeFlags:
    """What a ``docker buildx bake`` run is asked to do (invocation.py decides the values)."""

    file: Path
    builder: str | None = None
    no_cache: bool = False
    allow: tuple[str, ...] = ()  # --allow entitlements
    metadata: Path | None = None
    sets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    targets: tuple[str, ...] = ()


def bake_argv(flags: BakeFlags) -> list[str]:
    argv = ["docker", "buildx", "bake", "--file", str(flags.file), "--progress", "plain"]
    argv += ["--builder", flags.builder] if flags.builder else []
    argv += ["--no-cache"] if flags.no_cache else []
    argv += [f"--allow={entitlement}" for entitlement in flags.allow]
    argv += ["--metadata-file", str(flags.metadata)] if flags.metadata is not None else []
    for key, value in flags.sets.items():
        argv += ["--set", f"{key}={value}"]
    return argv + list(flags.targets)


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeArgs:
    """One node of a buildx builder, as ``docker buildx create`` takes it."""

    name: str
    driver: str
    platforms: tuple[str, ...]
    driver_opts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    endpoint: str | None = None


def _opts(opts: Mapping[str, str]) -> list[str]:
    # one --driver-opt per option; buildx reads each as CSV, so a value with a comma is quoted
    out = []
    for key, value in sorted(opts.items()):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow([f"{key}={value}"])
        out += ["--driver-opt", buf.getvalue()]
    return out


def create_argv(builder: str, node: NodeArgs, *, append: bool) -> tuple[str, ...]:
    argv = ["docker", "buildx", "create", "--name", builder, "--node", node.name, "--driver", node.driver]
    argv += ["--platform", ",".join(node.platforms), *_opts(node.driver_opts)]
    argv += ["--append"] if append else []
    return (*argv, *([node.endpoint] if node.endpoint else []))


def leave_argv(builder: str, node: str) -> tuple[str, ...]:
    return ("docker", "buildx", "create", "--leave", "--name", builder, "--node", node)


def remove_argv(builder: str) -> tuple[str, ...]:
    return ("docker", "buildx", "rm", builder)


def login_argv(host: str | None, user: str) -> list[str]:
    """``docker login`` (Docker Hub when ``host`` is None): the password goes on stdin, never in the argv."""
    return ["docker", "login", "--username", user, "--password-stdin", *([host] if host else [])]


# --- the client ---------------------------------------------------------------------------------------


def client(debug: bool = False) -> DockerClient:
    """The docker CLI wrapper every docker command goes through; with ``debug`` each command is shown."""
    from python_on_whales import DockerClient

    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("multibake: debug: %(message)s"))
        for name in _COMMAND_LOGGERS:
            logger = logging.getLogger(name)
            logger.setLevel(logging.DEBUG)
            logger.addHandler(handler)
    return DockerClient()


def with_config(docker: DockerClient, folder: Path) -> DockerClient:
    """The same docker client, reading its configuration (credentials, buildx state) from ``folder``."""
    from python_on_whales import DockerClient

    return DockerClient(client_config=dataclasses.replace(docker.client_config, config=folder))


def command(docker: DockerClient, argv: Sequence[str]) -> list[str]:
    """An argv built here (``docker …``), run with the client's own docker command and config."""
    return [*(str(part) for part in docker.buildx.docker_cmd), *argv[1:]]


# --- running ------------------------------------------------------------------------------------------

Runner = Callable[[Sequence[str]], Iterable[str]]  # argv of `docker buildx bake …` → its output, streamed


def streaming(docker: DockerClient) -> Runner:
    """Run an argv with python-on-whales' streaming runner; a failure raises DockerFailure."""

    def run(argv: Sequence[str]) -> Iterator[str]:
        from python_on_whales.components.buildx.cli_wrapper import stream_buildx_logs

        yield from _drain_lazily(stream_buildx_logs(command(docker, argv)))

    return run


def _drain_lazily(chunks: Iterable[str]) -> Iterator[str]:
    # the caller consumes the output as it comes; a failure surfaces when the stream ends
    from python_on_whales.exceptions import DockerException

    iterator = iter(chunks)
    while True:
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        except DockerException as exc:
            raise DockerFailure(exc.docker_command, exc.stderr or "", exc.return_code) from exc
        yield chunk


def run(docker: DockerClient, argv: Sequence[str]) -> None:
    """Run an argv built here to completion; a failure raises DockerFailure."""
    from python_on_whales.utils import run as whales_run

    full = command(docker, argv)
    _caught(lambda: whales_run(full))


def run_with_input(argv: Sequence[str], stdin: str) -> subprocess.CompletedProcess[str]:
    """Run a full argv with ``stdin`` (a password for ``docker login``), its output captured."""
    return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=120, check=False)


# --- what docker reports ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeFacts:
    name: str
    endpoint: str
    platforms: tuple[str, ...]  # as buildx prints them: declared ones marked with a trailing *
    status: str
    version: str = ""  # the node's BuildKit version (v0.34.2), when buildx knows it


@dataclass(frozen=True, kw_only=True, slots=True)
class BuilderFacts:
    name: str
    driver: str
    nodes: tuple[NodeFacts, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class EngineFacts:
    buildx_version: str | None  # None: no buildx plugin
    snapshotter: bool  # dockerd stores images in containerd (multi-platform on the docker driver)


def _builder_facts(builder: Any) -> BuilderFacts:
    nodes = tuple(
        NodeFacts(
            name=n.name or "",
            endpoint=n.endpoint or "",
            platforms=tuple(str(p) for p in n.platforms or []),
            status=n.status or "",
            version=getattr(n, "version", None) or "",  # fakes and old buildx leave it out
        )
        for n in builder.nodes or []
    )
    return BuilderFacts(name=builder.name or "", driver=builder.driver or "", nodes=nodes)


def inspect_builder(docker: DockerClient, name: str | None, *, bootstrap: bool = False) -> BuilderFacts:
    """``docker buildx inspect [--bootstrap] NAME``; a failure raises DockerFailure."""
    return _builder_facts(_caught(lambda: docker.buildx.inspect(name, bootstrap=bootstrap)))


def engine(docker: DockerClient) -> EngineFacts:
    """What ``docker info`` says of buildx and the image store; a failure raises DockerFailure."""
    system = _caught(docker.system.info)
    plugins = system.client_info.plugins if system.client_info else None
    version = next((p.version for p in plugins or [] if p.name == "buildx"), None)
    snapshotter = any("containerd.snapshotter" in str(v) for row in system.driver_status or [] for v in row)
    return EngineFacts(buildx_version=version, snapshotter=snapshotter)
