"""When the network will be free, and preparing the newest frame just in time for it."""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from .slots import LatestSlot


class BusyClock:
    """When a busy worker (the network) is expected to be free again: it marks the start and the
    end of each job; the job's expected length is a moving average of the recent ones. Lets the
    prepare stage work just in time, on the newest frame, instead of on every frame."""

    def __init__(self, smoothing: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        self._smoothing = smoothing
        self._clock = clock
        self._started: Optional[float] = None
        self.expected: Optional[float] = None  # seconds per job
        self._busy_total = 0.0  # seconds in finished jobs

    def start(self) -> None:
        self._started = self._clock()

    def stop(self) -> None:
        started, self._started = self._started, None
        if started is not None:
            took = self._clock() - started
            self._busy_total += took
            self.expected = smooth(self.expected, took, self._smoothing)

    def busy_seconds(self) -> float:
        """Seconds spent in jobs so far, the running one included (the share of a time window the
        network was busy tells whether the node keeps it fed or the network is the limit)."""
        started, total = self._started, self._busy_total
        # read without a lock from the diagnostics thread: add the running job only if it is
        # still the same one (if it ended meanwhile, total may miss it until the next call)
        if started is not None and self._started == started:
            total += self._clock() - started
        return total

    def free_in(self) -> float:
        """Seconds until the running job is expected to end; 0 when idle, unknown or overdue."""
        started, expected = self._started, self.expected
        if started is None or expected is None:
            return 0.0
        return max(0.0, started + expected - self._clock())


class BusyClocks:
    """Several workers running the same kind of job side by side (network runs on one model):
    a BusyClock each; the pool is free as soon as the first of them is."""

    def __init__(self, workers: int, smoothing: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        self.clocks = [BusyClock(smoothing, clock) for _ in range(max(1, int(workers)))]

    def free_in(self) -> float:
        """Seconds until the first worker is expected to be free; 0 when one is idle."""
        return min(clock.free_in() for clock in self.clocks)

    def busy_seconds(self) -> float:
        """Seconds in jobs per worker (their mean): over a time window, the share the workers
        were busy."""
        return sum(clock.busy_seconds() for clock in self.clocks) / len(self.clocks)


def newest_when_needed(item: Any, frames: LatestSlot, ready: LatestSlot, network: "BusyClock | BusyClocks",
                       prepare_s: float, on_replaced: Callable[[], None] = lambda: None,
                       poll_s: float = 0.005) -> Optional[Any]:
    """Just in time: hold ``item`` (a frame to prepare) until the network is about to be free,
    taking newer frames from ``frames`` as they come (``on_replaced`` for each frame skipped).
    Returns the frame to prepare now, or None when ``frames`` closes.

    It is time when no prepared frame waits in ``ready`` and the network's expected end is at
    most one prepare (``prepare_s``) away; an idle or overdue network counts as free. A prepared
    frame that still waits (the network overran) is taken next, so a frame prepared beside it
    would wait a whole inference: hold until it is taken. Under overload about one frame per
    inference is prepared, and it is the newest."""
    while True:
        if ready.occupied:
            wait = poll_s
        else:
            wait = network.free_in() - prepare_s - 0.002
        if wait <= 0:
            return item
        # in steps of at most poll_s: the network may finish earlier than expected
        ok, newer = frames.get(timeout=min(wait, poll_s))
        if ok:
            on_replaced()
            item = newer
        elif frames.closed:
            return None


def smooth(average: Optional[float], value: float, weight: float) -> float:
    """Exponential moving average (the first value starts it)."""
    return value if average is None else average + weight * (value - average)
