"""patience.py: a try waits briefly while its registry answers quickly, longer on each later try."""

from __future__ import annotations

import pytest

from multibake.registry import patience
from multibake.registry.client import Http, Registry
from multibake.registry.errors import RegistryError
from multibake.retry import Budget, RetryPolicy
from tests.unit.fakes import FakeRegistry

HOST = "127.0.0.1:5000"


def test_a_host_that_has_not_answered_gets_the_clients_own_timeout() -> None:
    assert patience.Patience().timeout(HOST, 1) is None


def test_a_fast_registry_cuts_a_stalled_try_at_the_floor_then_doubles() -> None:
    p = patience.Patience()
    p.answered(HOST, 0.004)
    p.answered("other:5000", 30.0)  # another host's slowness is its own
    assert [p.timeout(HOST, n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_a_registry_slow_across_the_board_raises_the_bar() -> None:
    p = patience.Patience()
    for seconds in (0.2, 1.5, 0.3):
        p.answered(HOST, seconds)
    assert p.timeout(HOST, 1) == 16.0  # ten times its slowest answer, rounded up to a power of two


def test_only_recent_answers_count() -> None:
    p = patience.Patience()
    p.answered(HOST, 5.0)
    for _ in range(patience.KEPT):
        p.answered(HOST, 0.01)
    assert p.timeout(HOST, 1) == patience.FLOOR


def _registry(api: object) -> Registry:
    return Registry(policy=RetryPolicy(sleep=lambda s: None), api=api, budget=Budget())  # type: ignore[arg-type]


def test_a_try_over_http_waits_no_longer_than_patience_allows() -> None:
    reg = _registry(Http(60.0))
    assert reg._patient(HOST, 1) is reg.api  # nothing answered yet: the full timeout
    reg.patience.answered(HOST, 0.01)
    first, second = reg._patient(HOST, 1), reg._patient(HOST, 2)
    assert isinstance(first, Http) and first.timeout == patience.FLOOR
    assert isinstance(second, Http) and second.timeout == 2 * patience.FLOOR
    short = _registry(Http(1.0))
    short.patience.answered(HOST, 0.01)
    assert short._patient(HOST, 1) is short.api  # a client timeout shorter still is kept


@pytest.mark.parametrize("fails", [0, 1])
def test_every_answered_request_is_remembered_and_a_failed_try_is_not(fails: int) -> None:
    fake = FakeRegistry(fail_next=[RegistryError("reading: HTTP 503", transient=True)] * fails)
    reg = _registry(fake)
    assert reg.manifest(f"{HOST}/app:1.0") is None
    assert reg.patience.timeout(HOST, 1) == patience.FLOOR
    assert len(reg.patience._recent[HOST]) == 1
