"""seg_perception: camera semantic segmentation for ROS 2 (road, pedestrian, parking, drivable grid)."""

__version__ = "0.1.0"
