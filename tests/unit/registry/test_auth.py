"""Credentials from the environment: which host they are for, the private DOCKER_CONFIG, docker login."""

from __future__ import annotations

import http.client
import json
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from multibake.errors import EXIT_FAILED, EXIT_USAGE, BuildError, UsageError
from multibake.registry import auth, connect
from multibake.registry import client as registry
from multibake.registry import errors as rerrors
from multibake.registry.auth import PASSWORD_ENV, USER_ENV, Login

SECRET = "pa55:word-that-must-not-show"


@pytest.mark.parametrize(
    ("namespace", "host"),
    [
        ("127.0.0.1:5000/multibake", "127.0.0.1:5000"),
        ("registry.example:5443", "registry.example:5443"),
        ("ghcr.io/acme/images", "ghcr.io"),
        ("localhost/x", "localhost"),
        ("acme", "docker.io"),
        ("docker.io/acme", "docker.io"),
    ],
)
def test_the_credentials_are_for_the_registrys_host(namespace: str, host: str) -> None:
    login = auth.from_env(namespace, {USER_ENV: "ci", PASSWORD_ENV: SECRET})
    assert login == Login(host=host, user="ci", password=SECRET)
    assert SECRET not in repr(login)


def test_no_credentials_in_the_environment() -> None:
    assert auth.from_env("ghcr.io/acme", {}) is None


@pytest.mark.parametrize("given", [{USER_ENV: "ci"}, {PASSWORD_ENV: SECRET}])
def test_half_the_credentials_is_a_usage_error(given: dict[str, str]) -> None:
    with pytest.raises(UsageError) as err:
        auth.from_env("ghcr.io/acme", given)
    assert err.value.exit_code == EXIT_USAGE
    assert "set both $MULTIBAKE_REGISTRY_USER and $MULTIBAKE_REGISTRY_PASSWORD" in str(err.value)
    assert SECRET not in str(err.value)


def _user_dir(tmp_path: Path) -> Path:
    user = tmp_path / "home" / ".docker"
    (user / "cli-plugins").mkdir(parents=True)
    (user / "contexts").mkdir()
    doc = {
        "credsStore": "desktop",
        "credHelpers": {"gcr.io": "gcloud"},
        "auths": {"ghcr.io": {"auth": "b2xkOm9sZA=="}, "quay.io": {"auth": "eDp5"}},
        "currentContext": "remote",
    }
    (user / "config.json").write_text(json.dumps(doc))
    return user


def test_the_private_config_keeps_the_users_state_but_not_its_keychain(tmp_path: Path) -> None:
    user = _user_dir(tmp_path)
    folder = tmp_path / "private"
    folder.mkdir()
    auth.private_config(user, folder, "ghcr.io")
    # builders (made now when missing: ones created during the run must outlive it), plugins, contexts
    assert (user / "buildx").is_dir()
    for name in ("buildx", "cli-plugins", "contexts"):
        assert (folder / name).is_symlink() and (folder / name).resolve() == (user / name).resolve()
    doc = json.loads((folder / "config.json").read_text())
    assert doc["credHelpers"] == {"gcr.io": "gcloud", "ghcr.io": ""}  # "": the file, not the keychain
    assert doc["credsStore"] == "desktop" and doc["currentContext"] == "remote"  # other hosts as before
    assert doc["auths"] == {"quay.io": {"auth": "eDp5"}}
    assert stat.S_IMODE((folder / "config.json").stat().st_mode) == 0o600
    assert json.loads((user / "config.json").read_text())["auths"]["ghcr.io"] == {"auth": "b2xkOm9sZA=="}


def test_docker_hub_credentials_go_under_dockers_key(tmp_path: Path) -> None:
    folder = tmp_path / "private"
    folder.mkdir()
    auth.private_config(tmp_path / "nothing-yet", folder, "docker.io")
    assert json.loads((folder / "config.json").read_text())["credHelpers"] == {"https://index.docker.io/v1/": ""}


def test_the_private_config_is_removed_when_the_run_ends(tmp_path: Path) -> None:
    user = _user_dir(tmp_path)
    login = Login(host="ghcr.io", user="ci", password=SECRET)
    with pytest.raises(RuntimeError), auth.docker_config(login, {"DOCKER_CONFIG": str(user)}) as folder:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        raise RuntimeError("the build failed")
    assert not folder.exists()
    assert (user / "buildx").is_dir() and (user / "config.json").is_file()


