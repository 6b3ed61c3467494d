"""Image message <-> numpy conversions: round trips per encoding, cv_bridge parity, bad input."""

from __future__ import annotations

import array
import math
import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from panoptic_ros.errors import PanopticRosError
from panoptic_ros.ros import conversions
from panoptic_ros.ros.conversions import (
    DEFAULT_INPUT_BUDGET,
    ENCODINGS,
    INPUT_ENCODINGS,
    ImageConversionError,
    InputBudget,
    array_to_image,
    compressed_image_size,
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
    ok, jpeg = cv2.imencode(".jpg", rgb_image(64, 64))
    jpeg = jpeg.tobytes()
    sos = jpeg.index(b"\xff\xda")
    assert len(jpeg) > sos + 1000
    for data, reason in [
        (b"", "no data"),
        (b"\xff\xd8\xff\xe0 this is not a jpeg", "truncated JPEG header"),
        (jpeg[:20], "truncated JPEG header"),
        (jpeg[: sos + 40], "does not decode"),  # header intact, scan data cut short
    ]:
        msg = CompressedImage(format="jpeg")
        msg.data = array.array("B", data)
        with pytest.raises(ImageConversionError, match=reason):
            compressed_to_rgb(msg)


# --- Input budget -----------------------------------------------------------------------------


def test_input_budget_defaults_and_validation():
    assert DEFAULT_INPUT_BUDGET == InputBudget(4096 * 4096, 32 * 1024 * 1024, "refuse")
    assert InputBudget(oversize="reduce").oversize == "reduce"
    with pytest.raises(ValueError, match="oversize must be one of refuse, reduce, got 'shrink'"):
        InputBudget(oversize="shrink")
    with pytest.raises(ValueError, match="max_pixels must be >= 1, got 0"):
        InputBudget(max_pixels=0)
    with pytest.raises(ValueError, match="max_compressed_bytes must be >= 1, got -5"):
        InputBudget(max_compressed_bytes=-5)
    with pytest.raises(TypeError, match="max_pixels must be an integer"):
        InputBudget(max_pixels=1.5e6)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_bytes(width: int, height: int, idat: bytes = b"") -> bytes:
    """Signature + IHDR (8-bit RGB) + IDAT, built from the PNG specification by hand."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def jpeg_header_bytes(width: int, height: int, sof: int = 0xC0, prefix: bytes = b"") -> bytes:
    """SOI, an APP0 and a COM segment, ``prefix``, a 3-component SOFn, a 3-component SOS."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    com = b"\xff\xfe" + struct.pack(">H", 2 + 5) + b"hello"
    frame = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sofn = bytes([0xFF, sof]) + struct.pack(">H", 2 + len(frame)) + frame
    sos = b"\xff\xda" + struct.pack(">HB", 12, 3) + b"\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    return b"\xff\xd8" + app0 + com + prefix + sofn + sos + b"\x00" * 8 + b"\xff\xd9"


def rgb_image(h: int, w: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def encoded(ext: str, pixels: np.ndarray, *params: int) -> bytes:
    ok, data = cv2.imencode(ext, pixels, list(params))
    assert ok
    return data.tobytes()


def compressed_msg(data: bytes, fmt: str = "jpeg") -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", data)
    return msg


def test_compressed_image_size_reads_real_headers():
    img = rgb_image(37, 53)
    assert compressed_image_size(encoded(".png", img)) == ("png", 53, 37)
    assert compressed_image_size(encoded(".png", img[..., 0])) == ("png", 53, 37)
    assert compressed_image_size(encoded(".png", img.astype(np.uint16) * 257)) == ("png", 53, 37)
    jpeg = encoded(".jpg", img)
    assert compressed_image_size(jpeg) == ("jpeg", 53, 37)
    # Any bytes-like container works: bytes, array.array, ndarray, memoryview.
    for data in (array.array("B", jpeg), np.frombuffer(jpeg, np.uint8), memoryview(jpeg)):
        assert compressed_image_size(data) == ("jpeg", 53, 37)
    progressive = encoded(".jpg", img, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert compressed_image_size(progressive) == ("jpeg", 53, 37)


def test_compressed_image_size_from_hand_built_headers():
    assert compressed_image_size(png_header_bytes(30000, 30000)) == ("png", 30000, 30000)
    assert compressed_image_size(jpeg_header_bytes(640, 480)) == ("jpeg", 640, 480)
    assert compressed_image_size(jpeg_header_bytes(65535, 2, sof=0xC2)) == ("jpeg", 65535, 2)
    # Fill bytes before a marker, skipped segments, and a DHT (C4) that is not a frame header.
    dht = b"\xff\xc4" + struct.pack(">H", 2 + 3) + b"\x00\x00\x00"
    tricky = b"\xff\xff\xff\xe1" + struct.pack(">H", 6) + b"\xff\xc0\xff\xc0" + dht
    assert compressed_image_size(jpeg_header_bytes(7, 5, prefix=tricky)) == ("jpeg", 7, 5)
    # libjpeg skips stray bytes before a marker (with a warning); so does the header reader.
    assert compressed_image_size(jpeg_header_bytes(9, 4, prefix=b"\x00\x00")) == ("jpeg", 9, 4)


@pytest.mark.parametrize("data,reason", [
    (b"GIF89a\x01\x00\x01\x00", "unsupported compressed format: only jpeg and png are accepted"),
    (b"BM" + bytes(60), "unsupported compressed format"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "unsupported compressed format"),
    (b"\xff\xd8", "truncated compressed image: 2 bytes"),
    (b"\x89PNG", "truncated compressed image: 4 bytes"),
    (png_header_bytes(4, 4)[:30], "truncated PNG header: 30 bytes < 33"),
    (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IDAT", bytes(13)), "malformed PNG header: first chunk"),
    (png_header_bytes(0, 4), "PNG header declares zero size \\(0x4\\)"),
    (png_header_bytes(2**31, 4), "over the format's 2\\*\\*31-1"),
    (jpeg_header_bytes(8, 0), "JPEG header declares zero size \\(8x0\\)"),
    (jpeg_header_bytes(8, 8)[:36], "truncated JPEG header: frame header cut off"),
    (b"\xff\xd8\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00", "scan data \\(SOS\\) before the frame"),
    (b"\xff\xd8\xff\xd9", "marker 0xFFD9 before the frame header"),
    (b"\xff\xd8\xff\xe0\x00\x01", "segment 0xFFE0 has length 1 < 2"),
    (b"\xff\xd8\xff\xc0\x00\x05\x08\x00\x01", "frame header of length 5 < 8"),
    (b"\xff\xd8" + b"\xff\xfe\x00\x02" * 5000, "no frame header \\(SOFn\\) in the first 4096"),
    (b"\xff\xd8" + b"\xff\x00" * 5000, "more than 4096 stuffed zeros"),
])
def test_compressed_header_errors(data, reason):
    with pytest.raises(ImageConversionError, match=reason):
        compressed_image_size(data)
    with pytest.raises(ImageConversionError, match=reason):
        compressed_to_rgb(compressed_msg(data))


def test_compressed_payload_over_the_byte_budget_is_refused_before_parsing():
    msg = compressed_msg(b"GIF89a" + bytes(100))  # not even a supported format
    reason = "106 bytes exceeds the limit of 100 bytes \\(max_compressed_bytes\\)"
    with pytest.raises(ImageConversionError, match=reason):
        compressed_to_rgb(msg, InputBudget(max_compressed_bytes=100))


@pytest.mark.parametrize("oversize", ["refuse", "reduce"])
def test_png_declaring_too_many_pixels_is_refused_under_both_policies(oversize):
    msg = compressed_msg(png_header_bytes(30000, 30000, zlib.compress(b"\x00" * 30001)), "png")
    with pytest.raises(ImageConversionError) as err:
        compressed_to_rgb(msg, InputBudget(oversize=oversize))
    text = str(err.value)
    assert "png declaring 30000x30000 (900000000 pixels)" in text
    assert "budget of 16777216 pixels (parameter max_image_pixels)" in text
    if oversize == "refuse":
        assert "refused under oversize_policy 'refuse'" in text
    else:
        assert "PNG cannot be decoded at reduced size" in text


def test_png_within_budget_is_decoded_exactly_at_the_limit():
    img = rgb_image(10, 14)
    msg = compressed_msg(encoded(".png", img[..., ::-1]), "png")
    np.testing.assert_array_equal(compressed_to_rgb(msg, InputBudget(max_pixels=140)), img)
    with pytest.raises(ImageConversionError, match="14x10 \\(140 pixels\\) exceeds"):
        compressed_to_rgb(msg, InputBudget(max_pixels=139))


@pytest.mark.parametrize("max_pixels,k,flag", [
    (51 * 102, 2, cv2.IMREAD_REDUCED_COLOR_2),
    (51 * 102 - 1, 4, cv2.IMREAD_REDUCED_COLOR_4),
    (26 * 51, 4, cv2.IMREAD_REDUCED_COLOR_4),
    (13 * 26, 8, cv2.IMREAD_REDUCED_COLOR_8),
])
def test_oversized_baseline_jpeg_is_decoded_reduced_by_libjpeg(max_pixels, k, flag):
    jpeg = encoded(".jpg", rgb_image(101, 203))
    rgb = compressed_to_rgb(compressed_msg(jpeg), InputBudget(max_pixels, oversize="reduce"))
    assert rgb.shape == (math.ceil(101 / k), math.ceil(203 / k), 3)
    assert rgb.shape[0] * rgb.shape[1] <= max_pixels
    expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), flag), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(rgb, expected)


def test_jpeg_reduce_refusals_say_why():
    img = rgb_image(101, 203)
    baseline = compressed_msg(encoded(".jpg", img))
    with pytest.raises(ImageConversionError, match="even decoded at 1/8 \\(26x13\\) it does not"):
        compressed_to_rgb(baseline, InputBudget(max_pixels=13 * 26 - 1, oversize="reduce"))
    with pytest.raises(ImageConversionError, match="oversize_policy 'refuse'"):
        compressed_to_rgb(baseline, InputBudget(max_pixels=13 * 26))
    progressive = compressed_msg(encoded(".jpg", img, cv2.IMWRITE_JPEG_PROGRESSIVE, 1))
    with pytest.raises(ImageConversionError, match="progressive, lossless or multi-scan JPEG"):
        compressed_to_rgb(progressive, InputBudget(max_pixels=10000, oversize="reduce"))
    # Within budget, progressive JPEG decodes as before.
    assert compressed_to_rgb(progressive).shape == (101, 203, 3)


def test_decoded_size_must_match_the_header_and_opencv_errors_are_wrapped(monkeypatch):
    msg = compressed_msg(encoded(".jpg", rgb_image(8, 12)))

    def wrong_size(data, flags):
        return np.zeros((9, 12, 3), np.uint8)

    monkeypatch.setattr(conversions.cv2, "imdecode", wrong_size)
    with pytest.raises(ImageConversionError, match="decoded to shape \\(9, 12, 3\\), but its "
                       "header declares 12x8"):
        compressed_to_rgb(msg)

    def rotated(data, flags):  # EXIF orientation swaps the sides: still the declared pixels
        return np.zeros((12, 8, 3), np.uint8)

    monkeypatch.setattr(conversions.cv2, "imdecode", rotated)
    assert compressed_to_rgb(msg).shape == (12, 8, 3)

    def failing(data, flags):
        raise cv2.error("out of memory")

    monkeypatch.setattr(conversions.cv2, "imdecode", failing)
    with pytest.raises(ImageConversionError, match="does not decode: out of memory"):
        compressed_to_rgb(msg)


def test_raw_image_over_budget_is_refused_with_the_parameter_names():
    msg = array_to_image(raw_pixels("bgr8"), "bgr8")  # 8x6 = 48 pixels
    np.testing.assert_array_equal(image_to_rgb(msg, InputBudget(max_pixels=48)),
                                  raw_pixels("bgr8")[..., ::-1])
    with pytest.raises(ImageConversionError) as err:
        image_to_rgb(msg, InputBudget(max_pixels=47))
    assert str(err.value) == (
        "bgr8 image 8x6 (48 pixels) exceeds the input budget of 47 pixels (parameter "
        "max_image_pixels); refused under oversize_policy 'refuse' (set 'reduce' to convert it "
        "at reduced size)"
    )


@pytest.mark.parametrize("field", ["height", "width", "step"])
def test_absurd_dimensions_are_refused_before_any_arithmetic(field):
    msg = good_msg()
    setattr(msg, field, 2**31)
    with pytest.raises(ImageConversionError, match=f"image {field} 2147483648 is out of range"):
        image_to_rgb(msg, InputBudget(oversize="reduce"))
    with pytest.raises(ImageConversionError, match="out of range"):
        image_to_array(msg)


def test_huge_declared_size_with_little_data_is_refused_in_reduce_mode():
    msg = good_msg()
    msg.height, msg.width, msg.step = 2**31 - 1, 2**20, 3 * 2**20
    with pytest.raises(ImageConversionError, match="data has 144 bytes, expected step"):
        image_to_rgb(msg, InputBudget(oversize="reduce"))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "mono8", "mono16"])
