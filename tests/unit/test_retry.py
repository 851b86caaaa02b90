"""The one retry rule, through the registry calls a release makes (an in-memory registry, no network)."""

from __future__ import annotations

import pytest

from multibake.config.schema import Retry
from multibake.errors import BuildError
from multibake.registry.client import Registry
from multibake.registry.errors import RegistryError
from multibake.retry import FLOOR, Budget, RetryPolicy
from tests.unit.fakes import FakeRegistry

REF = "127.0.0.1:5000/t/app:1"


def _registry(fake: FakeRegistry, attempts: int, sleeps: list[float], said: list[str]) -> Registry:
    limits = Retry(attempts=attempts, initial_delay=1.0, max_delay=3.0)
    return Registry(policy=RetryPolicy(limits=limits, sleep=sleeps.append, echo=said.append), api=fake)


def test_retries_back_off_exponentially_within_bounds_then_give_up() -> None:
    sleeps: list[float] = []
    said: list[str] = []
    fake = FakeRegistry(fail_next=[RegistryError(f"reading {REF}: HTTP 503", transient=True) for _ in range(5)])
    with pytest.raises(BuildError, match="still failing after 5 attempts") as info:
        _registry(fake, 5, sleeps, said).manifest(REF)
    assert fake.fail_next == []
    assert len(sleeps) == 4 and all(0 < s <= 3.0 for s in sleeps)
    assert sleeps[0] <= 1.0, "the first wait is at most initial_delay"
    assert len(said) == 4 and "transient failure" in said[0] and "retry 1/4" in said[0]
    assert isinstance(info.value.__cause__, Exception), "the last failure is kept as the cause"


def test_a_permanent_failure_is_not_retried() -> None:
    sleeps: list[float] = []
    fake = FakeRegistry(fail_next=[RegistryError(f"writing {REF}: HTTP 403 denied", transient=False)])
    with pytest.raises(BuildError, match="403"):
        _registry(fake, 5, sleeps, []).manifest(REF)
    assert sleeps == []


def test_a_transient_failure_then_success_returns_the_result() -> None:
    fake = FakeRegistry(fail_next=[RegistryError("HTTP 502", transient=True)])
    fake.publish(REF, ["linux/amd64"])
    held = _registry(fake, 3, [], []).manifest(REF)
    assert held is not None and held.is_index and list(held.entries()) == ["linux/amd64"]


def test_writes_keep_the_bytes_unless_annotated() -> None:
    fake = FakeRegistry()
    fake.publish(REF, ["linux/amd64", "linux/arm64"])
    reg = _registry(fake, 1, [], [])
    held = reg.manifest(REF)
    assert held is not None
    reg.write(held, ["127.0.0.1:5000/t/app:same"])
    reg.write(held, ["127.0.0.1:5000/t/app:noted"], annotations={"org.opencontainers.image.description": "x"})
    same, noted = reg.manifest("127.0.0.1:5000/t/app:same"), reg.manifest("127.0.0.1:5000/t/app:noted")
    assert same is not None and same.digest == held.digest
    assert noted is not None and noted.doc["annotations"] == {"org.opencontainers.image.description": "x"}


def test_images_merge_into_one_index_pushed_by_digest_and_the_same_sources_give_the_same_digest() -> None:
    fake = FakeRegistry()
    repo = "127.0.0.1:5000/t/app"
    amd = fake.image(f"{repo}:piece-amd64", "linux/amd64")
    arm = fake.index(f"{repo}:piece-arm", {"linux/arm/v7": fake.image(f"{repo}:x", "linux/arm/v7")})
    reg = _registry(fake, 1, [], [])
    tags_before = {key for key in fake.manifests if not key[1].startswith("sha256:")}
    merged = reg.merge([f"{repo}@{amd}", f"{repo}:piece-arm"])
    assert merged.is_index and set(merged.entries()) == {"linux/amd64", "linux/arm/v7"}
    assert merged.entries()["linux/amd64"] == amd
    assert fake.held(f"{repo}@{merged.digest}") == merged.doc, "pushed by its digest"
    assert {key for key in fake.manifests if not key[1].startswith("sha256:")} == tags_before, "no tag written"
    assert reg.merge([f"{repo}@{amd}", f"{repo}:piece-arm"]).digest == merged.digest
    assert arm != merged.digest


def test_merging_images_of_two_repositories_is_refused() -> None:
    with pytest.raises(BuildError, match="several repositories"):
        _registry(FakeRegistry(), 1, [], []).merge(["127.0.0.1:5000/a@sha256:1", "127.0.0.1:5000/b@sha256:2"])