class Runs:
    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.returncode, self.stderr = returncode, stderr
        self.calls: list[tuple[list[str], str]] = []

    def __call__(self, argv: Sequence[str], stdin: str) -> subprocess.CompletedProcess[str]:
        self.calls.append((list(argv), stdin))
        return subprocess.CompletedProcess(list(argv), self.returncode, "", self.stderr)


def test_the_password_goes_to_docker_on_stdin_only() -> None:
    runs = Runs()
    auth.docker_login(runs, ["docker", "--config", "/tmp/x"], Login(host="ghcr.io", user="ci", password=SECRET))
    [(argv, stdin)] = runs.calls
    assert argv == ["docker", "--config", "/tmp/x", "login", "--username", "ci", "--password-stdin", "ghcr.io"]
    assert stdin == SECRET + "\n"
    hub = Runs()
    auth.docker_login(hub, ["docker"], Login(host="docker.io", user="ci", password=SECRET))
    assert hub.calls[0][0][-1] == "--password-stdin"  # docker's default registry: no server argument


def test_a_refused_login_fails_naming_the_registry_and_never_the_password() -> None:
    said = f"Error response from daemon: login attempt to https://ghcr.io/v2/ failed with status: 401 ({SECRET})"
    with pytest.raises(BuildError) as err:
        auth.docker_login(Runs(1, said), ["docker"], Login(host="ghcr.io", user="ci", password=SECRET))
    message = str(err.value)
    assert err.value.exit_code == EXIT_FAILED
    assert message.startswith("registry ghcr.io: docker login as ci") and "401" in message
    assert SECRET not in message and "***" in message


def test_the_registry_client_takes_the_login_for_its_host_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    login = Login(host="ghcr.io", user="ci", password=SECRET)
    assert connect.credentials_for("ghcr.io", login) == ("ci", SECRET)
    assert connect.credentials_for("quay.io", login) is None  # docker's config: empty here
    assert registry.Http(login=login).with_timeout(5).login == login


def test_an_empty_credential_helper_means_the_file_as_docker_reads_it(tmp_path: Path) -> None:
    doc = {"credsStore": "no-such-helper", "credHelpers": {"ghcr.io": ""}, "auths": {"ghcr.io": {"auth": "Y2k6cHc="}}}
    (tmp_path / "config.json").write_text(json.dumps(doc))
    assert connect.credentials("ghcr.io", tmp_path) == ("ci", "pw")


def test_a_loopback_registry_is_reached_over_tls_when_docker_has_its_ca(tmp_path: Path) -> None:
    assert connect.plain_http("127.0.0.1:5443", tmp_path)
    (tmp_path / "127.0.0.1:5443").mkdir()
    (tmp_path / "127.0.0.1:5443" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    assert not connect.plain_http("127.0.0.1:5443", tmp_path)


def _http_error(status: int, text: str) -> rerrors.HttpStatus:
    return rerrors.HttpStatus(status, http.client.HTTPMessage(), text.encode())


@pytest.mark.parametrize(
    ("exc", "said"),
    [
        (_http_error(401, '{"errors":[{"code":"UNAUTHORIZED"}]}'), "401 unauthorized"),
        (
            rerrors.Untrusted("certificate verify failed: unable to get local issuer certificate"),
            "TLS certificate is not trusted (certificate verify failed: unable to get local issuer certificate",
        ),
        (rerrors.InsecureAuth("plain HTTP"), "multibake sends them only over TLS"),
    ],
)
def test_refused_credentials_and_untrusted_certificates_are_not_retried(exc: Exception, said: str) -> None:
    failure = rerrors.failure_of("reading 10.0.0.1:5443/x:1", exc)
    assert failure.transient is False
    assert str(failure).startswith("reading 10.0.0.1:5443/x:1: ") and said in str(failure)


def test_a_credential_helper_that_cannot_run_is_said_not_skipped(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "mb-no-such-helper"}))
    with pytest.raises(rerrors.RegistryError) as err:
        connect.credentials("ghcr.io", tmp_path)
    assert err.value.transient is False
    assert "docker-credential-mb-no-such-helper" in str(err.value) and "cannot run" in str(err.value)
