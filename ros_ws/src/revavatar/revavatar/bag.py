"""Session bags: record and replay real rosbag2 bags (MCAP by default, sqlite3 selectable).

A RevAvatar session is an ordinary rosbag2 bag with standard ``sensor_msgs/msg/Image`` and
``sensor_msgs/msg/CameraInfo`` connections on ``/revavatar/<camera>/image_raw`` and
``/revavatar/<camera>/camera_info``, so ``ros2 bag info`` / ``ros2 bag play`` accept it unchanged and a
bag recorded on a robot with ``ros2 bag record`` replays through the embedded graph. The pure
:mod:`revavatar.core.messages` dataclasses are converted field-for-field in exactly one place
(:func:`to_ros` / :func:`from_ros`), so ``data``, ``step`` and ``is_bigendian`` survive bit-exact.

Serialisation uses the ``rosbags`` library (no ROS installation needed); the ROS 2 Humble type store
is used because ``Image`` and ``CameraInfo`` are identical in every ROS 2 distribution.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import numpy as np
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore

from revavatar import __version__
from revavatar.core.calibration import CAMERA_NAMES
from revavatar.core.messages import (
    ENCODINGS,
    CameraInfo,
    Header,
    Image,
    RegionOfInterest,
    Time,
)
from revavatar.errors import BagError, EncodingError

if TYPE_CHECKING:
    from rosbags.interfaces import Connection
    from rosbags.typesys.store import Typestore

    from revavatar.core.calibration import HeadsetCalibration

__all__ = [
    "IMAGE_MSGTYPE",
    "CAMERA_INFO_MSGTYPE",
    "STORAGES",
    "BagEncodingError",
    "SessionReader",
    "SessionWriter",
    "camera_info_topic",
    "default_typestore",
    "from_ros",
    "image_topic",
    "to_ros",
    "validate_session",
]

IMAGE_MSGTYPE: Final = "sensor_msgs/msg/Image"
CAMERA_INFO_MSGTYPE: Final = "sensor_msgs/msg/CameraInfo"

#: storage name -> rosbags storage plugin; the explicit registry of bag backends.
STORAGES: Final[dict[str, StoragePlugin]] = {
    "mcap": StoragePlugin.MCAP,
    "sqlite3": StoragePlugin.SQLITE3,
}

#: rosbag2 metadata version written. Version 8 stores QoS profiles as a YAML string, which every
#: ROS 2 release from Humble on parses (version 9 switched to a YAML list that Humble rejects);
#: newer releases ignore the keys they do not know, so one bag replays everywhere.
_BAG_VERSION: Final = 8

_MSGTYPE_OF: Final[dict[type, str]] = {Image: IMAGE_MSGTYPE, CameraInfo: CAMERA_INFO_MSGTYPE}

_TYPESTORE: Typestore | None = None


class BagEncodingError(BagError, EncodingError):
    """A bag whose image topic carries an unsupported encoding (is both a BagError and EncodingError)."""


def default_typestore() -> Typestore:
    """The shared ROS 2 type store (built once; building it parses every standard message)."""
    global _TYPESTORE  # noqa: PLW0603 - lazily built module-level cache
    if _TYPESTORE is None:
        _TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
    return _TYPESTORE


def image_topic(camera: str) -> str:
    """``/revavatar/<camera>/image_raw``: the raw image topic of a headset camera."""
    return f"/revavatar/{camera}/image_raw"


def camera_info_topic(camera: str) -> str:
    """``/revavatar/<camera>/camera_info``: the calibration topic paired with :func:`image_topic`."""
    return f"/revavatar/{camera}/camera_info"


# --------------------------------------------------------------------------------------------------
# The ONE field-for-field mapping between revavatar.core.messages and ROS types.
# --------------------------------------------------------------------------------------------------


def _header_to_ros(header: Header, typestore: Typestore) -> Any:
    time_t = typestore.types["builtin_interfaces/msg/Time"]
    header_t = typestore.types["std_msgs/msg/Header"]
    return header_t(
        stamp=time_t(sec=header.stamp.sec, nanosec=header.stamp.nanosec),
        frame_id=header.frame_id,
    )


def _header_from_ros(header: Any) -> Header:
    return Header(
        stamp=Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec)),
        frame_id=str(header.frame_id),
    )


def to_ros(msg: Image | CameraInfo, typestore: Typestore | None = None) -> Any:
    """Convert a core message into the matching rosbags message object, field for field.

    Args:
        msg: an :class:`Image` or :class:`CameraInfo`.
        typestore: the type store whose classes to build (default: :func:`default_typestore`).

    Returns:
        A ``sensor_msgs__msg__Image`` or ``sensor_msgs__msg__CameraInfo`` instance.

    Raises:
        TypeError: ``msg`` is neither an Image nor a CameraInfo.
    """
    if not isinstance(msg, Image | CameraInfo):
        msg_ = f"cannot convert {type(msg).__name__} to ROS; expected Image or CameraInfo"
        raise TypeError(msg_)
    ts = typestore or default_typestore()
    header = _header_to_ros(msg.header, ts)
    if isinstance(msg, Image):
        return ts.types[IMAGE_MSGTYPE](
            header=header,
            height=msg.height,
            width=msg.width,
            encoding=msg.encoding,
            is_bigendian=msg.is_bigendian,
            step=msg.step,
            data=np.frombuffer(msg.data, dtype=np.uint8),
        )
    roi = msg.roi
    return ts.types[CAMERA_INFO_MSGTYPE](
        header=header,
        height=msg.height,
        width=msg.width,
        distortion_model=msg.distortion_model,
        d=np.asarray(msg.d, dtype=np.float64),
        k=np.asarray(msg.k, dtype=np.float64),
        r=np.asarray(msg.r, dtype=np.float64),
        p=np.asarray(msg.p, dtype=np.float64),
        binning_x=msg.binning_x,
        binning_y=msg.binning_y,
        roi=ts.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=roi.x_offset,
            y_offset=roi.y_offset,
            height=roi.height,
            width=roi.width,
            do_rectify=bool(roi.do_rectify),
        ),
    )


def from_ros(ros_msg: Any) -> Image | CameraInfo:
    """Convert a rosbags ``Image`` / ``CameraInfo`` (any type store) into the core dataclass.

    Raises:
        TypeError: the message is of another type.
    """
    msgtype = getattr(ros_msg, "__msgtype__", type(ros_msg).__name__)
    if msgtype == IMAGE_MSGTYPE:
        return Image(
            header=_header_from_ros(ros_msg.header),
            height=int(ros_msg.height),
            width=int(ros_msg.width),
            encoding=str(ros_msg.encoding),
            is_bigendian=int(ros_msg.is_bigendian),
            step=int(ros_msg.step),
            data=np.asarray(ros_msg.data, dtype=np.uint8).tobytes(),
        )
    if msgtype == CAMERA_INFO_MSGTYPE:
        roi = ros_msg.roi
        return CameraInfo(
            header=_header_from_ros(ros_msg.header),
            height=int(ros_msg.height),
            width=int(ros_msg.width),
            distortion_model=str(ros_msg.distortion_model),
            d=tuple(float(x) for x in ros_msg.d),
            k=tuple(float(x) for x in ros_msg.k),
            r=tuple(float(x) for x in ros_msg.r),
            p=tuple(float(x) for x in ros_msg.p),
            binning_x=int(ros_msg.binning_x),
            binning_y=int(ros_msg.binning_y),
            roi=RegionOfInterest(
                x_offset=int(roi.x_offset),
                y_offset=int(roi.y_offset),
                height=int(roi.height),
                width=int(roi.width),
                do_rectify=bool(roi.do_rectify),
            ),
        )
    msg_ = (
        f"cannot convert ROS message of type {msgtype!r}; "
        f"expected {IMAGE_MSGTYPE} or {CAMERA_INFO_MSGTYPE}"
    )
    raise TypeError(msg_)


# --------------------------------------------------------------------------------------------------
# Writer / reader
# --------------------------------------------------------------------------------------------------


class SessionWriter:
    """Write a session bag; a context manager (the bag is finalised on exit, even after an error).

    Connections are created on the first message of each topic with the message's ROS type, and
    each message is stored at its header stamp so replay timing equals capture timing.

    Args:
        path: bag directory to create (must not exist).
        storage: ``"mcap"`` (default) or ``"sqlite3"``, see :data:`STORAGES`.
        custom_data: optional string metadata stored in ``metadata.yaml`` (e.g. the calibration name).

    Raises:
        ValueError: unknown storage name.
        BagError: the path exists already.
    """

    def __init__(
        self,
        path: str | Path,
        storage: str = "mcap",
        *,
        custom_data: dict[str, str] | None = None,
    ) -> None:
        if storage not in STORAGES:
            msg = f"unknown bag storage {storage!r}; expected one of {', '.join(STORAGES)}"
            raise ValueError(msg)
        self.path = Path(path)
        self.storage = storage
        # always non-empty: rosbags writes an empty custom_data as null, which rosbag2 (Iron+) cannot
        # parse as a map
        self._custom_data = {"revavatar.version": __version__, **(custom_data or {})}
        self._typestore = default_typestore()
        self._writer: Writer | None = None
        self._connections: dict[str, Connection] = {}
        self.message_counts: dict[str, int] = {}

    def open(self) -> None:
        """Create the bag directory and its storage file.

        Raises:
            BagError: the path exists already or cannot be created.
        """
        try:
            writer = Writer(self.path, version=_BAG_VERSION, storage_plugin=STORAGES[self.storage])
            for key, value in self._custom_data.items():
                writer.set_custom_data(key, value)
            writer.open()
        except (WriterError, OSError) as err:
            msg = f"cannot create session bag {self.path}: {err}"
            raise BagError(msg) from err
        self._writer = writer

    def write(self, topic: str, msg: Image | CameraInfo) -> None:
        """Append one message at its header stamp (ns).

        Raises:
            BagError: the writer is not open, the topic already carries another type, or the
                message does not serialise (e.g. a CameraInfo ``k`` that is not 9 values).
            TypeError: ``msg`` is neither an Image nor a CameraInfo.
        """
        if self._writer is None:
            msg_ = f"session bag {self.path} is not open; use `with SessionWriter(...) as w:`"
            raise BagError(msg_)
        msgtype = _MSGTYPE_OF.get(type(msg))
        if msgtype is None:
            msg_ = f"cannot write {type(msg).__name__} to {topic}; expected Image or CameraInfo"
            raise TypeError(msg_)
        conn = self._connections.get(topic)
        if conn is not None and conn.msgtype != msgtype:
            msg_ = f"topic {topic} already carries {conn.msgtype}; cannot write a {msgtype} to it"
            raise BagError(msg_)
        try:
            raw = self._typestore.serialize_cdr(to_ros(msg, self._typestore), msgtype)
        except (SerdeError, ValueError, TypeError) as err:  # rosbags raises these on bad fields
            msg_ = f"cannot serialise {msgtype} for {topic}: {err}"
            raise BagError(msg_) from err
        if conn is None:  # only after a message serialised, so no empty connection is left behind
            conn = self._writer.add_connection(topic, msgtype, typestore=self._typestore)
            self._connections[topic] = conn
        self._writer.write(conn, msg.header.stamp.to_ns(), raw)
        self.message_counts[topic] = self.message_counts.get(topic, 0) + 1

    def close(self) -> None:
        """Finalise the bag (write the storage index and ``metadata.yaml``)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> Self:
        """Open the bag."""
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the bag; what was written before an error stays readable."""
        self.close()


class SessionReader:
    """Read a session bag (a rosbag2 directory, or a bare ``.mcap`` / ``.db3`` file).

    Args:
        path: the bag.

    Raises:
        BagError: the path does not exist or is not a rosbag2 bag.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            msg = f"session bag {self.path} does not exist"
            raise BagError(msg)
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            msg = (
                f"{self.path} is not a rosbag2 bag (no metadata.yaml); pass the bag directory "
                "written by `revavatar record` or `ros2 bag record`"
            )
            raise BagError(msg)
        try:
            self._reader = Reader(self.path)
        except (ReaderError, FileNotFoundError) as err:
            msg = f"{self.path} is not a rosbag2 bag: {err}"
            raise BagError(msg) from err
        self._typestore = default_typestore()
        self._open = False

    def open(self) -> None:
        """Open the bag's storage.

        Raises:
            BagError: the metadata or storage file is corrupt or of an unknown format.
        """
        try:
            self._reader.open()
        except (ReaderError, FileNotFoundError, KeyError, ValueError) as err:
            msg = f"cannot read session bag {self.path}: {err}"
            raise BagError(msg) from err
        self._open = True

    def close(self) -> None:
        """Close the storage."""
        if self._open:
            self._reader.close()
            self._open = False

    def __enter__(self) -> Self:
        """Open the bag."""
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the bag."""
        self.close()

    def _check_open(self) -> None:
        if not self._open:
            msg = f"session bag {self.path} is not open; use `with SessionReader(...) as r:`"
            raise BagError(msg)

    def topics(self) -> dict[str, str]:
        """Topic -> message type (e.g. ``sensor_msgs/msg/Image``) of every topic in the bag."""
        self._check_open()
        return {conn.topic: conn.msgtype for conn in self._reader.connections}

    @property
    def message_counts(self) -> dict[str, int]:
        """Topic -> number of messages."""
        self._check_open()
        counts: dict[str, int] = {}
        for conn in self._reader.connections:
            counts[conn.topic] = counts.get(conn.topic, 0) + conn.msgcount
        return counts

    @property
    def duration_ns(self) -> int:
        """Time (ns) between the first and the last message; 0 for an empty bag."""
        self._check_open()
        if self._reader.message_count == 0:
            return 0
        # rosbags' end_time is one past the last message
        return int(self._reader.end_time - 1 - self._reader.start_time)

    @property
    def custom_data(self) -> dict[str, str]:
        """String metadata of ``metadata.yaml`` (e.g. ``revavatar.calibration``); empty if none."""
        self._check_open()
        return dict(self._reader.storage.metadata.custom or {})

    @property
    def start_ns(self) -> int:
        """Timestamp (ns) of the first message; 0 for an empty bag."""
        self._check_open()
        return int(self._reader.start_time) if self._reader.message_count else 0

    def messages(
        self, topics: Iterable[str] | None = None
    ) -> Iterator[tuple[str, int, Image | CameraInfo]]:
        """Yield ``(topic, timestamp ns, message)`` in time order.

        Args:
            topics: topics to read; ``None`` reads every Image and CameraInfo topic (other types,
                e.g. ``/tf``, are skipped).

        Raises:
            BagError: a requested topic is missing or not an Image/CameraInfo topic, or a message
                does not deserialise.
        """
        self._check_open()
        conns = self._select(topics)
        if not conns:
            return
        for conn, timestamp, raw in self._reader.messages(connections=conns):
            try:
                ros_msg = self._typestore.deserialize_cdr(raw, conn.msgtype)
            except (SerdeError, ValueError, IndexError, AssertionError) as err:
                msg = f"{self.path}: corrupt {conn.msgtype} on {conn.topic} at {timestamp} ns: {err}"
                raise BagError(msg) from err
            yield conn.topic, int(timestamp), from_ros(ros_msg)

    def _select(self, topics: Iterable[str] | None) -> list[Connection]:
        supported = set(_MSGTYPE_OF.values())
        conns = self._reader.connections
        if topics is None:
            return [c for c in conns if c.msgtype in supported]
        wanted = set(topics)
        have = {c.topic: c.msgtype for c in conns}
        missing = sorted(wanted - have.keys())
        if missing:
            msg = (
                f"{self.path} has no topic {', '.join(missing)}; "
                f"it has: {', '.join(sorted(have)) or 'no topics'}"
            )
            raise BagError(msg)
        unsupported = sorted(t for t in wanted if have[t] not in supported)
        if unsupported:
            desc = ", ".join(f"{t} ({have[t]})" for t in unsupported)
            msg = f"{self.path}: cannot read {desc}; only {', '.join(sorted(supported))} are supported"
            raise BagError(msg)
        return [c for c in conns if c.topic in wanted]


def validate_session(
    reader: SessionReader, calibration: HeadsetCalibration, *, full: bool = False
) -> None:
    """Check that a bag can drive the graph for this headset before any processing starts.

    A wrong bag otherwise fails deep inside a node with a confusing error, so this checks up front
    that every headset camera has an image topic of the right type, a supported encoding and the
    calibrated resolution.

    Args:
        reader: an open :class:`SessionReader`.
        calibration: the headset calibration the session will be processed with.
        full: check every image, not only the first one of each camera (slower on long bags).

    Raises:
        BagError: an image topic is missing or mistyped, has no messages, or its image size
            differs from the calibration resolution.
        BagEncodingError: an image uses an encoding outside :data:`ENCODINGS` (a BagError and an
            EncodingError at once).
    """
    topics = reader.topics()
    wanted = {cam: image_topic(cam) for cam in CAMERA_NAMES}
    missing = [t for t in wanted.values() if t not in topics]
    if missing:
        msg = (
            f"{reader.path} lacks {', '.join(missing)}; it has: "
            f"{', '.join(sorted(topics)) or 'no topics'}"
        )
        raise BagError(msg)
    for cam, topic in wanted.items():
        if topics[topic] != IMAGE_MSGTYPE:
            msg = f"{reader.path}: {topic} carries {topics[topic]}, expected {IMAGE_MSGTYPE}"
            raise BagError(msg)
        if cam not in calibration.cameras:
            msg = f"calibration {calibration.name!r} has no camera {cam!r}"
            raise BagError(msg)
        width, height = calibration.cameras[cam].resolution
        seen = False
        for _, stamp, img in reader.messages([topic]):
            seen = True
            if not isinstance(img, Image):  # pragma: no cover - topic type checked above
                continue
            if img.encoding not in ENCODINGS:
                msg = (
                    f"{reader.path}: {topic} uses unsupported image encoding {img.encoding!r} "
                    f"(at {stamp} ns); expected one of {', '.join(ENCODINGS)}"
                )
                raise BagEncodingError(msg)
            if (img.width, img.height) != (width, height):
                recorded = reader.custom_data.get("revavatar.calibration")
                hint = f"; it was recorded with calibration {recorded!r}" if recorded else ""
                msg = (
                    f"{reader.path}: {topic} images are {img.width}x{img.height} but calibration "
                    f"{calibration.name!r} says {cam} is {width}x{height} (bag from another headset?)"
                    f"{hint}"
                )
                raise BagError(msg)
            if not full:
                break
        if not seen:
            msg = f"{reader.path}: {topic} has no messages"
            raise BagError(msg)
