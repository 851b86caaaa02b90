"""How long each step of a release took, so that a user sees where the time went without a profiler."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from multibake.kinds import Step


class Stopwatch:
    """Laps of a release's steps, measured from ``start`` (the command's start, else now).

    The one mutable helper of the pipeline: each ``lap`` gives the time since the previous one to a step.
    """

    __slots__ = ("_clock", "_laps", "_mark")

    def __init__(self, start: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._mark = clock() if start is None else start
        self._laps: dict[Step, float] = {}

    def lap(self, step: Step) -> None:
        now = self._clock()
        self._laps[step] = self._laps.get(step, 0.0) + now - self._mark
        self._mark = now

    def steps(self, startup: float = 0.0) -> Mapping[Step, float]:
        """Every step measured, in pipeline order, ``startup`` (the process before the command) first."""
        laps = {Step.START: startup, **self._laps} if startup else self._laps
        return {step: round(laps[step], 3) for step in Step if step in laps}
