"""ROS 2 adapter of face3d_ros: conversions, node, tools (the only part that imports rclpy)."""
