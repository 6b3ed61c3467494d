"""Image message <-> numpy conversions: round trips per encoding, cv_bridge parity, bad input."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from panoptic_ros.errors import PanopticRosError
from panoptic_ros.ros.conversions import (
    ENCODINGS,
    INPUT_ENCODINGS,
    ImageConversionError,
    array_to_image,
    compressed_to_rgb,
    image_to_array,
    image_to_rgb,
)

# What cv_bridge (ROS 2 vision_opencv, getConversionCodes + toCvCopyImpl) runs for
# toCvCopy(msg, "rgb8"), written out independently of the module under test.
CV_BRIDGE_TO_RGB = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "mono16": cv2.COLOR_GRAY2RGB,  # followed by convertTo(CV_8U, 255 / 65535)
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}

SHAPES = {  # (channels, dtype) of the raw layout
    "rgb8": (3, np.uint8), "bgr8": (3, np.uint8), "rgba8": (4, np.uint8),
    "bgra8": (4, np.uint8), "mono8": (1, np.uint8), "mono16": (1, np.uint16),
    "yuv422": (2, np.uint8), "uyvy": (2, np.uint8), "yuv422_yuy2": (2, np.uint8),
    "yuyv": (2, np.uint8), "bayer_rggb8": (1, np.uint8), "bayer_bggr8": (1, np.uint8),
    "bayer_gbrg8": (1, np.uint8), "bayer_grbg8": (1, np.uint8),
}


def raw_pixels(encoding: str, h: int = 6, w: int = 8, seed: int = 0) -> np.ndarray:
    channels, dtype = SHAPES[encoding]
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


def hand_made_msg(
    pixels: np.ndarray, encoding: str, pad: int = 0, big_endian: bool = False
) -> Image:
    """An Image built byte by byte, independently of array_to_image: optional row padding."""
    h, w = pixels.shape[:2]
    data = pixels.astype(pixels.dtype.newbyteorder(">" if big_endian else "<"))
    rows = data.reshape(h, -1).view(np.uint8)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=int(big_endian))
    msg.step = rows.shape[1]
    msg.data = array.array("B", rows.tobytes())
    return msg


def cv_bridge_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    code = CV_BRIDGE_TO_RGB[encoding]
    out = pixels if code is None else cv2.cvtColor(np.ascontiguousarray(pixels), code)
    if pixels.dtype == np.uint16:
        # convertTo(CV_8U, alpha) = saturate_cast<uchar>(v * alpha): round to nearest.
        out = np.floor(out.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)
    return out


def test_every_required_encoding_is_accepted():
    assert set(CV_BRIDGE_TO_RGB) == set(INPUT_ENCODINGS)


@pytest.mark.parametrize("encoding", sorted(CV_BRIDGE_TO_RGB))
@pytest.mark.parametrize("pad", [0, 3])
def test_round_trip_and_cv_bridge_parity(encoding, pad):
    raw = raw_pixels(encoding)
    # array -> message -> array is exact, and the message layout is the canonical one.
    msg = array_to_image(raw, encoding)
    assert (msg.height, msg.width, msg.encoding) == (6, 8, encoding)
    assert msg.step == 8 * ENCODINGS[encoding].bytes_per_pixel
    assert bytes(msg.data) == raw.tobytes()
    np.testing.assert_array_equal(image_to_array(msg), raw)
    # A padded hand-made message decodes to the same pixels, and RGB equals cv_bridge's.
    padded = hand_made_msg(raw, encoding, pad=pad)
    np.testing.assert_array_equal(image_to_array(padded), raw)
    rgb = image_to_rgb(padded)
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, cv_bridge_rgb(raw, encoding))


def test_rgb8_is_a_zero_copy_view_even_with_padding():
    raw = raw_pixels("rgb8")
    for msg in (array_to_image(raw, "rgb8"), hand_made_msg(raw, "rgb8", pad=5)):
        rgb = image_to_rgb(msg)
        assert np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))
        np.testing.assert_array_equal(rgb, raw)


def test_mono16_big_endian_and_scaling():
    values = np.array([[0, 128, 129, 257, 385, 386, 32768, 65535]], np.uint16)
    expected = np.array([0, 0, 1, 1, 1, 2, 128, 255], np.uint8)
    for big in (False, True):
        msg = hand_made_msg(values, "mono16", big_endian=big)
        np.testing.assert_array_equal(image_to_array(msg), values)
        rgb = image_to_rgb(msg)
        for c in range(3):
            np.testing.assert_array_equal(rgb[0, :, c], expected)


def test_mono16_with_odd_step_is_realigned():
    raw = raw_pixels("mono16", seed=3)
    msg = hand_made_msg(raw, "mono16", pad=1)
    assert msg.step % 2 == 1
    np.testing.assert_array_equal(image_to_array(msg), raw)


BAYER_LAYOUT = {  # colour channel (0 R, 1 G, 2 B) at the 2x2 tile positions
    "bayer_rggb8": [[0, 1], [1, 2]],
    "bayer_bggr8": [[2, 1], [1, 0]],
    "bayer_gbrg8": [[1, 2], [0, 1]],
    "bayer_grbg8": [[1, 0], [2, 1]],
}


@pytest.mark.parametrize("encoding", sorted(BAYER_LAYOUT))
def test_bayer_patterns_decode_to_the_scene_colour(encoding):
    """The mapping is right by meaning, not just by table: a flat colour stays that colour."""
    colour = np.array([200, 90, 20], np.uint8)
    h = w = 8
    layout = np.array(BAYER_LAYOUT[encoding])
    channel = np.tile(layout, (h // 2, w // 2))
    mosaic = colour[channel].astype(np.uint8)
    rgb = image_to_rgb(array_to_image(mosaic, encoding))
    np.testing.assert_array_equal(rgb[2:-2, 2:-2], np.broadcast_to(colour, (h - 4, w - 4, 3)))


@pytest.mark.parametrize("encoding,order", [
    ("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv"),
])
def test_yuv422_byte_order_by_meaning(encoding, order):
    colour = np.array([30, 160, 220])
    # BT.601 studio range, the YUV that camera drivers send and OpenCV's 4:2:2 decoder reads.
    r, g, b = colour
    y = round(16 + 0.257 * r + 0.504 * g + 0.098 * b)
    u = round(128 - 0.148 * r - 0.291 * g + 0.439 * b)
    v = round(128 + 0.439 * r - 0.368 * g - 0.071 * b)
    pair = [u, y, v, y] if order == "uyvy" else [y, u, y, v]
    raw = np.tile(np.array(pair, np.uint8).reshape(1, 2, 2), (4, 3, 1))  # 4 x 6 pixels
    rgb = image_to_rgb(array_to_image(raw, encoding))
    assert np.abs(rgb.astype(int) - colour).max() <= 3


def test_output_encodings_round_trip():
    ids = np.arange(12, dtype=np.int32).reshape(3, 4) * 1000 + 7
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = array_to_image(ids, "32SC1", header)
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345
    assert (msg.step, msg.is_bigendian) == (16, 0)
    np.testing.assert_array_equal(image_to_array(msg), ids)
    with pytest.raises(ImageConversionError, match="no colour meaning"):
        image_to_rgb(msg)


def test_array_to_image_checks_dtype_and_channels():
    with pytest.raises(TypeError, match="uint8"):
        array_to_image(np.zeros((2, 2, 3), np.int32), "rgb8")
    with pytest.raises(ValueError, match="3 channel"):
        array_to_image(np.zeros((2, 2), np.uint8), "rgb8")


def good_msg() -> Image:
    return array_to_image(raw_pixels("rgb8"), "rgb8")


@pytest.mark.parametrize("mutate,reason", [
    (lambda m: setattr(m, "encoding", "hsv8"), "unsupported image encoding 'hsv8'"),
    (lambda m: setattr(m, "encoding", ""), "unsupported image encoding ''"),
    (lambda m: (setattr(m, "height", 0), setattr(m, "data", array.array("B"))), "zero size"),
    (lambda m: setattr(m, "width", 0), "zero size"),
    (lambda m: setattr(m, "step", 20), "step 20 < width 8"),
    (lambda m: setattr(m, "data", m.data[:-1]), "expected step 24 \\* height 6"),
    (lambda m: setattr(m, "data", array.array("B")), "data has 0 bytes"),
    (lambda m: (setattr(m, "encoding", "yuv422"), setattr(m, "width", 7),
                setattr(m, "step", 14)), "even width"),
])
def test_bad_images_raise_the_package_error(mutate, reason):
    msg = good_msg()
    mutate(msg)
    with pytest.raises(ImageConversionError, match=reason) as err:
        image_to_rgb(msg)
    assert isinstance(err.value, PanopticRosError) and isinstance(err.value, ValueError)


def test_longer_data_than_needed_is_accepted():
    raw = raw_pixels("bgr8")
    msg = array_to_image(raw, "bgr8")
    msg.data.extend(array.array("B", [1, 2, 3]))
    np.testing.assert_array_equal(image_to_rgb(msg), raw[..., ::-1])


def test_compressed_png_is_lossless_and_jpeg_matches_opencv():
    rgb = np.random.default_rng(1).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format="png")
    msg.data = array.array("B", png.tobytes())
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)

    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    msg = CompressedImage(format="rgb8; jpeg compressed bgr8")
    msg.data = array.array("B", jpeg.tobytes())
    expected = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(compressed_to_rgb(msg), expected)

    grey = rgb[..., 0].copy()
    ok, png = cv2.imencode(".png", grey)
    msg.data = array.array("B", png.tobytes())
    np.testing.assert_array_equal(compressed_to_rgb(msg), np.repeat(grey[..., None], 3, 2))


def test_corrupt_compressed_images_raise():
    ok, jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    for data, reason in [
        (b"", "no data"),
        (b"\xff\xd8\xff\xe0 this is not a jpeg", "does not decode"),
        (jpeg.tobytes()[:20], "does not decode"),
    ]:
        msg = CompressedImage(format="jpeg")
        msg.data = array.array("B", data)
        with pytest.raises(ImageConversionError, match=reason):
            compressed_to_rgb(msg)
