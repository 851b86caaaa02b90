"""cosign's argv, its version check and how its failures read: no cosign runs here."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

import pytest

from multibake import cosign
from multibake.errors import UsageError

INDEX = "127.0.0.1:5000/ns/app@sha256:" + "a" * 64
ARM = "127.0.0.1:5000/ns/app@sha256:" + "b" * 64


def test_sign_with_a_key_writes_no_transparency_log_entry_and_names_images_by_digest() -> None:
    argv = cosign.sign_argv(cosign.Signer(key="cosign.key"), [INDEX, ARM], cosign.Reach(plain_http=True))
    assert argv == [
        "cosign",
        "sign",
        "--yes",
        "--allow-http-registry",
        "--key",
        "cosign.key",
        "--tlog-upload=false",
        INDEX,
        ARM,
    ]


def test_kms_and_env_keys_are_passed_to_cosign_untouched() -> None:
    for key in (
        "awskms:///arn:aws:kms:eu-west-1:1:key/2",
        "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k",
        "env://K",
    ):
        argv = cosign.sign_argv(cosign.Signer(key=key), [INDEX], cosign.Reach())
        assert argv[argv.index("--key") + 1] == key
        assert "--allow-http-registry" not in argv


def test_keyless_sign_leaves_fulcio_rekor_and_the_token_to_cosign() -> None:
    argv = cosign.sign_argv(cosign.Signer(keyless=True), [INDEX], cosign.Reach())
    assert argv == ["cosign", "sign", "--yes", INDEX]


def test_keyless_verify_checks_identity_and_issuer() -> None:
    signer = cosign.Signer(keyless=True, identity="^https://github.com/org/", issuer="^https://token.actions")
    argv = cosign.verify_argv(signer, INDEX, cosign.Reach())
    assert argv[argv.index("--certificate-identity-regexp") + 1] == "^https://github.com/org/"
    assert argv[argv.index("--certificate-oidc-issuer-regexp") + 1] == "^https://token.actions"
    assert "--key" not in argv and argv[-1] == INDEX


def test_verify_uses_the_public_key_and_ignores_the_transparency_log() -> None:
    argv = cosign.verify_argv(cosign.Signer(key="cosign.key", pub="cosign.pub"), ARM, cosign.Reach(plain_http=True))
    assert argv[argv.index("--key") + 1] == "cosign.pub"
    assert "--insecure-ignore-tlog=true" in argv and argv[-1] == ARM


def test_the_password_is_never_in_an_argv_and_is_scrubbed_from_what_cosign_says() -> None:
    env = {cosign.PASSWORD_ENV: "hunter2-pass"}
    argv = cosign.sign_argv(cosign.Signer(key="cosign.key"), [INDEX], cosign.Reach(plain_http=True))
    assert not any("hunter2" in a for a in argv)
    done = subprocess.CompletedProcess(argv, 1, "", "Error: signing: decrypt hunter2-pass failed\n")
    said = cosign.outcome(done, env)
    assert not said.ok and not said.transient and "hunter2" not in said.reason


def _done(code: int, stderr: str = "", stdout: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(["cosign"], code, stdout, stderr)


@pytest.mark.parametrize(
    ("stderr", "transient"),
    [
        ("Error: signing [x]: PUT https://r/v2/x/manifests/sha256-1.sig: unexpected status code 500", True),
        ('Error: writing: Get "http://127.0.0.1:5001/v2/": read tcp: connection reset by peer', True),
        ("Error: 429 Too Many Requests", True),
        ("Error: signing: getting signer: reading key: decrypt: encrypted: decryption failed", False),
        ("Error: DENIED: requested access to the resource is denied", False),
        ("Error: no matching signatures: invalid signature when validating ASN.1 encoded signature", False),
    ],
)
def test_registry_failures_are_transient_and_key_problems_are_not(stderr: str, transient: bool) -> None:
    said = cosign.outcome(_done(1, stderr), {})
    assert not said.ok and said.transient is transient


def _runner(stdout: str, code: int = 0) -> cosign.Runner:
    def run(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
        assert list(argv)[1:] == ["version", "--json"]
        return _done(code, "cosign: not found" if code else "", stdout)

    return run


def test_version_check_accepts_cosign_2_from_the_minimum_and_refuses_3() -> None:
    assert cosign.check_version(_runner('{"gitVersion": "v2.6.5"}'), {}, "sign:") == "2.6.5"
    with pytest.raises(UsageError, match=r"cosign is 3\.1\.3; multibake drives cosign 2"):
        cosign.check_version(_runner('{"gitVersion": "v3.1.3"}'), {}, "sign:")


def test_version_check_refuses_an_old_or_missing_cosign_with_the_fix() -> None:
    with pytest.raises(UsageError, match=r"cosign >= 2\.6\.0, cosign is 2\.2\.4") as old:
        cosign.check_version(_runner('{"gitVersion": "v2.2.4"}'), {}, "sign:")
    assert "--with cosign" in str(old.value)
    with pytest.raises(UsageError, match="needs cosign"):
        cosign.check_version(_runner("", code=127), {}, "sign:")


def test_a_registry_with_its_own_ca_is_reached_with_it() -> None:
    argv = cosign.sign_argv(cosign.Signer(key="k"), [INDEX], cosign.Reach(cacert="certs.d/r/ca.crt"))
    assert argv[argv.index("--registry-cacert") + 1] == "certs.d/r/ca.crt"


def test_no_terminal_for_a_password_says_to_set_it() -> None:
    said = cosign.outcome(
        _done(1, "Error: signing [x]: getting signer: reading key: inappropriate ioctl for device"), {}
    )
    assert "COSIGN_PASSWORD" in said.reason and not said.transient


def test_the_binary_can_be_named_by_environment() -> None:
    assert cosign.binary({cosign.BINARY_ENV: "/opt/cosign"}) == "/opt/cosign"
    assert cosign.binary({}) == "cosign"
