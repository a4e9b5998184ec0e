"""The vehicle's planar pose over time, from odometry (nav_msgs/Odometry's pose, or TF), for the
drivable map: interpolated to a frame's stamp, with the faults a map must not build on (a jump,
a reset, time going backwards, odometry that stopped).

Poses are (x, y, yaw) of the grid frame (base_link) in the map frame (odom), seconds on the
stamps' clock. No ROS types here: the node and the bag tools feed it numbers.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Deque, Optional, Tuple

Pose2D = Tuple[float, float, float]


def yaw_of_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Heading (rotation about z) of a quaternion, radians."""
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def _angle_between(a: float, b: float, f: float) -> float:
    d = (b - a + math.pi) % (2.0 * math.pi) - math.pi  # the short way round
    return a + f * d


class PoseHistory:
    """Recent poses, oldest first. ``jump_distance``: a step between consecutive poses longer
    than this (m), beyond what the time between them allows at ``max_speed`` (m/s), is a jump or
    a reset; ``tolerance``: how far past the newest pose (s) a stamp may be and still take it."""

    def __init__(self, keep_s: float = 10.0, jump_distance: float = 2.0, max_speed: float = 60.0,
                 tolerance: float = 0.1) -> None:
        self.keep_s = keep_s
        self.jump_distance = jump_distance
        self.max_speed = max_speed
        self.tolerance = tolerance
        self.rejected = 0  # poses ignored: not finite
        self._t: Deque[float] = deque()
        self._pose: Deque[Pose2D] = deque()

    @property
    def newest_time(self) -> Optional[float]:
        return self._t[-1] if self._t else None

    def clear(self) -> None:
        self._t.clear()
        self._pose.clear()

    def add(self, t: float, pose: Pose2D) -> Optional[str]:
        """Take a pose; returns why the history (and a map built on it) starts over, or None.
        A pose or time that is not finite (NaN from a broken driver) is ignored."""
        if not all(math.isfinite(v) for v in (t,) + tuple(pose)):
            self.rejected += 1
            return None
        reason = None
        if self._t:
            t0, (x0, y0, _) = self._t[-1], self._pose[-1]
            step = math.hypot(pose[0] - x0, pose[1] - y0)
            if t < t0:
                reason = f"time went backwards by {t0 - t:.2f} s (a bag looping?)"
            elif step > self.jump_distance + self.max_speed * (t - t0):
                reason = f"odometry jumped {step:.1f} m in {t - t0:.2f} s (a reset or a relocalisation)"
            elif t == t0:
                return None  # the same stamp again
        if reason:
            self.clear()
        self._t.append(t)
        self._pose.append(pose)
        while self._t and self._t[0] < t - self.keep_s:
            self._t.popleft()
            self._pose.popleft()
        return reason

    def at(self, t: float) -> Optional[Pose2D]:
        """The pose at ``t``, interpolated between the poses around it; None when ``t`` is not
        covered (before the oldest, or more than ``tolerance`` after the newest)."""
        if not self._t or t < self._t[0] - 1e-9 or t > self._t[-1] + self.tolerance:
            return None
        i = bisect.bisect_left(self._t, t)
        if i >= len(self._t):
            return self._pose[-1]
        if self._t[i] == t or i == 0:
            return self._pose[i]
        t0, t1 = self._t[i - 1], self._t[i]
        (x0, y0, a0), (x1, y1, a1) = self._pose[i - 1], self._pose[i]
        f = (t - t0) / (t1 - t0)
        return (x0 + f * (x1 - x0), y0 + f * (y1 - y0), _angle_between(a0, a1, f))
