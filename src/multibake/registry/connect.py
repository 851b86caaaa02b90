"""Where a registry is and how to reach it: references, plain HTTP or TLS, and docker's credentials."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from multibake.refs import is_host, untagged
from multibake.registry.auth import HUB_AUTH_KEY, Login, auth_key
from multibake.registry.errors import RegistryError

_DOCKER_HUB = "registry-1.docker.io"  # where docker.io's API answers


@dataclass(frozen=True, slots=True)
class Ref:
    host: str  # as written in the reference (docker.io for Docker Hub)
    repo: str
    reference: str  # tag or digest

    @property
    def api_host(self) -> str:
        return _DOCKER_HUB if self.host == "docker.io" else self.host


def parse(ref: str) -> Ref:
    """``host/repo:tag`` or ``host/repo@sha256:…`` → its parts (docker's rules for the host part)."""
    name, at, reference = ref.partition("@")
    if not at:
        name = untagged(ref)
        reference = ref[len(name) + 1 :] or "latest"
    first, sep, rest = name.partition("/")
    if sep and is_host(first):
        host, repo = first, rest
    else:
        host, repo = "docker.io", name
    if host == "docker.io" and "/" not in repo:
        repo = f"library/{repo}"
    return Ref(host, repo, reference)


def plain_http(host: str, certs_root: Path = Path("/etc/docker/certs.d")) -> bool:
    """Plain HTTP only for registries on this machine (dockerd's default insecure ones), unless docker
    holds a CA for the host: a registry served over TLS there is reached over TLS, and verified."""
    return host.startswith(("localhost", "127.")) and not (certs_root / host / "ca.crt").is_file()


def ca_bundle(host: str, certs_root: Path = Path("/etc/docker/certs.d")) -> str | None:
    """The CA file to verify ``host``'s TLS certificate against, as docker does: its own
    (``/etc/docker/certs.d/<host>/ca.crt``), else None for the system's trust store."""
    own = certs_root / host / "ca.crt"
    return str(own) if own.is_file() else None


def credentials(host: str, config_dir: Path | None = None) -> tuple[str, str] | None:
    """(user, secret) for ``host`` from docker's config: a credential helper, else ``auths``."""
    folder = config_dir or Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    key = auth_key(host)
    helpers = config.get("credHelpers") or {}
    # docker's rule: a host listed in credHelpers uses that helper, none when it is "" (the file)
    helper = helpers[key] if key in helpers else config.get("credsStore")
    if helper:
        try:
            proc = subprocess.run(
                [f"docker-credential-{helper}", "get"], input=key, capture_output=True, text=True, check=False
            )
        except OSError as exc:  # as docker, refuse rather than go on without the credentials it names
            raise RegistryError(
                f"docker's credential helper docker-credential-{helper} (named in {folder / 'config.json'}) "
                f"cannot run: {exc.strerror}",
                transient=False,
            ) from exc
        if proc.returncode == 0:
            found = json.loads(proc.stdout)
            return str(found["Username"]), str(found["Secret"])
    # docker writes plain host names, but older clients wrote URLs: https://host or https://host/v1/
    auths = {_auth_host(k): v for k, v in (config.get("auths") or {}).items()}
    entry = auths.get(_auth_host(key)) or {}
    if entry.get("auth"):
        user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
        return user, secret
    return None


def credentials_for(host: str, login: Login | None) -> tuple[str, str] | None:
    """``login``'s credentials when they are for ``host`` (from the environment), else docker's."""
    if login is not None and login.host == host:
        return login.user, login.password
    return credentials(host)


def _auth_host(key: str) -> str:
    if key == HUB_AUTH_KEY:
        return key
    return key.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
