"""A one-slot mailbox between a camera callback and an inference worker.

The callback puts every frame; the worker always gets the newest one. A frame replaced before
the worker took it is dropped (put() says so, for the caller to count), so a slow network never
builds a backlog of stale frames (the real-time rule: latest frame wins).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple


class LatestSlot:
    """``on_drop``: called with each item that is replaced or left at close (outside the lock),
    e.g. to give a buffer back."""

    def __init__(self, on_drop: Optional[Callable[[Any], None]] = None) -> None:
        self._on_drop = on_drop
        self._cond = threading.Condition()
        self._item: Any = None
        self._has_item = False
        self._closed = False

    def put(self, item: Any) -> bool:
        """Store ``item``; returns True when it replaced an unprocessed one (a drop)."""
        with self._cond:
            closed = self._closed
            replaced = self._has_item and not closed
            old = item if closed else self._item  # a closed slot takes nothing: dropped at once
            if not closed:
                self._item, self._has_item = item, True
                self._cond.notify()
        if (replaced or closed) and self._on_drop is not None:
            self._on_drop(old)
        return replaced

    def get(self, timeout: Optional[float] = None,
            on_take: Optional[Callable[[], None]] = None) -> Tuple[bool, Any]:
        """(True, newest item) or (False, None) on timeout or close. ``on_take`` runs when an item
        is taken, before the slot reads empty (a worker marks itself busy there, so whoever
        watches the slot and the worker never sees an empty slot beside an idle worker)."""
        with self._cond:
            if not self._has_item and not self._closed:
                self._cond.wait(timeout)
            if not self._has_item or self._closed:
                return False, None
            if on_take is not None:
                on_take()
            item, self._item, self._has_item = self._item, None, False
            return True, item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            old, had = self._item, self._has_item
            self._item, self._has_item = None, False
            self._cond.notify_all()
        if had and self._on_drop is not None:
            self._on_drop(old)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def occupied(self) -> bool:
        """An item is waiting to be taken."""
        return self._has_item


class LatestPerKey:
    """One slot per key (camera): ``put`` replaces only the same key's waiting item (a drop, as
    in LatestSlot), so one camera's result never pushes out another's; ``get`` takes every
    waiting item, in the order they were put.

    ``order`` (the frame's receive time): an item older than one already put under its key is
    refused, a drop too. With several network runs at once a camera's newer frame can finish
    first; its outputs must never go back in time after it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: Dict[Any, Any] = {}  # insertion order = put order (a replaced key moves last)
        self._newest: Dict[Any, float] = {}  # the newest order put under each key
        self._closed = False

    def put(self, key: Any, item: Any, order: Optional[float] = None) -> bool:
        """Store ``item`` under ``key``; True when one item was dropped: an untaken one it
        replaced, or this one, older than what was already put under the key."""
        with self._cond:
            if self._closed:
                return True
            if order is not None:
                if order < self._newest.get(key, float("-inf")):
                    return True
                self._newest[key] = order
            replaced = self._items.pop(key, _NOTHING) is not _NOTHING
            self._items[key] = item
            self._cond.notify()
            return replaced

    def get(self, timeout: Optional[float] = None) -> Tuple[bool, List[Any]]:
        """(True, every waiting item) or (False, []) on timeout or close."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items or self._closed:
                return False, []
            items, self._items = list(self._items.values()), {}
            return True, items

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items = {}
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


_NOTHING = object()


class BusyClock:
    """When a busy worker (the network) is expected to be free again: it marks the start and the
    end of each job; the job's expected length is a moving average of the recent ones. Lets the
    prepare stage work just in time, on the newest frame, instead of on every frame."""

    def __init__(self, smoothing: float = 0.2) -> None:
        self._smoothing = smoothing
        self._started: Optional[float] = None
        self.expected: Optional[float] = None  # seconds per job
        self._busy_total = 0.0  # seconds in finished jobs

    def start(self) -> None:
        self._started = time.monotonic()

    def stop(self) -> None:
        started, self._started = self._started, None
        if started is not None:
            took = time.monotonic() - started
            self._busy_total += took
            self.expected = smooth(self.expected, took, self._smoothing)

    def busy_seconds(self) -> float:
        """Seconds spent in jobs so far, the running one included (the share of a time window the
        network was busy tells whether the node keeps it fed or the network is the limit)."""
        started, total = self._started, self._busy_total
        # read without a lock from the diagnostics thread: add the running job only if it is
        # still the same one (if it ended meanwhile, total may miss it until the next call)
        if started is not None and self._started == started:
            total += time.monotonic() - started
        return total

    def free_in(self) -> float:
        """Seconds until the running job is expected to end; 0 when idle, unknown or overdue."""
        started, expected = self._started, self.expected
        if started is None or expected is None:
            return 0.0
        return max(0.0, started + expected - time.monotonic())


class BusyClocks:
    """Several workers running the same kind of job side by side (network runs on one model):
    a BusyClock each; the pool is free as soon as the first of them is."""

    def __init__(self, workers: int, smoothing: float = 0.2) -> None:
        self.clocks = [BusyClock(smoothing) for _ in range(max(1, int(workers)))]

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
