"""The one door to docker: every docker and buildx argv multibake runs is built and run here.

Other modules describe *what* to run (a bake with these flags, a builder node with these options, a
login for this host) and get back plain data or a ``DockerFailure``; how docker is spelled and run,
and which client configuration it reads, stays here. Tests fake the client (``Docker``), never docker.

A release's own time is mostly waiting for processes, so the quick questions start few: the
daemon's facts come from the Engine API socket, the builder's from the buildx plugin run directly
(not through the ``docker`` front-end); without a local socket or plugin, the ``docker`` CLI answers
instead. ``docker buildx bake`` itself runs through python-on-whales' streaming runner, imported in
the background while preflight waits (it takes a fifth of a second to import).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from multibake import preload
from multibake.dockerfacts import BuilderFacts, EngineFacts, parse_inspect

_LOG = logging.getLogger("multibake.docker")
_COMMAND_LOGGERS = ("python_on_whales", "multibake")  # where --debug shows each docker command
T = TypeVar("T")
_RUNNER = "python_on_whales.components.buildx.cli_wrapper"  # python-on-whales' bake runner
TIMEOUT = 60.0  # seconds for a builder or daemon question: a hung daemon is an error, not a wait


class DockerFailure(Exception):
    """A docker command that failed: its argv and what it said on stderr."""

    def __init__(self, argv: Sequence[str], stderr: str, return_code: int = 1) -> None:
        super().__init__(stderr)
        self.argv = tuple(argv)
        self.stderr = stderr
        self.return_code = return_code


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


@dataclass(frozen=True, kw_only=True, slots=True)
class Docker:
    """The docker CLI as multibake runs it: which client configuration folder it reads (None: docker's own)."""

    config: Path | None = None

    @property
    def docker_cmd(self) -> list[str]:
        return ["docker", *(["--config", str(self.config)] if self.config else [])]

    def env(self) -> dict[str, str]:
        """The environment of a process that reads docker's configuration (the buildx plugin run directly)."""
        return {**os.environ, **({"DOCKER_CONFIG": str(self.config)} if self.config else {})}

    def inspect(self, name: str | None, *, bootstrap: bool = False) -> BuilderFacts:
        argv = [*self._buildx(), "inspect", *(["--bootstrap"] if bootstrap else []), *([name] if name else [])]
        # --bootstrap waits for the nodes to start: the caller bounds it (nodes.py), not a fixed timeout
        return parse_inspect(_output(argv, self.env(), timeout=None if bootstrap else TIMEOUT))

    def engine(self) -> EngineFacts:
        with ThreadPoolExecutor(max_workers=1) as pool:  # the plugin's process runs while the daemon answers
            version = pool.submit(self.buildx_version)
            status = _engine_info(self).get("DriverStatus") or []
            snapshotter = any("containerd.snapshotter" in str(v) for row in status for v in row)
            return EngineFacts(buildx_version=version.result(), snapshotter=snapshotter)

    def buildx_version(self) -> str | None:
        """buildx's version (``0.29.1+ds1``), None without the plugin; remembered per plugin file (a process less)."""
        plugin = buildx_plugin(self.config)
        remembered = _remembered_version(plugin)
        if remembered is not None:
            return remembered
        try:
            said = _output([*self._buildx(), "version"], self.env())
        except DockerFailure:
            return None
        words = said.split()
        version = words[1] if len(words) > 1 else None
        if plugin is not None and version is not None:
            _remember_version(plugin, version)
        return version

    def _buildx(self) -> list[str]:
        plugin = buildx_plugin(self.config)
        return [str(plugin)] if plugin else [*self.docker_cmd, "buildx"]


Client: TypeAlias = Docker  # the docker client other modules hold and pass back here


def _version_cache(plugin: Path) -> tuple[Path, str]:
    """Where buildx's version is remembered, and the key of ``plugin`` (an upgrade changes its size or time)."""
    stat = plugin.stat()
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "multibake"
    return folder / "buildx-version.json", f"{plugin.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _remembered_version(plugin: Path | None) -> str | None:
    try:
        file, key = _version_cache(plugin) if plugin else (None, "")
        found = json.loads(file.read_text(encoding="utf-8")).get(key) if file else None
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def _remember_version(plugin: Path, version: str) -> None:
    with contextlib.suppress(OSError):  # not remembered: one process more next time, nothing else
        file, key = _version_cache(plugin)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps({key: version}), encoding="utf-8")


def client(debug: bool = False) -> Docker:
    """The docker client every docker command goes through; with ``debug`` each command is shown."""
    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("multibake: debug: %(message)s"))
        for name in _COMMAND_LOGGERS:
            logger = logging.getLogger(name)
            logger.setLevel(logging.DEBUG)
            logger.addHandler(handler)
    preload.later(_RUNNER)  # a client is made when docker is about to run: imported while preflight waits
    return Docker()


