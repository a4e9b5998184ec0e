"""Apply the packaged Fast DDS profile (64 MB shared memory + UDPv4) unless the user chose their
own. Imports no rclpy: the executable calls it before rclpy.init(), the launch file before it
starts the node process."""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional

from ..core.resources import FASTDDS_PROFILE

PROFILE_VARS = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


def profile_env(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The variables to add to a node's environment ({} when the user set a profile file or runs
    a middleware other than Fast DDS)."""
    env = os.environ if environ is None else environ
    if any(env.get(v) for v in PROFILE_VARS):
        return {}
    rmw = env.get("RMW_IMPLEMENTATION", "")
    if rmw and "fastrtps" not in rmw and "fastdds" not in rmw:
        return {}
    return {"FASTRTPS_DEFAULT_PROFILES_FILE": FASTDDS_PROFILE}


def apply_default_profile() -> Optional[str]:
    """Set the profile variable in this process (before rclpy.init()); returns the path applied."""
    extra = profile_env()
    os.environ.update(extra)
    return extra.get("FASTRTPS_DEFAULT_PROFILES_FILE")
