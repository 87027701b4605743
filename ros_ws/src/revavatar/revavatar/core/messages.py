"""Messages shaped exactly like ROS 2 ``sensor_msgs/msg/Image`` and ``CameraInfo``.

The embedded graph, the bags and the rclpy shell all speak these, so a frame keeps one layout
from camera to bag to node; conversion to ROS types is field-for-field (see :mod:`revavatar.bag`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np

from revavatar.errors import EncodingError

__all__ = [
    "ENCODINGS",
    "CameraInfo",
    "Header",
    "Image",
    "RegionOfInterest",
    "Time",
    "array_to_image",
    "image_to_array",
    "image_to_bgr",
]

#: encoding -> (numpy dtype, channels); the six encodings the product accepts.
ENCODINGS: Final[dict[str, tuple[type[np.generic], int]]] = {
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
}


@dataclass(frozen=True)
class Time:
    """``builtin_interfaces/msg/Time``."""

    sec: int = 0
    nanosec: int = 0

    @classmethod
    def from_ns(cls, ns: int) -> Time:
        """Split a timestamp (ns) into seconds and nanoseconds."""
        return cls(sec=int(ns) // 1_000_000_000, nanosec=int(ns) % 1_000_000_000)

    def to_ns(self) -> int:
        """Timestamp (ns)."""
        return self.sec * 1_000_000_000 + self.nanosec


@dataclass(frozen=True)
class Header:
    """``std_msgs/msg/Header``."""

    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass(frozen=True)
class Image:
    """``sensor_msgs/msg/Image``; ``data`` holds ``height * step`` bytes."""

    header: Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


@dataclass(frozen=True)
class RegionOfInterest:
    """``sensor_msgs/msg/RegionOfInterest``."""

    x_offset: int = 0
    y_offset: int = 0
    height: int = 0
    width: int = 0
    do_rectify: bool = False


@dataclass(frozen=True)
class CameraInfo:
    """``sensor_msgs/msg/CameraInfo`` (ROS 2 field names: d, k, r, p)."""

    header: Header
    height: int
    width: int
    distortion_model: str
    d: tuple[float, ...]
    k: tuple[float, ...]
    r: tuple[float, ...]
    p: tuple[float, ...]
    binning_x: int = 0
    binning_y: int = 0
    roi: RegionOfInterest = field(default_factory=RegionOfInterest)


def _check_encoding(encoding: str) -> tuple[type[np.generic], int]:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        msg = f"unsupported image encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}"
        raise EncodingError(msg) from None


def image_to_array(msg: Image) -> np.ndarray:
    """Decode an Image into a native-endian array (H, W) or (H, W, C), honouring ``step`` padding.

    Raises:
        EncodingError: unknown encoding or a buffer shorter than ``height * step``.
    """
    dtype, channels = _check_encoding(msg.encoding)
    itemsize = np.dtype(dtype).itemsize
    row_bytes = msg.width * channels * itemsize
    if msg.step < row_bytes or len(msg.data) < msg.height * msg.step:
        msg_ = (
            f"malformed {msg.encoding} image: {msg.width}x{msg.height} needs step >= {row_bytes} "
            f"and {msg.height}*step bytes, got step {msg.step} and {len(msg.data)} bytes"
        )
        raise EncodingError(msg_)
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=msg.height * msg.step)
    rows = raw.reshape(msg.height, msg.step)[:, :row_bytes]
    order = ">" if msg.is_bigendian else "<"
    arr = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order))
    arr = arr.astype(dtype, copy=False)  # to native byte order
    shape = (msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels)
    return arr.reshape(shape)


def array_to_image(
    arr: np.ndarray, encoding: str, stamp_ns: int = 0, frame_id: str = ""
) -> Image:
    """Encode an array as an Image (little-endian, unpadded rows).

    Raises:
        EncodingError: unknown encoding, or an array whose dtype/channels do not fit it.
    """
    dtype, channels = _check_encoding(encoding)
    got_channels = 1 if arr.ndim == 2 else arr.shape[2]
    if arr.ndim not in (2, 3) or got_channels != channels or arr.dtype != dtype:
        msg = (
            f"array of shape {arr.shape} and dtype {arr.dtype} does not fit encoding {encoding!r} "
            f"({channels} channel(s) of {np.dtype(dtype).name})"
        )
        raise EncodingError(msg)
    data = np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    height, width = arr.shape[:2]
    return Image(
        header=Header(stamp=Time.from_ns(stamp_ns), frame_id=frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels * np.dtype(dtype).itemsize,
        data=data,
    )


def image_to_bgr(msg: Image) -> np.ndarray:
    """Decode any supported Image into uint8 BGR (H, W, 3), the processing format of the cores.

    mono16 is scaled by 1/256 (its top byte), which is how IR eye cameras are usually viewed.
    """
    import cv2

    arr = image_to_array(msg)
    enc = msg.encoding
    if enc == "mono16":
        arr = (arr >> 8).astype(np.uint8)
        enc = "mono8"
    convert = {
        "mono8": cv2.COLOR_GRAY2BGR,
        "rgb8": cv2.COLOR_RGB2BGR,
        "rgba8": cv2.COLOR_RGBA2BGR,
        "bgra8": cv2.COLOR_BGRA2BGR,
    }
    if enc == "bgr8":
        return arr
    return cv2.cvtColor(arr, convert[enc])