@pytest.mark.parametrize("max_pixels,k", [(48, 1), (47, 2), (12, 2), (11, 3), (6, 3), (5, 4),
                                          (2, 6), (1, 8)])
def test_reduce_strides_raw_pixels_before_conversion(encoding, max_pixels, k):
    raw = raw_pixels(encoding)  # 6 x 8
    for big_endian in (False, True):
        msg = hand_made_msg(raw, encoding, pad=3, big_endian=big_endian)
        rgb = image_to_rgb(msg, InputBudget(max_pixels=max_pixels, oversize="reduce"))
        assert rgb.shape == (math.ceil(6 / k), math.ceil(8 / k), 3)
        np.testing.assert_array_equal(rgb, cv_bridge_rgb(raw, encoding)[::k, ::k])


def test_reduced_rgb8_is_still_a_view_of_the_message():
    msg = hand_made_msg(raw_pixels("rgb8"), "rgb8", pad=2)
    rgb = image_to_rgb(msg, InputBudget(max_pixels=12, oversize="reduce"))
    assert rgb.shape == (3, 4, 3) and np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("encoding", sorted(BAYER_LAYOUT))
def test_reduce_keeps_whole_bayer_cells(encoding):
    raw = raw_pixels(encoding, h=9, w=12, seed=4)  # 4 x 6 whole cells; the odd last row drops
    msg = hand_made_msg(raw, encoding)
    # m = 2: every other cell in both directions, rows 0 1 4 5, columns 0 1 4 5 8 9.
    rgb = image_to_rgb(msg, InputBudget(max_pixels=24, oversize="reduce"))
    mosaic = raw[np.ix_([0, 1, 4, 5], [0, 1, 4, 5, 8, 9])]
    np.testing.assert_array_equal(rgb, cv_bridge_rgb(mosaic, encoding))
    # m = 3: rows 0 1 6 7, columns 0 1 6 7.
    rgb = image_to_rgb(msg, InputBudget(max_pixels=23, oversize="reduce"))
    np.testing.assert_array_equal(rgb, cv_bridge_rgb(raw[np.ix_([0, 1, 6, 7], [0, 1, 6, 7])],
                                                     encoding))
    # A flat colour stays that colour: the pattern survived the reduction.
    colour = np.array([200, 90, 20], np.uint8)
    flat = colour[np.tile(np.array(BAYER_LAYOUT[encoding]), (8, 8))]
    rgb = image_to_rgb(array_to_image(flat, encoding), InputBudget(max_pixels=64,
                                                                   oversize="reduce"))
    assert rgb.shape == (8, 8, 3)
    np.testing.assert_array_equal(rgb[2:-2, 2:-2], np.broadcast_to(colour, (4, 4, 3)))
    with pytest.raises(ImageConversionError, match="whole 2x2 Bayer cells"):
        image_to_rgb(msg, InputBudget(max_pixels=3, oversize="reduce"))


