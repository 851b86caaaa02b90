"""What a release runs with: docker, the registry API, sleep and output (injected: every path runs in tests).

Also the registry login of a release and its retry budget.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from multibake import cosign
from multibake import docker as door
from multibake.bake import display
from multibake.config.schema import Retry
from multibake.docker import Runner
from multibake.kinds import Echo
from multibake.preflight import nodes
from multibake.registry import auth
from multibake.registry.client import Api, Http, Registry
from multibake.release import shards
from multibake.retry import RetryPolicy

if TYPE_CHECKING:
    from multibake.docker import Client


@dataclass(frozen=True, kw_only=True, slots=True)
class Tools:
    """What a release talks to; tests pass fakes."""

    docker: Callable[[], Client]  # made only when something is about to run docker
    echo: Echo  # buildx's progress and multibake's running commentary
    say: Echo  # messages that are always shown (stderr)
    watch: display.Watch = display.unwatched  # follows the bake runs: a live table, "still running" lines
    sleep: Callable[[float], None] = time.sleep
    api: Api = field(default_factory=Http)  # the registry API
    bake_runner: Callable[[Client], Runner] = door.streaming  # how a bake argv is run
    buildx: Callable[[Client], nodes.Buildx] = nodes.WhalesBuildx  # a configured builder's create/inspect
    configured: Callable[[Client, Path], Client] = door.with_config  # the client on another DOCKER_CONFIG
    login_runner: auth.Runner = door.run_with_input  # runs `docker login --password-stdin`
    started: float | None = None  # monotonic time the command started: the release's steps are timed from it
    startup: float = 0.0  # seconds the process took to reach the command (interpreter, imports)
    cosign: cosign.Runner = cosign.run  # runs cosign (signing, verifying signatures)
    login: auth.Login | None = None  # the run's registry credentials ($MULTIBAKE_REGISTRY_USER/PASSWORD)


@contextlib.contextmanager
def logged_in(tools: Tools, registry: str) -> Iterator[Tools]:
    """``tools`` using $MULTIBAKE_REGISTRY_USER/PASSWORD for ``registry``'s host, when they are set.

    The registry client takes them as they are; docker is logged in when first needed, into a
    DOCKER_CONFIG private to this run and removed when the block ends (auth.py).
    """
    login = auth.from_env(registry)
    if login is None:
        yield tools
        return
    api = tools.api.with_login(login) if isinstance(tools.api, Http) else tools.api
    with contextlib.ExitStack() as stack:
        made: list[Client] = []

        def docker() -> Client:
            if not made:
                folder = stack.enter_context(auth.docker_config(login))
                client = tools.configured(tools.docker(), folder)
                auth.docker_login(tools.login_runner, door.command(client, ["docker"]), login)
                tools.say(f"multibake: docker logged in to {login.host} as {login.user} (${auth.USER_ENV})")
                made.append(client)
            return made[0]

        yield replace(tools, api=api, docker=docker, login=login)


def budget(limits: Retry) -> str:
    """The retry budget, said before a release starts: how long a bad registry day can cost at most."""
    waits = (limits.attempts - 1) * limits.max_delay
    return (
        f"multibake: transient registry failures: up to {limits.attempts} attempts per step, waits up to "
        f"{limits.max_delay:g} s each ({waits:g} s in all) while nothing moves on; a registry request is retried for "
        f"up to {limits.per_request:g} s while the registry answers others; a stalled request gives up after "
        f"{limits.timeout:g} s, sooner while the registry answers others (retry: in platforms.yaml)"
    )


def _policy(release: shards.Resolved, tools: Tools) -> RetryPolicy:
    return RetryPolicy(limits=release.loaded.config.retry, sleep=tools.sleep, echo=tools.echo)


def registry_for(release: shards.Resolved, tools: Tools) -> Registry:
    """The release's registry client: its retries, and its per-request timeout (retry.timeout)."""
    limits = release.loaded.config.retry
    api = tools.api.with_timeout(limits.timeout) if isinstance(tools.api, Http) else tools.api
    return Registry(policy=_policy(release, tools), api=api)