def test_a_retry_after_is_waited_for_within_max_delay() -> None:
    sleeps: list[float] = []
    fake = FakeRegistry(
        fail_next=[
            RegistryError(f"reading {REF}: HTTP 429", transient=True, retry_after=2.5),
            RegistryError(f"reading {REF}: HTTP 429", transient=True, retry_after=600),
        ]
    )
    _registry(fake, 3, sleeps, []).manifest(REF)
    assert sleeps[0] >= 2.5, "at least what the registry asked for"
    assert sleeps[1] == 3.0, "never past max_delay, whatever the registry asks"


def test_a_registry_given_up_on_is_not_tried_again_by_the_same_release() -> None:
    sleeps: list[float] = []
    fake = FakeRegistry(fail_next=[RegistryError(f"reading {REF}: HTTP 503", transient=True) for _ in range(3)])
    reg = _registry(fake, 3, sleeps, [])
    with pytest.raises(BuildError, match="still failing after 3 attempts"):
        reg.manifest(REF)
    with pytest.raises(BuildError, match=r"not tried, registry 127\.0\.0\.1:5000 was still failing after 3 attempts"):
        reg.manifest("127.0.0.1:5000/t/other:2")
    assert len(sleeps) == 2, "one retry budget for the host, not one per reference"
    assert reg.manifest("127.0.0.2:5000/t/app:1") is None, "other registries are still asked"


class Clock:
    """A clock that the injected sleep moves forward: retries take no real time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _windowed(fake: FakeRegistry, clock: Clock, said: list[str], per_request: float = 30.0) -> Registry:
    limits = Retry(attempts=3, initial_delay=1.0, max_delay=4.0, per_request=per_request)
    policy = RetryPolicy(limits=limits, sleep=clock.sleep, echo=said.append)
    return Registry(policy=policy, api=fake, budget=Budget(clock=clock))


class Flaky(FakeRegistry):
    """Fails every read of one reference; every other reference answers."""

    def __init__(self, bad: str, failures: int) -> None:
        super().__init__()
        self.bad = bad
        self.failures = failures

    def get_manifest(self, ref: str) -> tuple[bytes, str] | None:
        if ref == self.bad and self.failures:
            self.failures -= 1
            raise RegistryError(f"reading {ref}: HTTP 503", transient=True)
        return super().get_manifest(ref)


def test_a_request_to_a_registry_that_answers_others_is_retried_within_its_window_not_a_count() -> None:
    clock, said = Clock(), list[str]()
    fake = Flaky(REF, failures=6)  # six in a row: past the 3 attempts, well within 30 s
    fake.publish(REF, ["linux/amd64"])
    reg = _windowed(fake, clock, said)
    assert reg.manifest("127.0.0.1:5000/t/other:1") is None  # the registry answers
    held = reg.manifest(REF)
    assert held is not None and held.is_index
    assert len(said) == 6 and "retry 3, within 30 s" in said[2]
    assert clock.now - 1000.0 <= 30.0


def test_a_request_failing_past_its_window_fails_alone_and_the_registry_is_still_asked() -> None:
    clock, said = Clock(), list[str]()
    fake = Flaky(REF, failures=10_000)
    fake.publish("127.0.0.1:5000/t/other:1", ["linux/amd64"])
    reg = _windowed(fake, clock, said, per_request=20.0)
    assert reg.manifest("127.0.0.1:5000/t/other:1") is not None
    started = clock.now
    with pytest.raises(BuildError, match=r"still failing after \d+ attempts in 20 s: HTTP 503"):
        reg.manifest(REF)
    assert clock.now - started <= 20.0 + 4.0, "never much past the window"
    assert reg.manifest("127.0.0.1:5000/t/other:1") is not None, "the other requests are still made"


def test_a_release_retries_at_most_its_floor_plus_half_its_successes() -> None:
    budget = Budget(clock=Clock())
    for _ in range(10):
        budget.succeeded("127.0.0.1:5000")
    allowed = 0
    while budget.take_retry():
        allowed += 1
    assert allowed == FLOOR + 5


def test_retry_waits_are_full_jitter_within_max_delay() -> None:
    policy = RetryPolicy(limits=Retry(initial_delay=2.0, max_delay=5.0))
    waits = [policy.delay(n) for n in (1, 2, 3, 10) for _ in range(50)]
    assert all(0 <= w <= 5.0 for w in waits)
    assert max(policy.delay(1) for _ in range(50)) <= 2.0
    assert policy.delay(1, asked=4.5) >= 4.5 and policy.delay(1, asked=60) == 5.0
