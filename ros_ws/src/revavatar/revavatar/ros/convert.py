"""Core messages <-> rclpy messages (``sensor_msgs``), through cv_bridge where it is installed.

ROS message modules are imported inside the functions, so this module imports anywhere; only the
rclpy shell calls it. Without cv_bridge the fields are copied one for one, which is exactly what
cv_bridge does for the six encodings RevAvatar uses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from revavatar.core.messages import (
    ENCODINGS,
    CameraInfo,
    Header,
    Image,
    RegionOfInterest,
    Time,
    array_to_image,
    image_to_array,
)
from revavatar.errors import EncodingError

__all__ = ["from_ros_image", "make_bridge", "to_ros_camera_info", "to_ros_image"]


def make_bridge() -> Any | None:
    """A ``cv_bridge.CvBridge``, or None when cv_bridge is not installed."""
    try:
        from cv_bridge import CvBridge  # noqa: PLC0415 - optional ROS dependency
    except ImportError:
        return None
    return CvBridge()


def _ros_header(header: Header) -> Any:
    from builtin_interfaces.msg import Time as RosTime  # noqa: PLC0415
    from std_msgs.msg import Header as RosHeader  # noqa: PLC0415

    return RosHeader(stamp=RosTime(sec=header.stamp.sec, nanosec=header.stamp.nanosec),
                     frame_id=header.frame_id)


def _core_header(ros_header: Any) -> Header:
    return Header(Time(int(ros_header.stamp.sec), int(ros_header.stamp.nanosec)),
                  str(ros_header.frame_id))


def from_ros_image(ros_msg: Any, bridge: Any | None = None) -> Image:
    """``sensor_msgs/msg/Image`` -> core Image (stamp and frame id kept).

    Raises:
        EncodingError: an encoding outside the six RevAvatar accepts, or a malformed buffer.
    """
    header = _core_header(ros_msg.header)
    encoding = str(ros_msg.encoding)
    if encoding not in ENCODINGS:
        msg = f"unsupported image encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}"
        raise EncodingError(msg)
    if bridge is not None:
        try:  # CvBridgeError is a TypeError; a short buffer is a numpy ValueError
            arr = np.asarray(bridge.imgmsg_to_cv2(ros_msg, desired_encoding="passthrough"))
        except (TypeError, ValueError) as err:
            msg = f"malformed {encoding} image {ros_msg.width}x{ros_msg.height}: {err}"
            raise EncodingError(msg) from err
        return array_to_image(arr, encoding, header.stamp.to_ns(), header.frame_id)
    img = Image(header, int(ros_msg.height), int(ros_msg.width), str(ros_msg.encoding),
                int(ros_msg.is_bigendian), int(ros_msg.step), bytes(ros_msg.data))
    image_to_array(img)  # validates encoding and buffer size now, not deep inside a stage
    return img


def to_ros_image(img: Image, bridge: Any | None = None) -> Any:
    """Core Image -> ``sensor_msgs/msg/Image``."""
    if bridge is not None:
        ros_msg = bridge.cv2_to_imgmsg(image_to_array(img), encoding=img.encoding)
        ros_msg.header = _ros_header(img.header)
        return ros_msg
    from sensor_msgs.msg import Image as RosImage  # noqa: PLC0415

    ros_msg = RosImage()
    ros_msg.header = _ros_header(img.header)
    ros_msg.height, ros_msg.width = img.height, img.width
    ros_msg.encoding, ros_msg.is_bigendian, ros_msg.step = img.encoding, img.is_bigendian, img.step
    ros_msg.data = img.data
    return ros_msg


def to_ros_camera_info(info: CameraInfo) -> Any:
    """Core CameraInfo -> ``sensor_msgs/msg/CameraInfo`` (d, k, r, p as in ROS 2)."""
    from sensor_msgs.msg import CameraInfo as RosCameraInfo  # noqa: PLC0415
    from sensor_msgs.msg import RegionOfInterest as RosRoi  # noqa: PLC0415

    roi: RegionOfInterest = info.roi
    ros_msg = RosCameraInfo()
    ros_msg.header = _ros_header(info.header)
    ros_msg.height, ros_msg.width = info.height, info.width
    ros_msg.distortion_model = info.distortion_model
    ros_msg.d, ros_msg.k, ros_msg.r, ros_msg.p = (list(map(float, v))
                                                  for v in (info.d, info.k, info.r, info.p))
    ros_msg.binning_x, ros_msg.binning_y = info.binning_x, info.binning_y
    ros_msg.roi = RosRoi(x_offset=roi.x_offset, y_offset=roi.y_offset, height=roi.height,
                         width=roi.width, do_rectify=roi.do_rectify)
    return ros_msg
