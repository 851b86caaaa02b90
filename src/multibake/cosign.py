"""cosign, the one door to it: its argv built as lists, run as a process, its answers read.

Signing and verifying go through the user's own ``cosign`` (``$MULTIBAKE_COSIGN`` names another
binary). Images are always named by digest, so a signature covers exactly the bytes a tag is about to
point at. The key's password travels in ``COSIGN_PASSWORD`` in cosign's environment only: never in an
argv, a log line or an error message (``scrub``). cosign's stdin is closed, so an encrypted key without
a password fails at once instead of waiting for a terminal.

With a key, nothing leaves this machine but the registry traffic: no transparency log upload
(``--tlog-upload=false``) and, to verify, ``--insecure-ignore-tlog``. Keyless signing (an OIDC token in
CI) is handed to cosign as cosign expects it: Fulcio and Rekor are then cosign's business.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from multibake.errors import UsageError
from multibake.failures import Kind, classify, first_line

BINARY_ENV = "MULTIBAKE_COSIGN"
PASSWORD_ENV = "COSIGN_PASSWORD"
# The oldest cosign multibake is tested with: 2.6 takes `--registry-cacert` (a registry with a CA of its own,
# as docker's certs.d holds one), besides `--tlog-upload=false`, `--insecure-ignore-tlog` and several images
# per `sign`.
MINIMUM = (2, 6, 0)
TIMEOUT = 300.0  # seconds one cosign run may take (it signs a cell's images in one run)
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")

Runner = Callable[[Sequence[str], Mapping[str, str]], "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Signer:
    """How to sign and verify: a key (file, env://VAR or a KMS URI) or keyless, and the public key."""

    key: str | None = None
    keyless: bool = False
    pub: str | None = None  # verify with this public key; default: the key's public half (KMS, env)
    identity: str | None = None  # keyless verify: the certificate's identity (a regexp)
    issuer: str | None = None  # keyless verify: the OIDC issuer (a regexp)


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """How one cosign run ended."""

    ok: bool
    transient: bool = False  # a registry failure worth another attempt (5xx, 429, resets, timeouts)
    reason: str = ""  # one line, the password scrubbed
    stdout: str = ""


def binary(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(BINARY_ENV) or "cosign"


@dataclass(frozen=True, kw_only=True, slots=True)
class Reach:
    """How cosign reaches the registry: as multibake's own client does (registry/connect.py)."""

    plain_http: bool = False  # only registries on this machine without a CA of their own
    cacert: str | None = None  # the registry's own CA (docker's certs.d/HOST/ca.crt)


def registry_flags(reach: Reach) -> list[str]:
    # cosign refuses plain HTTP unless told; multibake allows it where its own client does (this machine)
    flags = ["--allow-http-registry"] if reach.plain_http else []
    return [*flags, "--registry-cacert", reach.cacert] if reach.cacert else flags


def sign_argv(signer: Signer, images: Sequence[str], reach: Reach, cosign: str = "cosign") -> list[str]:
    """``cosign sign`` of ``images`` (each ``repo@sha256:…``) in one run: the key is decrypted once."""
    argv = [cosign, "sign", "--yes", *registry_flags(reach)]
    if signer.keyless:
        # cosign finds the OIDC token itself ($SIGSTORE_ID_TOKEN, or the CI provider's), uses Fulcio and Rekor
        return [*argv, *images]
    assert signer.key is not None
    return [*argv, "--key", signer.key, "--tlog-upload=false", *images]


def verify_argv(signer: Signer, image: str, reach: Reach, cosign: str = "cosign") -> list[str]:
    """``cosign verify`` of one image by digest (cosign verifies no index recursively)."""
    argv = [cosign, "verify", "--output", "json", *registry_flags(reach)]
    if signer.keyless:
        identity = ["--certificate-identity-regexp", signer.identity or ".*"]
        issuer = ["--certificate-oidc-issuer-regexp", signer.issuer or ".*"]
        return [*argv, *identity, *issuer, image]
    key = signer.pub or signer.key
    assert key is not None
    return [*argv, "--key", key, "--insecure-ignore-tlog=true", image]


def parse_version(text: str) -> tuple[int, int, int] | None:
    """The version ``cosign version --json`` (or its text) reports; None when it says none."""
    try:
        said = str(json.loads(text).get("gitVersion", ""))
    except (ValueError, AttributeError):
        said = text
    m = _VERSION.search(said)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def scrub(text: str, environ: Mapping[str, str]) -> str:
    """``text`` with the key's password masked, should cosign ever repeat it."""
    secret = environ.get(PASSWORD_ENV, "")
    return text.replace(secret, "***") if secret else text


def run(argv: Sequence[str], environ: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run cosign with ``environ``; its stdin closed (no password prompt), its output captured."""
    try:
        return subprocess.run(
            list(argv),
            env=dict(environ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(argv), 124, "", f"error: timed out after {TIMEOUT:g} s")
    except OSError as exc:
        return subprocess.CompletedProcess(list(argv), 127, "", f"error: cannot run {argv[0]}: {exc.strerror}")


def outcome(done: subprocess.CompletedProcess[str], environ: Mapping[str, str]) -> Outcome:
    """Read a finished cosign run: ok, or why not and whether another attempt may help."""
    if done.returncode == 0:
        return Outcome(ok=True, stdout=done.stdout)
    said = (
        scrub(first_line(done.stderr or done.stdout), environ)
        .removeprefix("error during command execution: ")
        .removeprefix("Error: ")
    )
    if _NO_TTY in said:
        said = f"{said} (the key is encrypted: set ${PASSWORD_ENV})"
    failure = classify(scrub(done.stderr or done.stdout, environ))
    # cosign's own problems (a key it cannot decrypt, a signature that does not verify) are never transient
    return Outcome(ok=False, transient=failure.kind is Kind.TRANSIENT and not _KEY_PROBLEM.search(said), reason=said)


_KEY_PROBLEM = re.compile(
    r"decrypt|password|no such file|reading key|invalid signature|no signatures found|no matching signatures", re.I
)
_NO_TTY = "inappropriate ioctl for device"  # cosign asked a terminal for the key's password: there is none


def check_version(runner: Runner, environ: Mapping[str, str], what: str) -> str:
    """The version of the cosign in use; a UsageError (exit 2) naming the fix when it is missing or too old."""
    cosign = binary(environ)
    done = runner([cosign, "version", "--json"], environ)
    need = ".".join(map(str, MINIMUM))
    fix = f"install cosign >= {need} (scripts/setup-stack.sh --with cosign builds one), or set ${BINARY_ENV}"
    if done.returncode != 0:
        raise UsageError(f"{what} needs cosign, and `{cosign} version` failed: {first_line(done.stderr)}\n  {fix}")
    found = parse_version(done.stdout) or parse_version(done.stderr)
    if found is None:
        return "unknown"  # a development build says no version: let it try
    shown = ".".join(map(str, found))
    if found < MINIMUM:
        raise UsageError(f"{what} needs cosign >= {need}, {cosign} is {shown}\n  {fix}")
    if found[0] > MINIMUM[0]:
        # cosign 3 replaced --tlog-upload with signing configs and stores bundles as OCI referrers:
        # multibake drives cosign 2 only, until it is tested with 3
        raise UsageError(f"{what}: {cosign} is {shown}; multibake drives cosign 2 (>= {need})\n  {fix}")
    return shown