@pytest.mark.parametrize("encoding", ["yuv422", "yuyv"])
def test_reduce_keeps_whole_yuv_pairs(encoding):
    raw = raw_pixels(encoding, h=5, w=12, seed=5)  # 6 pairs per row
    msg = hand_made_msg(raw, encoding, pad=1)
    # m = 2: rows 0 2 4, pairs 0 2 4 (pixels 0 1 4 5 8 9): 3 x 6 = 18 pixels.
    rgb = image_to_rgb(msg, InputBudget(max_pixels=18, oversize="reduce"))
    np.testing.assert_array_equal(rgb, cv_bridge_rgb(raw[np.ix_([0, 2, 4], [0, 1, 4, 5, 8, 9])],
                                                     encoding))
    with pytest.raises(ImageConversionError, match="whole YUV pixel pairs"):
        image_to_rgb(msg, InputBudget(max_pixels=1, oversize="reduce"))


def test_reduce_makes_no_full_size_copy():
    raw = np.zeros((1500, 2000), np.uint16)
    raw[::3] = 40000
    msg = hand_made_msg(raw, "mono16", big_endian=True)  # a foreign byte order: needs a swap
    tracemalloc.start()
    try:
        rgb = image_to_rgb(msg, InputBudget(max_pixels=30_000, oversize="reduce"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rgb.shape == (150, 200, 3)  # k = 10
    np.testing.assert_array_equal(rgb, cv_bridge_rgb(raw, "mono16")[::10, ::10])
    assert peak < 1_000_000  # the full-size swap alone would be 6 MB


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 7, 3), (1, 1), (1, 5), (3, 1, 3)])
def test_array_to_image_step_is_the_row_length_for_single_row_images(shape):
    """numpy may give a length-1 axis any stride: step must still be one row's bytes."""
    pixels = np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape)
    pixels = np.ascontiguousarray(pixels[..., ::-1][..., ::-1])  # a copy, as the node makes
    encoding = "rgb8" if len(shape) == 3 else "8UC1"
    msg = array_to_image(pixels, encoding)
    assert msg.step == shape[1] * (3 if len(shape) == 3 else 1)
    np.testing.assert_array_equal(image_to_array(msg), pixels)
