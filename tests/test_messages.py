"""revavatar.core.messages: Image encode/decode for the six encodings, padding, endianness, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from revavatar.core.messages import (
    ENCODINGS,
    Header,
    Image,
    Time,
    array_to_image,
    image_to_array,
    image_to_bgr,
)
from revavatar.errors import EncodingError


def _sample(encoding: str, h: int = 5, w: int = 7, seed: int = 0) -> np.ndarray:
    dtype, channels = ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


def test_encodings_table_is_the_six_product_encodings() -> None:
    assert set(ENCODINGS) == {"mono8", "mono16", "rgb8", "bgr8", "rgba8", "bgra8"}


def test_time_split_and_join() -> None:
    t = Time.from_ns(12_345_678_901)
    assert (t.sec, t.nanosec) == (12, 345_678_901)
    assert t.to_ns() == 12_345_678_901
    assert Time.from_ns(0) == Time()


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_array_image_round_trip(encoding: str) -> None:
    arr = _sample(encoding)
    msg = array_to_image(arr, encoding, stamp_ns=3_000_000_007, frame_id="cam")
    dtype, channels = ENCODINGS[encoding]
    assert (msg.height, msg.width) == arr.shape[:2]
    assert msg.step == arr.shape[1] * channels * np.dtype(dtype).itemsize
    assert len(msg.data) == msg.height * msg.step
    assert msg.is_bigendian == 0
    assert msg.header.stamp.to_ns() == 3_000_000_007
    assert msg.header.frame_id == "cam"
    out = image_to_array(msg)
    assert out.dtype == arr.dtype
    np.testing.assert_array_equal(out, arr)


def test_mono16_little_endian_bytes() -> None:
    arr = np.array([[0x0102, 0xA0B0]], dtype=np.uint16)
    msg = array_to_image(arr, "mono16")
    assert msg.data == bytes([0x02, 0x01, 0xB0, 0xA0])


def test_big_endian_mono16_decodes_to_native_values() -> None:
    arr = _sample("mono16", 4, 6, seed=3)
    msg = Image(Header(), 4, 6, "mono16", 1, 12, arr.astype(">u2").tobytes())
    out = image_to_array(msg)
    assert out.dtype == np.uint16
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    # the same bytes read as little-endian are different values: is_bigendian matters
    swapped = image_to_array(Image(Header(), 4, 6, "mono16", 0, 12, msg.data))
    assert not np.array_equal(swapped, arr)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_padded_rows_are_skipped(encoding: str) -> None:
    arr = _sample(encoding, 3, 5, seed=1)
    plain = array_to_image(arr, encoding)
    pad = 6
    step = plain.step + pad
    rows = [plain.data[i * plain.step : (i + 1) * plain.step] + b"\xee" * pad for i in range(3)]
    padded = Image(plain.header, 3, 5, encoding, 0, step, b"".join(rows))
    np.testing.assert_array_equal(image_to_array(padded), arr)


def test_unknown_encoding_is_rejected() -> None:
    msg = Image(Header(), 2, 2, "yuv422", 0, 4, bytes(8))
    with pytest.raises(EncodingError, match="yuv422"):
        image_to_array(msg)
    with pytest.raises(EncodingError, match="yuv422"):
        array_to_image(np.zeros((2, 2), np.uint8), "yuv422")


def test_short_buffer_is_rejected() -> None:
    msg = Image(Header(), 4, 4, "mono8", 0, 4, bytes(15))
    with pytest.raises(EncodingError, match="15 bytes"):
        image_to_array(msg)


def test_step_smaller_than_row_is_rejected() -> None:
    msg = Image(Header(), 2, 4, "bgr8", 0, 8, bytes(64))
    with pytest.raises(EncodingError, match="step"):
        image_to_array(msg)


@pytest.mark.parametrize(
    ("arr", "encoding"),
    [
        (np.zeros((2, 2, 3), np.uint8), "mono8"),
        (np.zeros((2, 2), np.uint16), "mono8"),
        (np.zeros((2, 2), np.uint8), "mono16"),
        (np.zeros((2, 2, 4), np.uint8), "bgr8"),
        (np.zeros((2, 2, 3), np.float32), "rgb8"),
    ],
)
def test_array_that_does_not_fit_the_encoding(arr: np.ndarray, encoding: str) -> None:
    with pytest.raises(EncodingError, match=encoding):
        array_to_image(arr, encoding)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_image_to_bgr(encoding: str) -> None:
    bgr = _sample("bgr8", 6, 8, seed=2)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    source = {
        "bgr8": bgr,
        "rgb8": bgr[..., ::-1].copy(),
        "bgra8": np.dstack([bgr, np.full(bgr.shape[:2], 7, np.uint8)]),
        "rgba8": np.dstack([bgr[..., ::-1], np.full(bgr.shape[:2], 7, np.uint8)]),
        "mono8": gray,
        "mono16": gray.astype(np.uint16) * 256 + 255,  # top byte carries the value
    }[encoding]
    out = image_to_bgr(array_to_image(source, encoding))
    assert out.shape == (6, 8, 3)
    assert out.dtype == np.uint8
    expected = np.dstack([gray] * 3) if encoding.startswith("mono") else bgr
    np.testing.assert_array_equal(out, expected)
