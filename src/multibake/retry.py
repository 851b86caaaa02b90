"""The one retry rule, for bake runs and registry calls alike.

Only a failure classified as transient (``Transient``) is retried: exponential backoff with full
jitter, bounded by the ``retry:`` settings of platforms.yaml, each retry announced. Sleep and the
announcement are injected so tests run retries instantly and read what was said.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

from multibake.config.schema import Retry
from multibake.failures import Failure
from multibake.kinds import Echo

T = TypeVar("T")


def _silent(line: str) -> None:
    del line


class Transient(Exception):
    """A failure that goes away by itself (5xx, 429, resets, timeouts): worth another attempt."""

    def __init__(self, failure: Failure, *, retry_after: float = 0.0) -> None:
        super().__init__(failure.reason)
        self.failure = failure
        self.retry_after = retry_after  # the least wait the other side asked for (Retry-After)


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    limits: Retry = field(default_factory=Retry)  # attempts and delays, as platforms.yaml sets them
    sleep: Callable[[float], None] = time.sleep
    echo: Echo = _silent  # where retries are announced

    def attempts(self, what: str, log: list[str] | None = None) -> tenacity.Retrying:
        """Iterate over it (``for attempt in …: with attempt: …``); a Transient past the last attempt is re-raised.

        ``log`` collects the reason of every retried attempt.
        """

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            reason = str(exc) if exc else "?"
            if log is not None:
                log.append(reason)
            delay = state.next_action.sleep if state.next_action else 0
            shown = reason.removeprefix(f"{what}: ")  # a registry failure names the call already
            self.echo(
                f"multibake: {what}: transient failure ({shown}); retry {state.attempt_number}/"
                f"{self.limits.attempts - 1} in {delay:.1f}s"
            )

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.limits.attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(Transient),
            before_sleep=before_sleep,
            sleep=self.sleep,
            reraise=True,
        )

    def _wait(self, state: tenacity.RetryCallState) -> float:
        # "full jitter": a random wait up to min(max_delay, initial_delay * 2^n), so parallel releases
        # hitting one registry do not retry in lockstep; at least what a Retry-After asked, within max_delay
        jitter = tenacity.wait_random_exponential(multiplier=self.limits.initial_delay, max=self.limits.max_delay)
        exc = state.outcome.exception() if state.outcome else None
        asked = exc.retry_after if isinstance(exc, Transient) else 0.0
        return max(jitter(state), min(asked, self.limits.max_delay))

    def call(self, what: str, once: Callable[[], T]) -> T:
        """``once()``, retried while it raises Transient; raises the last Transient when attempts run out."""
        result: T = self.attempts(what)(once)
        return result
