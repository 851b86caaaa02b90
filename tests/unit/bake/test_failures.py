"""Classifying buildx failures and following BuildKit's progress: pure functions over real output lines."""

from __future__ import annotations

import pytest

from multibake.bake import invocation
from multibake.failures import Kind, Steps, classify

TRANSIENT = [
    # BuildKit in dockerd 28 names containerd's error class, not the status
    "ERROR: target app: failed to solve: failed to push r/app:staging: unavailable: service unavailable",
    "ERROR: failed to push r/app:staging: resource exhausted: too many requests",
    "ERROR: failed to push r/app:1: unexpected status from PUT request to http://r/v2/app/manifests/1: "
    "503 Service Unavailable",
    "ERROR: unexpected status from HEAD request to http://127.0.0.1:5000/v2/b/manifests/latest: 500 Internal "
    "Server Error",
    "ERROR: failed to push: 429 Too Many Requests",
    "ERROR: failed to do request: Put http://r/v2/x/blobs/uploads/1: read: connection reset by peer",
    "ERROR: failed to copy: unexpected EOF",
    "ERROR: failed to do request: Head https://r/v2/: EOF",
    "ERROR: failed to do request: dial tcp 10.0.0.1:443: i/o timeout",
    "ERROR: blob upload unknown to registry",
    "ERROR: failed to do request: dial tcp: lookup r.example.com: Temporary failure in name resolution",
    "ERROR: failed to push: 502 Bad Gateway",
]
PERMANENT = [
    "ERROR: failed to push r/app:1: unexpected status: 401 Unauthorized",
    "ERROR: failed to push r/app:1: 403 Forbidden",
    'ERROR: failed to solve: process "/bin/sh -c false" did not complete successfully: exit code: 1',
    "ERROR: failed to solve: dockerfile parse error on line 3: unknown instruction: RUNN",
    "ERROR: failed to solve: busybox:none: failed to resolve source metadata for docker.io/library/busybox:none: "
    "dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host",
    "ERROR: failed to solve: alpine:9.99: not found",
    # a RUN step failing over a flaky network is the build's failure, not the registry's
    'ERROR: failed to solve: process "/bin/sh -c apt-get update" did not complete successfully: '
    "exit code: 100 (connection reset by peer)",
]


@pytest.mark.parametrize("line", TRANSIENT)
def test_transient_registry_failures_are_retried(line: str) -> None:
    assert classify(f"#1 [internal] load\n{line}\n").kind is Kind.TRANSIENT


@pytest.mark.parametrize("line", PERMANENT)
def test_permanent_failures_fail_at_once(line: str) -> None:
    assert classify(f"{line}\n").kind is Kind.PERMANENT


def test_a_cold_cache_import_is_not_the_failure() -> None:
    out = (
        "#6 ERROR: failed to configure registry cache importer: r/buildcache:app: not found\n"
        "ERROR: failed to push r/app:1: 503 Service Unavailable\n"
    )
    failure = classify(out)
    assert failure.kind is Kind.TRANSIENT
    assert "503" in failure.reason


LOG = """\
#5 [app-broken linux/amd64 1/2] RUN test "broken" != "broken"
#5 ERROR: process "/bin/sh -c test" did not complete successfully: exit code: 1
#6 [app-good linux/amd64 1/2] RUN echo good > /v
#6 CACHED
#7 [app-fine linux/arm64 1/2] RUN echo fine > /v
#7 0.213 fine
#7 DONE 0.4s
#8 [bb internal] load build definition from Dockerfile
#8 DONE 0.0s
#9 ERROR: failed to configure registry cache importer: r/buildcache:bb: not found
"""


def test_steps_know_which_target_failed_and_which_runs_executed() -> None:
    steps = Steps({"app-broken", "app-good", "app-fine", "bb"})
    targets = [steps.feed(line) for line in LOG.splitlines()]
    assert targets[0] == "app-broken"
    assert steps.failed_targets() == {"app-broken"}
    assert [h.split()[1] for h in steps.executed_runs()] == ["[app-broken", "[app-fine"]
    assert steps.tail("app-fine") == LOG.splitlines()[4:7]
    assert classify(LOG, steps.known_targets).targets == ("app-broken",)


PUSH_LOG = f"""\
#40 [app-1_0 linux/arm64 1/1] RUN echo hi
#40 DONE 0.3s
#41 [app-1_0] exporting to image
#41 pushing manifest for 127.0.0.1:5000/ns/app:multibake-staging-app-1_0@sha256:{"a" * 64}
#41 pushing manifest for 127.0.0.1:5000/ns/app:multibake-staging-app-1_0@sha256:{"a" * 64} 0.1s done
#41 DONE 0.8s
#42 [app-2_0] exporting to image
#42 pushing manifest for 127.0.0.1:5000/ns/app:multibake-staging-app-2_0@sha256:{"b" * 64}
#44 [app-3_0] exporting to image
#44 pushing manifest for 127.0.0.1:5000/ns/app:multibake-staging-app-3_0@sha256:{"c" * 64} 7.2s done
#44 ERROR: failed to push 127.0.0.1:5000/ns/app:multibake-staging-app-3_0: unexpected status: 503
#43 [app-1_0] pushing 127.0.0.1:5000/ns/app:multibake-staging-app-1_0 with docker
#43 ERROR: unexpected status from HEAD request to http://127.0.0.1:5000/v2/ns/app/manifests/x: 500
"""


def test_steps_know_which_targets_buildkit_pushed_and_pin_them_by_digest() -> None:
    steps = Steps({"app-1_0", "app-2_0", "app-3_0"})
    for line in PUSH_LOG.splitlines():
        steps.feed(line)
    # app-2_0's push never finished; app-3_0's says "done" but its step failed (BuildKit prints the
    # ERROR after it); dockerd's failed second push does not undo app-1_0's
    assert steps.pushed == {"app-1_0": "127.0.0.1:5000/ns/app@sha256:" + "a" * 64}
    assert classify(PUSH_LOG).kind is Kind.TRANSIENT


def test_secret_looking_set_values_are_redacted_in_the_shown_command() -> None:
    from pathlib import Path

    from tests.helpers import SHIPPED_CONFIG, plan_file

    p = plan_file(SHIPPED_CONFIG)
    req = invocation.Request(
        bake_file=Path("/x/docker-bake.hcl"), root=Path("/x"), sets={"*.args.NPM_TOKEN": "s3cr3t", "*.args.A": "1"}
    )
    argv = " ".join(invocation.command_line(p, req, ["t"]))
    assert "s3cr3t" not in argv and "*.args.NPM_TOKEN=***" in argv and "*.args.A=1" in argv


def test_a_lost_snapshot_is_a_stale_cache_not_a_build_failure() -> None:
    line = (
        "#22 ERROR: failed to commit px8xpemb3 to mh8glp1bs during finalize: failed to stat active key during "
        "commit: snapshot px8xpemb3 does not exist: not found"
    )
    assert classify(line + "\nERROR: failed to solve: " + line[11:]).kind is Kind.STALE_CACHE
