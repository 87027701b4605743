"""RevAvatar: reverse pass-through for VR headsets.

Pure cores live in :mod:`revavatar.core` and :mod:`revavatar.vrface`; the node graph in
:mod:`revavatar.graph`; ROS 2 glue (imported lazily, only where rclpy exists) in :mod:`revavatar.ros`.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
