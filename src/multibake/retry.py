"""The one retry rule, for bake runs and registry requests alike, and the budget a release shares.

Only a failure classified as transient (``Transient``) is retried (tenacity runs the attempts, with
the stop, wait and announcement below): exponential backoff with full
jitter (a random wait up to ``initial_delay * 2^n``, at most ``max_delay``, at least what a
``Retry-After`` asked), each retry announced. Sleep, the clock and the announcement are injected, so
tests run retries instantly and read what was said.

How long to keep trying fits the work rather than a small count:

- a registry request gets ``attempts`` attempts; while its registry answers other requests (one
  succeeded within the last ``per_request`` seconds) the registry is flaky, not down, and the request
  is retried until ``per_request`` seconds have passed since its first attempt. At 20 % faults a
  release of hundreds of requests then almost never loses one (4 attempts each lose one in ten
  releases of 150 requests), while a registry that answers nothing costs ``attempts`` attempts, once:
  its other requests are not tried (``Budget.down``);
- the retries of one release's registry requests are at most ``FLOOR`` plus ``RATIO`` times the
  requests that succeeded (``Budget``): a registry failing most requests ends the release, rather than
  each request retrying for its whole window;
- a bake run counts its attempts from its last progress (bake/run.py): a run that pushed an image
  no earlier run had pushed starts the count again.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from multibake.config.schema import Retry
from multibake.failures import Failure
from multibake.kinds import Echo

if TYPE_CHECKING:
    import tenacity

T = TypeVar("T")
FLOOR = 20  # retries a release may make before (and beyond) what its successful requests earn
RATIO = 0.5  # retries earned per successful request: 20 % faults need 0.25


def _silent(line: str) -> None:
    del line


class Transient(Exception):
    """A failure that goes away by itself (5xx, 429, resets, timeouts): worth another attempt."""

    def __init__(self, failure: Failure, *, retry_after: float = 0.0) -> None:
        super().__init__(failure.reason)
        self.failure = failure
        self.retry_after = retry_after  # the least wait the other side asked for (Retry-After)


class GaveUp(Exception):
    """A request still failing when its budget ran out: the last failure, and why it was not retried."""

    def __init__(self, last: Transient, why: str) -> None:
        super().__init__(str(last))
        self.last = last
        self.why = why  # "after N attempts …"


class Budget:
    """What the registry requests of one release share: when each host last answered, retries made, hosts down.

    The one mutable object of a release's registry client; requests run on a few threads, so every
    counter is read and changed under a lock.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._answered: dict[str, float] = {}  # host → when a request to it last succeeded
        self._down: dict[str, str] = {}  # host → why it is given up on
        self.successes = 0
        self.retries = 0

    def succeeded(self, host: str) -> None:
        with self._lock:
            self._answered[host] = self.clock()
            self.successes += 1

    def answered_since(self, host: str, since: float) -> bool:
        with self._lock:
            return self._answered.get(host, float("-inf")) >= since

    def take_retry(self) -> bool:
        """One retry from the release's allowance; False when it is spent."""
        with self._lock:
            if self.retries >= FLOOR + RATIO * self.successes:
                return False
            self.retries += 1
            return True

    def give_up(self, host: str, why: str) -> None:
        with self._lock:
            self._down.setdefault(host, why)

    def down(self, host: str) -> str | None:
        """Why ``host`` is given up on, None while it is not."""
        with self._lock:
            return self._down.get(host)


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    limits: Retry = field(default_factory=Retry)  # attempts, delays and the request window (platforms.yaml)
    sleep: Callable[[float], None] = time.sleep
    echo: Echo = _silent  # where retries are announced
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, retry: int, asked: float = 0.0) -> float:
        """The wait before retry number ``retry`` (1, 2, …).

        "Full jitter": a random wait up to min(max_delay, initial_delay * 2^(retry-1)), so parallel
        releases hitting one registry do not retry in lockstep; at least what a Retry-After asked,
        never past max_delay.
        """
        ceiling = min(self.limits.max_delay, self.limits.initial_delay * 2 ** min(retry - 1, 30))
        return min(self.limits.max_delay, max(self.rng.uniform(0, ceiling), asked))

    def announce(self, what: str, reason: str, count: str, wait: float) -> None:
        shown = reason.removeprefix(f"{what}: ")  # a registry failure names the call already
        self.echo(f"multibake: {what}: transient failure ({shown}); retry {count} in {wait:.1f}s")

    def request(self, what: str, host: str, once: Callable[[], T], budget: Budget) -> T:
        """``once()``, retried while it raises Transient and the budget allows; GaveUp when it no longer does."""
        started = budget.clock()
        why: list[str] = []  # why the last failure was not retried (tenacity's stop says only yes or no)

        def stop(attempt: int) -> bool:
            reason = self._stop(host, started, attempt, budget)
            why.extend([reason] if reason is not None else [])
            return reason is not None

        def left() -> float:
            return self.limits.per_request - (budget.clock() - started)

        try:
            result: T = self._retrying(what, stop, left)(once)
        except Transient as exc:
            raise GaveUp(exc, why[-1] if why else f"after {self.limits.attempts} attempts") from exc
        budget.succeeded(host)
        return result

    def call(self, what: str, once: Callable[[], T]) -> T:
        """``once()``, retried while it raises Transient, ``attempts`` times at most (a tool's runs: cosign)."""
        result: T = self._retrying(what, lambda attempt: attempt >= self.limits.attempts)(once)
        return result

    def _retrying(
        self, what: str, stop: Callable[[int], bool], left: Callable[[], float] = lambda: math.inf
    ) -> tenacity.Retrying:
        """tenacity's runner of the rule: ``stop`` after a failed attempt; past ``attempts``, wait no longer
        than the ``left`` seconds of the request's window."""
        import tenacity  # at the first retried call: a build starts bake without it

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            delay = self.delay(state.attempt_number, exc.retry_after if isinstance(exc, Transient) else 0.0)
            return max(0.0, min(delay, left())) if state.attempt_number >= self.limits.attempts else delay

        def before_sleep(state: tenacity.RetryCallState) -> None:
            n = state.attempt_number
            within = f"{n}, within {self.limits.per_request:g} s"
            count = f"{n}/{self.limits.attempts - 1}" if n < self.limits.attempts else within
            exc = state.outcome.exception() if state.outcome else None
            self.announce(what, str(exc), count, state.next_action.sleep if state.next_action else 0.0)

        return tenacity.Retrying(
            stop=lambda state: stop(state.attempt_number),
            wait=wait,
            retry=tenacity.retry_if_exception_type(Transient),
            before_sleep=before_sleep,
            sleep=self.sleep,
            reraise=True,
        )

    def _stop(self, host: str, started: float, attempt: int, budget: Budget) -> str | None:
        """Why a request that failed ``attempt`` times is not retried; None when it is."""
        window = self.limits.per_request
        if attempt >= self.limits.attempts:
            if not budget.answered_since(host, budget.clock() - window):
                return f"after {attempt} attempts"
            if budget.clock() - started >= window:
                return f"after {attempt} attempts in {window:g} s"
        if not budget.take_retry():
            return f"after {attempt} attempts, this release's retries spent ({budget.retries} retries)"
        return None
