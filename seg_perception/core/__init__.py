"""Core logic of seg_perception. Nothing under core/ imports rclpy: it runs and is tested with
plain Python, and the ROS node (seg_perception.ros) is thin glue around it."""
