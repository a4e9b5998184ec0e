"""One-slot mailboxes between the frame runtime's stages: the camera callback and the prepare
thread, the prepare thread and the network runs, the runs and the output thread.

A put replaces what was not taken yet (put() says so, for the caller to count the drop), so a
slow stage never builds a backlog of stale frames (the real-time rule: latest frame wins).
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
                self._cond.notify_all()  # the getter (a producer in wait_empty sleeps on)
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
            self._cond.notify_all()  # one waiting in wait_empty
            return True, item

    def wait_empty(self, timeout: Optional[float] = None) -> bool:
        """Wait until the item was taken (a lossless producer: nothing replaced); False on
        timeout or close."""
        with self._cond:
            if self._has_item and not self._closed:
                self._cond.wait_for(lambda: not self._has_item or self._closed, timeout)
            return not self._has_item and not self._closed

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
