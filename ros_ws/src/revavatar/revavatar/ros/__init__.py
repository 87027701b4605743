"""ROS 2 glue: the rclpy shell around the pure stages (:mod:`revavatar.ros.node`).

Importing this package does not import rclpy; :mod:`revavatar.ros.node` imports it inside the
functions that need it, so the rest of RevAvatar runs (and is tested) without ROS 2.
"""

__all__ = ["convert", "node"]
