"""Property tests: any image message converts to the exact pixels or to ImageConversionError.

Raw frames: random encodings (every input encoding, output-only and unknown ones), sizes from
0, steps below, at and above the row length, both byte orders, data short, exact and long. The
expected RGB is recomputed here from the bytes with plain numpy and ``cv2.cvtColor`` on an
independently built array, never through :mod:`panoptic_ros.ros.conversions`. Compressed
frames: random bytes, truncated and corrupted real PNG/JPEG encodings, and headers that
declare huge sizes, including a real decompression bomb that must be refused without memory.
"""

from __future__ import annotations

import array
import math
import resource
import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image

from panoptic_ros.ros.conversions import (
    INPUT_ENCODINGS,
    ImageConversionError,
    InputBudget,
    compressed_image_size,
    compressed_to_rgb,
    image_to_rgb,
)

PROPERTY = settings(
    deadline=None, max_examples=200, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Independent of the module: (values per pixel, bytes per value, cvtColor code to RGB) as
# cv_bridge's getConversionCodes gives them.
LAYOUT = {
    "rgb8": (3, 1, None), "bgr8": (3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": (4, 1, cv2.COLOR_RGBA2RGB), "bgra8": (4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": (1, 1, cv2.COLOR_GRAY2RGB), "mono16": (1, 2, cv2.COLOR_GRAY2RGB),
    "yuv422": (2, 1, cv2.COLOR_YUV2RGB_UYVY), "uyvy": (2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, 1, cv2.COLOR_YUV2RGB_YUY2), "yuyv": (2, 1, cv2.COLOR_YUV2RGB_YUY2),
    "bayer_rggb8": (1, 1, cv2.COLOR_BayerBG2RGB), "bayer_bggr8": (1, 1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, 1, cv2.COLOR_BayerGR2RGB), "bayer_grbg8": (1, 1, cv2.COLOR_BayerGB2RGB),
}
YUV = {"yuv422", "uyvy", "yuv422_yuy2", "yuyv"}
NOT_INPUT = ["8UC1", "16UC1", "32SC1", "32FC1", "", "hsv8", "RGB8", "bgr16", "8UC3", "jpeg"]


def test_the_layout_table_covers_every_input_encoding():
    assert set(LAYOUT) == set(INPUT_ENCODINGS)


def make_image(encoding, height, width, step, data, big_endian) -> Image:
    msg = Image(height=height, width=width, encoding=encoding, step=step,
                is_bigendian=int(big_endian))
    msg.data = array.array("B", data)
    return msg


def expected_raw(msg: Image) -> np.ndarray | None:
    """The raw pixels, byte by byte from the message; None where the message is malformed."""
    if msg.encoding not in LAYOUT:
        return None
    channels, size, _ = LAYOUT[msg.encoding]
    h, w, step, data = msg.height, msg.width, msg.step, bytes(msg.data)
    row = w * channels * size
    if h == 0 or w == 0 or (msg.encoding in YUV and w % 2) or step < row or len(data) < step * h:
        return None
    flat = b"".join(data[r * step : r * step + row] for r in range(h))
    dtype = np.dtype((">" if msg.is_bigendian else "<") + ("u2" if size == 2 else "u1"))
    values = np.frombuffer(flat, dtype).astype(dtype.newbyteorder("="))
    return values.reshape((h, w) if channels == 1 else (h, w, channels))


def to_rgb(raw: np.ndarray, encoding: str) -> np.ndarray | None:
    """cv_bridge's rgb8 conversion of raw pixels; None where OpenCV refuses the array."""
    code = LAYOUT[encoding][2]
    if code is None:
        return raw
    try:
        out = cv2.cvtColor(np.ascontiguousarray(raw), code)
    except cv2.error:
        return None
    if raw.dtype == np.uint16:
        out = np.floor(out.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)
    return out


FLAWS = ["none"] * 5 + ["zero size", "odd yuv width", "step", "short data"]
PER_ENCODING = settings(PROPERTY, max_examples=60)  # x 15 encodings (one of them "not input")


@st.composite
def raw_messages(draw, encoding: str):
    """Messages with at most one drawn flaw (and random other sizes, steps, byte orders)."""
    flaw = draw(st.sampled_from(FLAWS))
    if encoding == "not input":
        encoding = draw(st.sampled_from(NOT_INPUT))
    height, width = draw(st.integers(1, 7)), draw(st.integers(1, 9))
    if flaw == "zero size":
        height, width = draw(st.sampled_from([(0, width), (height, 0), (0, 0)]))
    if encoding in YUV:
        width = width | 1 if flaw == "odd yuv width" else width + width % 2
    channels, size, _ = LAYOUT.get(encoding, (draw(st.integers(1, 4)), 1, None))
    row = width * channels * size
    step = row + draw(st.integers(-3, -1) if flaw == "step" else st.sampled_from([0, 0, 1, 5]))
    step = max(0, step)
    length = step * height + draw(st.integers(-4, -1) if flaw == "short data" else
                                  st.sampled_from([0, 0, 1, 3]))
    data = draw(st.binary(min_size=max(0, length), max_size=max(0, length)))
    return make_image(encoding, height, width, step, data, draw(st.booleans()))


@pytest.mark.parametrize("encoding", [*INPUT_ENCODINGS, "not input"])
@PER_ENCODING
@given(data=st.data(), max_pixels=st.sampled_from([None, None, 1, 20, 48]))
def test_raw_images_give_cv_bridge_pixels_or_the_package_error(encoding, data, max_pixels):
    msg = data.draw(raw_messages(encoding))
    budget = None if max_pixels is None else InputBudget(max_pixels=max_pixels)
    raw = expected_raw(msg)
    expected = None if raw is None else to_rgb(raw, msg.encoding)
    if expected is not None and max_pixels is not None and msg.height * msg.width > max_pixels:
        expected = None  # over the budget: refused
    event("refused" if expected is None else "converted")
    if expected is None:
        with pytest.raises(ImageConversionError):
            image_to_rgb(msg, budget)
        return
    rgb = image_to_rgb(msg, budget)
    assert rgb.dtype == np.uint8 and rgb.shape == (msg.height, msg.width, 3)
    np.testing.assert_array_equal(rgb, expected)


def smallest(fits, largest: int) -> int | None:
    return next((s for s in range(1, largest + 1) if fits(s)), None)


def expected_reduced(msg: Image, max_pixels: int) -> np.ndarray | None:
    """The documented reduction, recomputed by linear search over strides and index lists."""
    raw = expected_raw(msg)
    h, w, enc = msg.height, msg.width, msg.encoding
    if h * w <= max_pixels:
        return to_rgb(raw, enc)
    if enc.startswith("bayer_"):
        ch, cw = h // 2, w // 2
        m = smallest(lambda m: 4 * math.ceil(ch / m) * math.ceil(cw / m) <= max_pixels,
                     max(ch, cw) if ch and cw else 0)
        if m is None:
            return None
        rows = [r for c in range(0, ch, m) for r in (2 * c, 2 * c + 1)]
        cols = [x for c in range(0, cw, m) for x in (2 * c, 2 * c + 1)]
        return to_rgb(raw[np.ix_(rows, cols)], enc)
    if enc in YUV:
        pairs = w // 2
        m = smallest(lambda m: math.ceil(h / m) * 2 * math.ceil(pairs / m) <= max_pixels,
                     max(h, pairs))
        if m is None:
            return None
        cols = [x for p in range(0, pairs, m) for x in (2 * p, 2 * p + 1)]
        return to_rgb(raw[np.ix_(range(0, h, m), cols)], enc)
    k = smallest(lambda k: math.ceil(h / k) * math.ceil(w / k) <= max_pixels, max(h, w))
    full = to_rgb(raw, enc)
    return None if full is None else full[::k, ::k]


@st.composite
def valid_raw_messages(draw, encoding: str):
    height, width = draw(st.integers(1, 13)), draw(st.integers(1, 15))
    width += width % 2 if encoding in YUV else 0
    channels, size, _ = LAYOUT[encoding]
    step = width * channels * size + draw(st.integers(0, 3))
    data = draw(st.binary(min_size=step * height, max_size=step * height + 4))
    return make_image(encoding, height, width, step, data, draw(st.booleans()))


@pytest.mark.parametrize("encoding", INPUT_ENCODINGS)
@PER_ENCODING
@given(data=st.data())
def test_reduce_strides_raw_frames_to_the_budget(encoding, data):
    msg = data.draw(valid_raw_messages(encoding))
    max_pixels = data.draw(st.integers(1, msg.height * msg.width))
    budget = InputBudget(max_pixels=max_pixels, oversize="reduce")
    expected = expected_reduced(msg, max_pixels)
    event("refused" if expected is None else "converted")
    if expected is None:
        with pytest.raises(ImageConversionError):
            image_to_rgb(msg, budget)
        return
    rgb = image_to_rgb(msg, budget)
    assert rgb.shape[0] * rgb.shape[1] <= max_pixels
    np.testing.assert_array_equal(rgb, expected)


# --- Compressed -------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit grey PNG of zeros: tiny payload, ``3 * width * height`` bytes as BGR."""
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    z = zlib.compressobj(9)
    idat = b"".join([z.compress(row) for _ in range(height)] + [z.flush()])
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def compressed(data: bytes) -> CompressedImage:
    msg = CompressedImage(format="")
    msg.data = array.array("B", data)
    return msg


def opencv_rgb(data: bytes, flag: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decodes_exactly_or_refuses(data: bytes, budget: InputBudget | None = None) -> None:
    """The property: the exact OpenCV pixels, or ImageConversionError; nothing else."""
    try:
        rgb = compressed_to_rgb(compressed(data), budget)
    except ImageConversionError:
        event("refused")
        return
    event("decoded")
    expected = opencv_rgb(data)  # only decoded once the module has accepted the header
    assert expected is not None
    np.testing.assert_array_equal(rgb, expected)


@st.composite
def small_encodings(draw, formats=(".png", ".jpg"), progressive=(0, 1)):
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    fmt = draw(st.sampled_from(formats))
    channels = draw(st.sampled_from([1, 3]))
    deep = fmt == ".png" and draw(st.booleans())
    dtype = np.uint16 if deep else np.uint8
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(
        0, np.iinfo(dtype).max, (h, w, channels)[: 2 if channels == 1 else 3], endpoint=True
    ).astype(dtype)
    params = []
    if fmt == ".jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, draw(st.integers(5, 100)),
                  cv2.IMWRITE_JPEG_PROGRESSIVE, draw(st.sampled_from(progressive))]
    ok, data = cv2.imencode(fmt, pixels, params)
    assert ok
    return data.tobytes(), h, w


@PROPERTY
@given(prefix=st.sampled_from([b"", PNG_SIGNATURE, b"\xff\xd8\xff", b"\xff\xd8\xff\xc0",
                               PNG_SIGNATURE + b"\x00\x00\x00\x0dIHDR"]),
       tail=st.binary(max_size=120))
def test_random_bytes_never_raise_anything_else(prefix, tail):
    decodes_exactly_or_refuses(prefix + tail)
    try:
        fmt, width, height = compressed_image_size(prefix + tail)
    except ImageConversionError:
        return
    assert fmt in ("png", "jpeg") and width > 0 and height > 0


@PROPERTY
@given(encoding=small_encodings(), cut=st.one_of(st.just(1.0), st.floats(0, 1)),
       flip=st.one_of(st.none(), st.tuples(st.floats(0, 1), st.integers(1, 255))))
def test_truncated_and_corrupted_real_images(encoding, cut, flip):
    data, h, w = encoding
    assert compressed_image_size(data)[1:] == (w, h)
    full = compressed_to_rgb(compressed(data))
    np.testing.assert_array_equal(full, opencv_rgb(data))
    assert full.shape == (h, w, 3)
    damaged = bytearray(data[: int(cut * len(data))])
    if flip is not None and damaged:
        at = min(int(flip[0] * len(damaged)), len(damaged) - 1)
        damaged[at] ^= flip[1]
    decodes_exactly_or_refuses(bytes(damaged))


def patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the size in the first SOFn of a real JPEG (found by walking the segments)."""
    pos = 2
    while data[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return data[: pos + 5] + struct.pack(">HH", height, width) + data[pos + 9 :]


@PROPERTY
@given(encoding=small_encodings(),
       width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1),
       max_pixels=st.integers(1, 100_000), oversize=st.sampled_from(["refuse", "reduce"]))
def test_headers_declaring_huge_sizes_are_refused_before_decoding(
    encoding, width, height, max_pixels, oversize
):
    data = encoding[0]
    if data.startswith(PNG_SIGNATURE):
        ihdr = struct.pack(">II", width, height) + data[24:29]
        data = data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]
    else:
        width, height = width % 65535 + 1, height % 65535 + 1
        data = patch_jpeg_size(data, width, height)
    assert compressed_image_size(data)[1:] == (width, height)
    budget = InputBudget(max_pixels=max_pixels, oversize=oversize)
    if width * height <= max_pixels:
        decodes_exactly_or_refuses(data, budget)
        return
    try:
        rgb = compressed_to_rgb(compressed(data), budget)
    except ImageConversionError as err:
        assert "max_image_pixels" in str(err) or "does not decode" in str(err)
        event("oversize refused" if "max_image_pixels" in str(err) else "reduced: no decode")
        return
    event("oversize reduced")
    assert oversize == "reduce" and data.startswith(b"\xff\xd8")
    assert rgb.shape[0] * rgb.shape[1] <= max_pixels


@PROPERTY
@given(encoding=small_encodings(formats=(".jpg",), progressive=(0,)),
       fraction=st.floats(0, 1))
def test_reduce_decodes_baseline_jpeg_within_the_budget(encoding, fraction):
    data, h, w = encoding
    max_pixels = max(1, int(fraction * h * w))
    try:
        rgb = compressed_to_rgb(compressed(data), InputBudget(max_pixels, oversize="reduce"))
    except ImageConversionError as err:
        assert math.ceil(h / 8) * math.ceil(w / 8) > max_pixels, err
        event("refused")
        return
    k = next(k for k in (1, 2, 4, 8) if math.ceil(h / k) * math.ceil(w / k) <= max_pixels)
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
            4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[k]
    event(f"reduced 1/{k}")
    assert rgb.shape == (math.ceil(h / k), math.ceil(w / k), 3)
    assert rgb.shape[0] * rgb.shape[1] <= max_pixels
    np.testing.assert_array_equal(rgb, opencv_rgb(data, flag))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


@pytest.mark.parametrize("oversize", ["refuse", "reduce"])
def test_a_real_png_bomb_is_refused_without_memory(oversize):
    bomb = png_bomb(20000, 20000)  # decodes to 1.2 GB of BGR (and the same again as RGB)
    assert len(bomb) < 100_000
    assert compressed_image_size(bomb) == ("png", 20000, 20000)
    msg = compressed(bomb)
    before = peak_rss_mib()
    tracemalloc.start()
    try:
        with pytest.raises(ImageConversionError, match="png declaring 20000x20000"):
            compressed_to_rgb(msg, InputBudget(oversize=oversize))
        traced_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert traced_peak < 1_000_000
    assert peak_rss_mib() - before < 20


def test_a_small_bomb_within_budget_still_decodes_exactly():
    bomb = png_bomb(300, 200)
    rgb = compressed_to_rgb(compressed(bomb))
    assert rgb.shape == (200, 300, 3) and not rgb.any()


@pytest.mark.parametrize("oversize", ["refuse", "reduce"])
def test_a_jpeg_declaring_65000_squared_is_refused_without_memory(oversize):
    ok, jpeg = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    data = patch_jpeg_size(jpeg.tobytes(), 65000, 65000)
    before = peak_rss_mib()
    with pytest.raises(ImageConversionError, match="jpeg declaring 65000x65000"):
        compressed_to_rgb(compressed(data), InputBudget(oversize=oversize))
    assert peak_rss_mib() - before < 20
