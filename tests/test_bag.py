"""revavatar.bag: real rosbag2 round trips (MCAP, sqlite3) and interop with rosbags' own API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rosbags.image import message_to_cvimage
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from revavatar.bag import (
    STORAGES,
    BagEncodingError,
    SessionReader,
    SessionWriter,
    camera_info_topic,
    from_ros,
    image_topic,
    to_ros,
    validate_session,
)
from revavatar.core.calibration import CAMERA_NAMES, HeadsetCalibration
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
from revavatar.errors import BagError, EncodingError
from tiny_headset import SIZES as TINY_SIZES
from tiny_headset import small_calibration as tiny_calibration

SIZES = TINY_SIZES


def small_calibration() -> HeadsetCalibration:
    """The tiny profile with a little lens distortion, so CameraInfo carries a non-zero D."""
    return tiny_calibration(k1=0.01)


def _array(encoding: str, h: int, w: int, seed: int) -> np.ndarray:
    dtype, channels = ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


def _padded(img: Image, pad: int) -> Image:
    rows = [img.data[i * img.step : (i + 1) * img.step] + bytes(range(pad)) for i in range(img.height)]
    return Image(img.header, img.height, img.width, img.encoding, 0, img.step + pad, b"".join(rows))


def _variants(stamp0: int) -> list[Image]:
    """Every encoding, plus a padded bgr8 and a big-endian padded mono16."""
    out = [
        array_to_image(_array(enc, 5, 7, i), enc, stamp0 + i * 1000, f"f{i}")
        for i, enc in enumerate(sorted(ENCODINGS))
    ]
    out.append(_padded(array_to_image(_array("bgr8", 4, 6, 9), "bgr8", stamp0 + 9000, "pad"), 5))
    be = _array("mono16", 4, 6, 10)
    rows = b"".join(r.astype(">u2").tobytes() + b"\xab\xcd\xef" for r in be)
    out.append(Image(Header(Time.from_ns(stamp0 + 10_000), "be"), 4, 6, "mono16", 1, 15, rows))
    return out


def _info(stamp: int) -> CameraInfo:
    return CameraInfo(
        header=Header(Time.from_ns(stamp), "revavatar/left_eye"),
        height=24,
        width=32,
        distortion_model="plumb_bob",
        d=(0.125, -1e-7, 0.0, 3.3, 1 / 3),
        k=tuple(float(v) for v in range(1, 10)),
        r=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0),
        p=tuple(float(v) / 7 for v in range(12)),
        binning_x=2,
        binning_y=3,
        roi=RegionOfInterest(1, 2, 3, 4, True),
    )


@pytest.mark.parametrize("storage", sorted(STORAGES))
def test_round_trip_bit_exact(tmp_path: Path, storage: str) -> None:
    images = _variants(1_700_000_000_000_000_000)
    info = _info(1_700_000_000_000_000_500)
    path = tmp_path / "bag"
    with SessionWriter(path, storage=storage) as w:
        for i, img in enumerate(images):
            w.write(f"/t/{i}", img)
        w.write("/t/info", info)
    assert (path / "metadata.yaml").is_file()
    meta = (path / "metadata.yaml").read_text()
    assert "version: 8" in meta  # the metadata version ROS 2 Humble and later all parse
    assert "custom_data: null" not in meta
    assert any(path.glob("*.mcap" if storage == "mcap" else "*.db3"))
    with SessionReader(path) as r:
        assert r.topics()["/t/0"] == "sensor_msgs/msg/Image"
        assert r.topics()["/t/info"] == "sensor_msgs/msg/CameraInfo"
        assert r.message_counts == {**{f"/t/{i}": 1 for i in range(len(images))}, "/t/info": 1}
        assert r.duration_ns == 10_000
        got = list(r.messages())
    stamps = [s for _, s, _ in got]
    assert stamps == sorted(stamps)
    by_topic = {t: m for t, _, m in got}
    for i, img in enumerate(images):
        assert by_topic[f"/t/{i}"] == img  # dataclass equality: every field, data bytes included
    assert by_topic["/t/info"] == info
    # the padded and big-endian ones still decode to the original pixels
    last = by_topic[f"/t/{len(images) - 1}"]
    np.testing.assert_array_equal(image_to_array(last), _array("mono16", 4, 6, 10))


def test_messages_are_time_ordered_and_filterable(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    with SessionWriter(path) as w:
        for stamp in (30, 10, 20):  # written out of order
            w.write("/a", array_to_image(np.full((2, 2), stamp, np.uint8), "mono8", stamp))
            w.write("/b", _info(stamp + 1))
    with SessionReader(path) as r:
        assert [s for _, s, _ in r.messages()] == [10, 11, 20, 21, 30, 31]
        only_a = list(r.messages(["/a"]))
        assert [t for t, _, _ in only_a] == ["/a"] * 3
        assert [image_to_array(m)[0, 0] for _, _, m in only_a] == [10, 20, 30]
        with pytest.raises(BagError, match=r"no topic /c.*it has: /a, /b"):
            list(r.messages(["/c"]))


def test_rosbags_reader_and_rosbags_image_read_our_bag(tmp_path: Path) -> None:
    bgr = _array("bgr8", 6, 8, 1)
    rgba = _array("rgba8", 6, 8, 2)
    be16 = _array("mono16", 6, 8, 3)
    be_img = Image(Header(Time(1, 2)), 6, 8, "mono16", 1, 16, be16.astype(">u2").tobytes())
    path = tmp_path / "bag"
    with SessionWriter(path) as w:
        w.write(image_topic("lower_face"), array_to_image(bgr, "bgr8", 100, "x"))
        w.write("/rgba", array_to_image(rgba, "rgba8", 200))
        w.write("/be", be_img)
        w.write(camera_info_topic("lower_face"), _info(100))
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    seen = {}
    with Reader(path) as reader:
        assert {c.topic: c.msgtype for c in reader.connections}[camera_info_topic("lower_face")] == (
            "sensor_msgs/msg/CameraInfo"
        )
        for conn, stamp, raw in reader.messages():
            seen[conn.topic] = (stamp, typestore.deserialize_cdr(raw, conn.msgtype))
    stamp, ros_img = seen[image_topic("lower_face")]
    assert stamp == 100
    assert ros_img.header.frame_id == "x"
    np.testing.assert_array_equal(message_to_cvimage(ros_img), bgr)
    np.testing.assert_array_equal(message_to_cvimage(ros_img, "rgb8"), bgr[..., ::-1])
    np.testing.assert_array_equal(message_to_cvimage(seen["/rgba"][1]), rgba)
    np.testing.assert_array_equal(message_to_cvimage(seen["/be"][1]), be16)
    ros_info = seen[camera_info_topic("lower_face")][1]
    np.testing.assert_array_equal(ros_info.k, np.arange(1, 10, dtype=np.float64))
    assert ros_info.roi.do_rectify is True
    assert ros_info.binning_y == 3


def test_session_reader_reads_a_bag_written_by_rosbags(tmp_path: Path) -> None:
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    img_t = typestore.types["sensor_msgs/msg/Image"]
    header_t = typestore.types["std_msgs/msg/Header"]
    time_t = typestore.types["builtin_interfaces/msg/Time"]
    tf_t = typestore.types["std_msgs/msg/String"]
    gray = _array("mono8", 4, 5, 4)
    path = tmp_path / "foreign"
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=typestore)
        other = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=typestore)
        for i in range(3):
            ros = img_t(
                header=header_t(stamp=time_t(sec=7, nanosec=i), frame_id="cam"),
                height=4, width=5, encoding="mono8", is_bigendian=0, step=8,
                data=np.frombuffer(b"".join(bytes(r) + b"pad" for r in (gray + i)), np.uint8),
            )
            writer.write(conn, 7_000_000_000 + i, typestore.serialize_cdr(ros, "sensor_msgs/msg/Image"))
            raw = typestore.serialize_cdr(tf_t(data="hi"), "std_msgs/msg/String")
            writer.write(other, 7_000_000_000 + i, raw)
    with SessionReader(path) as r:
        assert r.topics() == {"/cam/image": "sensor_msgs/msg/Image", "/chatter": "std_msgs/msg/String"}
        got = list(r.messages())  # the String topic is skipped, not an error
        assert [t for t, _, _ in got] == ["/cam/image"] * 3
        assert [s for _, s, _ in got] == [7_000_000_000, 7_000_000_001, 7_000_000_002]
        for i, (_, _, msg) in enumerate(got):
            assert isinstance(msg, Image)
            assert msg.step == 8
            np.testing.assert_array_equal(image_to_array(msg), gray + i)
        with pytest.raises(BagError, match="std_msgs/msg/String"):
            list(r.messages(["/chatter"]))


def test_to_ros_from_ros_field_for_field() -> None:
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    info = _info(5)
    ros = to_ros(info, typestore)
    assert ros.__msgtype__ == "sensor_msgs/msg/CameraInfo"
    assert from_ros(ros) == info
    img = _variants(0)[-1]
    ros_img = to_ros(img)
    assert (ros_img.is_bigendian, ros_img.step, ros_img.encoding) == (1, 15, "mono16")
    assert from_ros(ros_img) == img
    with pytest.raises(TypeError):
        to_ros("not a message", typestore)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="std_msgs/msg/String"):
        from_ros(typestore.types["std_msgs/msg/String"](data="x"))


def test_writer_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mcap, sqlite3"):
        SessionWriter(tmp_path / "x", storage="rosbag1")
    (tmp_path / "taken").mkdir()
    with pytest.raises(BagError, match="exists"):
        SessionWriter(tmp_path / "taken").open()
    with SessionWriter(tmp_path / "bag") as w:
        w.write("/a", _info(1))
        with pytest.raises(BagError, match="already carries sensor_msgs/msg/CameraInfo"):
            w.write("/a", array_to_image(np.zeros((2, 2), np.uint8), "mono8", 2))
        bad = CameraInfo(Header(), 1, 1, "plumb_bob", (), (1.0,), (), ())
        with pytest.raises(BagError, match="cannot serialise"):
            w.write("/bad", bad)
    with SessionReader(tmp_path / "bag") as r:
        assert r.message_counts == {"/a": 1}  # the failed writes left nothing behind


def test_missing_path_and_not_a_bag(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="does not exist"):
        SessionReader(tmp_path / "nope")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    with pytest.raises(BagError, match="not a rosbag2 bag"):
        SessionReader(folder)
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    with pytest.raises(BagError, match="not a rosbag2 bag"):
        SessionReader(junk)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9}\n")
    with pytest.raises(BagError, match="cannot read session bag"):
        SessionReader(corrupt).open()


def _session(path: Path, calib: HeadsetCalibration, override: dict[str, Any] | None = None,
             skip: str | None = None, frames: int = 2) -> Path:
    """A valid tiny session; ``override`` replaces one camera's Image, ``skip`` drops a camera."""
    override = override or {}
    with SessionWriter(path) as w:
        for i in range(frames):
            stamp = 1_000_000 + i * 33_000_000
            for cam in CAMERA_NAMES:
                if cam == skip:
                    continue
                c = calib.cameras[cam]
                w.write(camera_info_topic(cam), c.camera_info(stamp))
                if cam in override:
                    w.write(image_topic(cam), override[cam])
                    continue
                width, height = c.resolution
                arr = _array("mono8" if c.infrared else "bgr8", height, width, i)
                w.write(image_topic(cam), array_to_image(arr, "mono8" if c.infrared else "bgr8", stamp))
    return path


