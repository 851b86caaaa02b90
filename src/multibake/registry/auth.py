"""Registry credentials for CI: ``$MULTIBAKE_REGISTRY_USER`` and ``$MULTIBAKE_REGISTRY_PASSWORD``.

They are for the host of the release's registry (``registry:`` in platforms.yaml, as ``--registry`` or
``$MULTIBAKE_REGISTRY`` override it), and only that host: base images and families pushed elsewhere
keep docker's own credentials. multibake's registry client uses them directly. docker and buildx get
them through a DOCKER_CONFIG private to the run: a copy of the user's config.json, every other entry of
the user's docker config folder linked in (buildx's builders, cli plugins, contexts, so nothing the run
creates there is lost), and ``docker login --password-stdin`` writing the credentials into it. The
folder is removed when the run ends. The password is never in an argv, a log line or a file that
outlives the run; a login the registry refuses ends the run at once (exit 1, naming the registry).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from multibake import docker as door
from multibake.errors import BuildError, UsageError
from multibake.failures import first_line
from multibake.refs import is_host

USER_ENV = "MULTIBAKE_REGISTRY_USER"
PASSWORD_ENV = "MULTIBAKE_REGISTRY_PASSWORD"
HUB = "docker.io"
HUB_AUTH_KEY = "https://index.docker.io/v1/"  # the key docker files Docker Hub's credentials under
_CONFIG = "config.json"

# docker's argv (``docker --config DIR``) and the password on stdin → the finished process
Runner = Callable[[Sequence[str], str], "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True, slots=True)
class Login:
    """Credentials for one registry host; the password never shows in a repr."""

    host: str  # as image references name it (docker.io for Docker Hub)
    user: str
    password: str = field(repr=False)

    def scrub(self, text: str) -> str:
        """``text`` with the password masked, should a tool ever repeat it."""
        return text.replace(self.password, "***") if self.password else text


def registry_host(registry: str) -> str:
    """The host of a registry namespace (``host[:port]/path``, or a Docker Hub namespace)."""
    first = f"{registry}/x".partition("/")[0]
    return first if is_host(first) else HUB


def from_env(registry: str, environ: Mapping[str, str] = os.environ) -> Login | None:
    """The credentials the environment gives for ``registry``'s host; None when it gives none."""
    user, password = environ.get(USER_ENV, ""), environ.get(PASSWORD_ENV, "")
    if not user and not password:
        return None
    if not user or not password:
        missing = PASSWORD_ENV if user else USER_ENV
        raise UsageError(f"${missing} is not set: set both ${USER_ENV} and ${PASSWORD_ENV}, or neither")
    return Login(host=registry_host(registry), user=user, password=password)


def auth_key(host: str) -> str:
    """The key docker files ``host``'s credentials under (in ``auths`` and ``credHelpers``)."""
    return HUB_AUTH_KEY if host == HUB else host


def user_config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def private_config(user_dir: Path, folder: Path, host: str) -> None:
    """Fill ``folder`` as the user's docker config, except that ``host``'s credentials are kept in it.

    ``credHelpers: {host: ""}`` makes docker (and buildx, and multibake's reader) use the file for that
    host even when the user has a ``credsStore``, which stays in force for every other host: nothing
    is written into the user's keychain.
    """
    (user_dir / "buildx").mkdir(parents=True, exist_ok=True)  # builders created during the run stay the user's
    for entry in user_dir.iterdir():
        if entry.name != _CONFIG and not entry.name.startswith(f"{_CONFIG}."):
            (folder / entry.name).symlink_to(entry)
    try:
        config = json.loads((user_dir / _CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    key = auth_key(host)
    config["credHelpers"] = {**(config.get("credHelpers") or {}), key: ""}
    config["auths"] = {k: v for k, v in (config.get("auths") or {}).items() if k != key}
    target = folder / _CONFIG
    target.touch(mode=0o600)
    target.write_text(json.dumps(config, indent=2), encoding="utf-8")


def login_argv(docker_cmd: Sequence[str], login: Login) -> list[str]:
    """``docker login`` for ``login``, with the client's docker command: the password goes on stdin."""
    return [*docker_cmd, *door.login_argv(None if login.host == HUB else login.host, login.user)[1:]]


def docker_login(run: Runner, docker_cmd: Sequence[str], login: Login) -> None:
    """Log docker in (dockerd checks the credentials and the registry's certificate); exit 1 if refused."""
    argv = login_argv(docker_cmd, login)
    logging.getLogger("multibake.docker").debug("Running command: %s", shlex.join(argv))
    done = run(argv, login.password + "\n")
    if done.returncode != 0:
        said = login.scrub(first_line(done.stderr or done.stdout))
        raise BuildError(
            f"registry {login.host}: docker login as {login.user} (${USER_ENV}, ${PASSWORD_ENV}) failed: {said}"
        )


@contextlib.contextmanager
def docker_config(login: Login, environ: Mapping[str, str] = os.environ) -> Iterator[Path]:
    """A private DOCKER_CONFIG for ``login`` (see ``private_config``), removed when the block ends."""
    folder = Path(tempfile.mkdtemp(prefix="multibake-docker-config-"))  # mode 0700: the user's alone
    try:
        private_config(user_config_dir(environ), folder, login.host)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
