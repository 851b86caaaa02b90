"""Registry references, credentials lookup and failure classification (no network, no docker)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import stat
from pathlib import Path

import pytest

from multibake.registry import connect
from multibake.registry import errors as rerrors
from multibake.registry.connect import Ref


@pytest.mark.parametrize(
    ("ref", "want"),
    [
        ("127.0.0.1:5000/multibake/app:1.0-slim", Ref("127.0.0.1:5000", "multibake/app", "1.0-slim")),
        ("localhost/app", Ref("localhost", "app", "latest")),
        ("ghcr.io/acme/base@sha256:" + "a" * 64, Ref("ghcr.io", "acme/base", "sha256:" + "a" * 64)),
        ("registry.example:5000/a/b/c:3.20-3.2.0.2-armv7", Ref("registry.example:5000", "a/b/c", "3.20-3.2.0.2-armv7")),
        ("alpine:3.20", Ref("docker.io", "library/alpine", "3.20")),
        ("acme/app:1", Ref("docker.io", "acme/app", "1")),
        ("docker.io/acme/app", Ref("docker.io", "acme/app", "latest")),
    ],
)
def test_parse_follows_dockers_rules_for_the_host_part(ref: str, want: Ref) -> None:
    assert connect.parse(ref) == want


def test_docker_hub_is_reached_through_its_api_host() -> None:
    assert connect.parse("alpine").api_host == "registry-1.docker.io"
    assert connect.parse("127.0.0.1:5000/x").api_host == "127.0.0.1:5000"


@pytest.mark.parametrize(
    ("host", "plain"), [("127.0.0.1:5000", True), ("localhost:5000", True), ("ghcr.io", False), ("docker.io", False)]
)
def test_plain_http_only_on_this_machine(host: str, plain: bool) -> None:
    assert connect.plain_http(host) is plain


def test_a_registrys_own_ca_comes_first_as_docker_does(tmp_path: Path) -> None:
    (tmp_path / "registry.example:5000").mkdir()
    (tmp_path / "registry.example:5000" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    assert connect.ca_bundle("registry.example:5000", tmp_path) == str(tmp_path / "registry.example:5000" / "ca.crt")
    assert connect.ca_bundle("ghcr.io", tmp_path) is None  # the system's trust store


def _config(folder: Path, doc: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(doc), encoding="utf-8")
    return folder


def test_credentials_from_auths(tmp_path: Path) -> None:
    token = base64.b64encode(b"robot:s3cr:et").decode()
    folder = _config(tmp_path, {"auths": {"ghcr.io": {"auth": token}, "https://index.docker.io/v1/": {"auth": token}}})
    assert connect.credentials("ghcr.io", folder) == ("robot", "s3cr:et")
    assert connect.credentials("docker.io", folder) == ("robot", "s3cr:et")
    assert connect.credentials("quay.io", folder) is None
    legacy = _config(tmp_path / "legacy", {"auths": {"https://registry.example:5000/v1/": {"auth": token}}})
    assert connect.credentials("registry.example:5000", legacy) == ("robot", "s3cr:et")


def test_credentials_from_a_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper = tmp_path / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread host\necho "{\\"Username\\": \\"u-$host\\", \\"Secret\\": \\"pw\\"}"\n')
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    folder = _config(tmp_path / "cfg", {"credHelpers": {"ghcr.io": "fake"}, "auths": {"ghcr.io": {"auth": "eDp5"}}})
    assert connect.credentials("ghcr.io", folder) == ("u-ghcr.io", "pw")


def test_no_config_means_anonymous(tmp_path: Path) -> None:
    assert connect.credentials("ghcr.io", tmp_path) is None


def _http_error(status: int, text: str = "", **headers: str) -> rerrors.HttpStatus:
    message = http.client.HTTPMessage()
    for name, value in headers.items():
        message[name] = value
    return rerrors.HttpStatus(status, message, text.encode())


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (_http_error(500, '{"errors":[{"code":"UNKNOWN"}]}'), True),
        (_http_error(503), True),
        (_http_error(429), True),
        (rerrors.Dropped("ConnectionResetError"), True),
        (rerrors.TimedOut("timed out"), True),
        (rerrors.Unreachable("gaierror"), True),
        (rerrors.Dropped("IncompleteRead"), True),
        (_http_error(403, "denied"), False),
        (_http_error(400, "manifest invalid"), False),
        (_http_error(401), False),
        (rerrors.Untrusted("certificate verify failed: self-signed certificate"), False),
        (rerrors.InsecureAuth("plain HTTP"), False),
    ],
)
def test_failures_are_classified_once(exc: Exception, transient: bool) -> None:
    failure = rerrors.failure_of("writing 127.0.0.1:5000/x:1", exc)
    assert failure.transient is transient
    assert str(failure).startswith("writing 127.0.0.1:5000/x:1: ")


@pytest.mark.parametrize(
    ("header", "wait"), [("7", 7.0), ("0.5", 0.5), ("Wed, 21 Oct 2026 07:28:00 GMT", 0.0), (None, 0.0)]
)
def test_a_429_keeps_the_wait_its_retry_after_asks(header: str | None, wait: float) -> None:
    exc = _http_error(429, **({"Retry-After": header} if header is not None else {}))
    failure = rerrors.failure_of("reading 127.0.0.1:5000/x:1", exc)
    assert failure.transient and failure.retry_after == wait


def test_a_registry_error_body_is_said_in_a_few_words() -> None:
    body = '{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{}}]}'
    assert str(rerrors.failure_of("listing the tags of x", _http_error(404, body))) == (
        "listing the tags of x: HTTP 404 NAME_UNKNOWN: repository name not known to registry"
    )
    assert str(rerrors.failure_of("reading x", _http_error(502, "<html>bad gateway\n</html>"))) == (
        "reading x: HTTP 502 <html>bad gateway"
    )


def test_a_failure_message_never_carries_credentials() -> None:
    failure = rerrors.failure_of("reading ghcr.io/acme/app:1", _http_error(401))
    assert "401" in str(failure) and "Authorization" not in str(failure)