def test_validate_session_accepts_a_good_session(tmp_path: Path) -> None:
    calib = small_calibration()
    with SessionReader(_session(tmp_path / "ok", calib)) as r:
        validate_session(r, calib)
        validate_session(r, calib, full=True)
        assert r.message_counts[image_topic("left_eye")] == 2


def test_validate_session_missing_topic(tmp_path: Path) -> None:
    calib = small_calibration()
    with SessionReader(_session(tmp_path / "b", calib, skip="right_eye")) as r:
        expected = r"lacks /revavatar/right_eye/image_raw; it has: .*left_eye/image_raw"
        with pytest.raises(BagError, match=expected) as exc:
            validate_session(r, calib)
    assert "/revavatar/lower_face/camera_info" in str(exc.value)


def test_validate_session_unsupported_encoding(tmp_path: Path) -> None:
    calib = small_calibration()
    yuv = Image(Header(), 24, 32, "yuv422", 0, 64, bytes(64 * 24))
    with SessionReader(_session(tmp_path / "b", calib, override={"left_eye": yuv})) as r:
        with pytest.raises(BagError, match=r"/revavatar/left_eye/image_raw.*'yuv422'") as exc:
            validate_session(r, calib)
    assert isinstance(exc.value, EncodingError)
    assert isinstance(exc.value, BagEncodingError)


def test_validate_session_size_mismatch(tmp_path: Path) -> None:
    calib = small_calibration()
    big = array_to_image(_array("bgr8", 40, 64, 0), "bgr8", 5)
    with SessionReader(_session(tmp_path / "b", calib, override={"lower_face": big})) as r:
        expected = r"64x40 but calibration 'tiny' says lower_face is 48x32 \(bag from another headset\?\)"
        with pytest.raises(BagError, match=expected):
            validate_session(r, calib)


def test_bare_mcap_file_is_readable(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    img = array_to_image(_array("rgb8", 3, 4, 5), "rgb8", 42)
    with SessionWriter(path) as w:
        w.write("/x", img)
    (storage_file,) = path.glob("*.mcap")
    with SessionReader(storage_file) as r:
        assert list(r.messages()) == [("/x", 42, img)]
