"""ROS 2 glue: the camera_seg node, message conversions, diagnostics and parameters."""