def with_config(docker: Docker, folder: Path) -> Docker:
    """The same docker client, reading its configuration (credentials, buildx state) from ``folder``."""
    return dataclasses.replace(docker, config=folder)


def command(docker: Docker, argv: Sequence[str]) -> list[str]:
    """An argv built here (``docker …``), run with the client's own docker command and config."""
    return [*docker.docker_cmd, *argv[1:]]


_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def buildx_plugin(config: Path | None = None) -> Path | None:
    """The buildx plugin docker would run, searched where docker searches; None: let ``docker`` find it."""
    folder = config or _config_folder()
    extra = _config_json(folder).get("cliPluginsExtraDirs") or []
    for directory in [folder / "cli-plugins", *map(Path, _PLUGIN_DIRS), *map(Path, extra)]:
        candidate = directory / "docker-buildx"
        if os.access(candidate, os.X_OK):
            return candidate
    return None


# --- running ------------------------------------------------------------------------------------------

Runner = Callable[[Sequence[str]], Iterator[str]]  # argv of `docker buildx bake …` → its output, streamed


def _output(argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float | None = TIMEOUT) -> str:
    """What ``argv`` prints; a failure (or no answer within ``timeout``) raises DockerFailure."""
    _LOG.debug("Running command: %s", shlex.join(argv))
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DockerFailure(argv, str(exc), 127) from exc
    if done.returncode != 0:
        raise DockerFailure(argv, done.stderr or done.stdout, done.returncode)
    return done.stdout


def streaming(docker: Docker) -> Runner:
    """Run a bake argv through python-on-whales' streaming runner; a failure raises DockerFailure.

    The argv is multibake's (python-on-whales' ``bake()`` has no ``--allow`` and re-runs bake with
    ``--print`` after building); python-on-whales runs it and streams stdout and stderr as they come.
    """

    def run(argv: Sequence[str]) -> Iterator[str]:
        from python_on_whales.components.buildx.cli_wrapper import stream_buildx_logs
        from python_on_whales.exceptions import DockerException

        full = command(docker, argv)  # bake/run.py logs the command as the user would type it
        env = {"DOCKER_CONFIG": str(docker.config)} if docker.config else {}
        chunks = iter(stream_buildx_logs(full, env=env))
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except DockerException as exc:
                raise DockerFailure(full, exc.stderr or "", exc.return_code) from exc
            yield chunk

    return run


def run(docker: Docker, argv: Sequence[str]) -> None:
    """Run an argv built here to completion; a failure raises DockerFailure."""
    _output(command(docker, argv), docker.env(), timeout=None)  # creating a builder takes what it takes


def run_with_input(argv: Sequence[str], stdin: str) -> subprocess.CompletedProcess[str]:
    """Run a full argv with ``stdin`` (a password for ``docker login``), its output captured."""
    return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=120, check=False)


# --- what docker reports ------------------------------------------------------------------------------


def inspect_builder(docker: Docker, name: str | None, *, bootstrap: bool = False) -> BuilderFacts:
    """``docker buildx inspect [--bootstrap] NAME``; a failure raises DockerFailure."""
    return docker.inspect(name, bootstrap=bootstrap)


def engine(docker: Docker) -> EngineFacts:
    """The daemon's image store, and buildx's version; a failure raises DockerFailure."""
    return docker.engine()


def _socket() -> str | None:
    """The daemon's unix socket when docker would use it (no remote DOCKER_HOST, no other context)."""
    host = os.environ.get("DOCKER_HOST", "")
    if host:
        return host.removeprefix("unix://") if host.startswith("unix://") else None
    if os.environ.get("DOCKER_CONTEXT", "default") != "default":
        return None
    current = _config_json(_config_folder()).get("currentContext")
    return "/var/run/docker.sock" if current in (None, "", "default") else None


def _config_folder() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def _config_json(folder: Path) -> dict[str, Any]:
    """docker's config.json in ``folder``, {} when there is none or it is not a JSON object."""
    try:
        found = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _engine_info(docker: Docker) -> dict[str, Any]:
    """The daemon's ``/info`` over its socket, else ``docker info``'s."""
    import http.client
    import socket

    found = _socket()
    if found is None:
        info: dict[str, Any] = json.loads(_output([*docker.docker_cmd, "info", "--format", "{{json .}}"]))
        return info
    path: str = found

    class Unix(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(TIMEOUT)
            self.sock.connect(path)

    conn = Unix("localhost", timeout=TIMEOUT)
    try:
        conn.request("GET", "/info")
        answer = conn.getresponse()
        body = answer.read()
    except OSError as exc:
        raise DockerFailure(["GET", f"unix://{path}/info"], f"Cannot connect to the Docker daemon: {exc}") from exc
    finally:
        conn.close()
    if answer.status != 200:
        raise DockerFailure(["GET", f"unix://{path}/info"], body.decode(errors="replace"))
    answered: dict[str, Any] = json.loads(body)
    return answered
