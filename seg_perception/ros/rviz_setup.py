"""RViz for the launch file (no launch or rclpy imports, so it is tested with plain pytest):
whether rviz2 is installed, and the shipped RViz config rewritten for the node's own topics."""

from __future__ import annotations

import os
import re
import tempfile
from typing import Optional

TEMPLATE_NODE = "/camera_seg"  # the node whose topics rviz/camera_seg.rviz names
INSTALL_HINT = "sudo apt install ros-$ROS_DISTRO-rviz2"


def rviz_missing() -> Optional[str]:
    """None when the rviz2 package is in the ament index, else why it cannot start."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError as exc:
        return f"ament_index_python is not importable ({exc})"
    try:
        get_package_prefix("rviz2")
    except PackageNotFoundError:
        return f"rviz2 is not installed ({INSTALL_HINT} where a person looks at it)"
    return None


def node_fqn(namespace: str, name: str) -> str:
    """/<namespace>/<name>, as ROS resolves a node's private topics (~/...)."""
    ns = namespace.strip("/")
    return f"/{ns}/{name}" if ns else f"/{name}"


def rviz_config_text(template: str, fqn: str) -> str:
    """The config with every topic of the template's node moved under ``fqn``."""
    return re.sub(r"(Value: )" + re.escape(TEMPLATE_NODE) + "/", lambda m: m.group(1) + fqn + "/", template)


def write_rviz_config(template_path: str, fqn: str, out_dir: Optional[str] = None) -> str:
    """Write the config for ``fqn`` (into a temporary folder by default); its path."""
    with open(template_path, "r", encoding="utf-8") as f:
        text = rviz_config_text(f.read(), fqn)
    out_dir = out_dir or tempfile.mkdtemp(prefix="seg_perception_rviz_")
    path = os.path.join(out_dir, f"camera_seg{fqn.replace('/', '_')}.rviz")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
