"""Image references: docker's rules for hosts, repository names and tags, in one place.

The grammar is the distribution reference grammar (github.com/distribution/reference): a name is an
optional ``host[:port]`` followed by ``/``-separated path components of lowercase letters and digits
joined by ``.``, ``_``, ``__`` or dashes, at most 255 characters in all; a tag is at most 128 of
``[A-Za-z0-9_.-]``, not starting with ``.`` or ``-``. Problems are returned as text that never repeats
a credential.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 255  # distribution's NameTotalLengthMax, host included
MAX_TAG = 128
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_URL_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@")
CREDENTIALS_ADVICE = (
    "credentials must never be written into platforms.yaml: use `docker login HOST` or a credential helper"
)


def is_host(component: str) -> bool:
    """Whether the first component of an image reference names a registry host (docker's rule)."""
    return "." in component or ":" in component or component == "localhost"


def untagged(ref: str) -> str:
    """``ref`` without its tag: a colon after the last slash starts the tag (``host:port`` has none)."""
    return ref.rpartition(":")[0] if ref.rfind(":") > ref.rfind("/") else ref


def image_name(registry: str, family: str, image: str | None) -> str:
    """The repository of a family: ``image`` as is when it starts with a host, else under ``registry``."""
    if image is None:
        return f"{registry.rstrip('/')}/{family}"
    first = image.split("/", 1)[0]
    return image if "/" in image and is_host(first) else f"{registry.rstrip('/')}/{image}"


def has_credentials(value: str) -> bool:
    """``user:password@host/…`` or ``https://user:token@host/…``: a secret where a name belongs."""
    return bool(_URL_USERINFO.match(value)) or ("@" in value and "@sha256:" not in value)


def host_problem(host: str) -> str | None:
    """Why ``host[:port]`` is not a registry host, or None."""
    name, colon, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not colon:
        name = host
    elif not port.isdigit() or not 0 < int(port) < 65536:
        return f"port {port!r} must be a number from 1 to 65535"
    if _IPV6.fullmatch(name):
        return None
    for comp in name.split("."):
        if not _DOMAIN_COMPONENT.fullmatch(comp):
            return f"host {name!r} is not a valid host name (letters, digits and '-' between dots)"
    return None


def repository_problem(ref: str) -> str | None:
    """Why ``ref`` (a repository name, or a registry namespace) is not one docker accepts, or None."""
    if has_credentials(ref):
        return CREDENTIALS_ADVICE
    if len(ref) > MAX_NAME:
        return f"the name has {len(ref)} characters; docker allows at most {MAX_NAME} (host included)"
    parts = ref.split("/")
    if is_host(parts[0]):
        if problem := host_problem(parts[0]):
            return problem
        parts = parts[1:]
    for comp in parts:
        if not _PATH_COMPONENT.fullmatch(comp):
            return f"component {comp[:64]!r} must be lowercase letters and digits joined by . _ __ or -"
    return None


def source_problem(ref: str) -> str | None:
    """Why ``ref`` is not a repository whose tags can be listed (``docker.io/library/alpine``), or None."""
    if has_credentials(ref):
        return CREDENTIALS_ADVICE
    shown = ref[:80]
    if "@" in ref:
        return f"{shown!r} names a digest; give the repository alone"
    if "/" not in ref and (ref == "localhost" or ("." in ref and ":" not in ref)):
        return f"{shown!r} names a registry host; add the repository: {shown}/NAME"
    if untagged(ref) != ref:
        what = "a tag" if "/" in ref else "a tag (or only a registry host)"
        return f"{shown!r} names {what}; give the repository alone, as in docker.io/library/alpine"
    return repository_problem(ref)


def bounded_tag(tag: str) -> str:
    """``tag`` if it fits the 128-character limit, else a prefix and a hash that stay unique."""
    if len(tag) <= MAX_TAG:
        return tag
    return tag[:100] + "-" + hashlib.sha256(tag.encode()).hexdigest()[:16]
