"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

Pixels come out exactly as ``cv_bridge.toCvShare(msg, "rgb8")`` / ``toCvCopy`` would give them:
the same OpenCV colour-conversion codes, the same ``step``, size and endianness rules, and the
same 16-bit -> 8-bit scaling (``255 / 65535``, rounded). The way in is zero-copy where the
encoding allows (``rgb8`` comes back as a strided view of the message buffer); the way out
fills ``Image.data`` with one fast buffer copy (``array.array.frombytes``: about 1 ms for a
1080p int32 image, where assigning a memoryview or ``ndarray.ravel()`` costs hundreds of ms).

Only the message *attributes* are used on the way in (``height``, ``width``, ``encoding``,
``step``, ``is_bigendian``, ``data``; ``format`` for compressed images), so the pure pixel
functions are testable without a ROS graph; nothing here imports rclpy.
"""

from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import Image

from panoptic_ros.errors import PanopticRosError


class ImageConversionError(PanopticRosError, ValueError):
    """An image message cannot be converted (the counterpart of cv_bridge's CvBridgeError).

    Raised for an unknown encoding, a zero-sized image, ``step < width * bytes_per_pixel``,
    ``data`` shorter than ``step * height``, a width the encoding cannot have (odd YUV 4:2:2)
    and compressed data that does not decode.
    """


@dataclass(frozen=True)
class Encoding:
    """Memory layout of a ``sensor_msgs/Image`` encoding and its conversion to RGB.

    Attributes:
        name: the encoding string of the message.
        channels: values per pixel in memory (2 for YUV 4:2:2: one luma, one chroma).
        dtype: numpy dtype of one value (native byte order).
        to_rgb: OpenCV ``cvtColor`` code to RGB as cv_bridge uses it, ``None`` for rgb8
            itself, ``-1`` when the encoding is output-only (no colour meaning).

    """

    name: str
    channels: int
    dtype: np.dtype
    to_rgb: int | None

    @property
    def bytes_per_pixel(self) -> int:
        """Bytes of one pixel in memory."""
        return self.channels * self.dtype.itemsize


def _enc(name: str, channels: int, dtype: type, to_rgb: int | None) -> Encoding:
    return Encoding(name, channels, np.dtype(dtype), to_rgb)


_OUTPUT_ONLY = -1

# cv_bridge (vision_opencv, getConversionCodes) maps each source encoding to these codes. The
# Bayer names follow OpenCV's historical convention, which differs from the sensor's: the
# ROS pattern rggb is OpenCV's BayerBG (equal to cv2.COLOR_BayerRGGB2RGB where that alias
# exists), bggr -> BayerRG, gbrg -> BayerGR, grbg -> BayerGB. "yuv422" is UYVY byte order and
# "yuv422_yuy2" is YUYV; ROS 2 also names them "uyvy" and "yuyv".
ENCODINGS: dict[str, Encoding] = {
    e.name: e
    for e in (
        _enc("rgb8", 3, np.uint8, None),
        _enc("bgr8", 3, np.uint8, cv2.COLOR_BGR2RGB),
        _enc("rgba8", 4, np.uint8, cv2.COLOR_RGBA2RGB),
        _enc("bgra8", 4, np.uint8, cv2.COLOR_BGRA2RGB),
        _enc("mono8", 1, np.uint8, cv2.COLOR_GRAY2RGB),
        _enc("mono16", 1, np.uint16, cv2.COLOR_GRAY2RGB),
        _enc("yuv422", 2, np.uint8, cv2.COLOR_YUV2RGB_UYVY),
        _enc("uyvy", 2, np.uint8, cv2.COLOR_YUV2RGB_UYVY),
        _enc("yuv422_yuy2", 2, np.uint8, cv2.COLOR_YUV2RGB_YUY2),
        _enc("yuyv", 2, np.uint8, cv2.COLOR_YUV2RGB_YUY2),
        _enc("bayer_rggb8", 1, np.uint8, cv2.COLOR_BayerBG2RGB),
        _enc("bayer_bggr8", 1, np.uint8, cv2.COLOR_BayerRG2RGB),
        _enc("bayer_gbrg8", 1, np.uint8, cv2.COLOR_BayerGR2RGB),
        _enc("bayer_grbg8", 1, np.uint8, cv2.COLOR_BayerGB2RGB),
        # Output-only encodings (label images); accepted by image_to_array, not by *_to_rgb.
        _enc("8UC1", 1, np.uint8, _OUTPUT_ONLY),
        _enc("16UC1", 1, np.uint16, _OUTPUT_ONLY),
        _enc("32SC1", 1, np.int32, _OUTPUT_ONLY),
        _enc("32FC1", 1, np.float32, _OUTPUT_ONLY),
    )
}

INPUT_ENCODINGS: tuple[str, ...] = tuple(
    name for name, e in ENCODINGS.items() if e.to_rgb != _OUTPUT_ONLY
)
"""Encodings the node accepts on its ``image`` input."""

_NATIVE_BIG_ENDIAN = sys.byteorder == "big"


def get_encoding(name: str) -> Encoding:
    """Look up the :class:`Encoding` called ``name``; :class:`ImageConversionError` if unknown."""
    try:
        return ENCODINGS[name]
    except KeyError:
        raise ImageConversionError(
            f"unsupported image encoding {name!r}; supported: {', '.join(INPUT_ENCODINGS)}"
        ) from None


def image_to_array(msg: Any) -> np.ndarray:
    """Return the pixels of a ``sensor_msgs/Image`` as an array in the message's own layout.

    Zero-copy: the result is a (possibly row-strided) view of ``msg.data`` whenever the data is
    in native byte order, which is always the case for 8-bit encodings. Multi-byte data with
    the other byte order is copied once and swapped, as cv_bridge does.

    Args:
        msg: a ``sensor_msgs/Image`` (or anything with its attributes).

    Returns:
        ndarray[H, W] for one channel, else ndarray[H, W, C], of the encoding's dtype in native
        byte order: uint8 ``[H, W, 2]`` for YUV 4:2:2, uint16 ``[H, W]`` for mono16.

    Raises:
        ImageConversionError: unknown encoding, zero size, ``step`` too small, ``data`` shorter
            than ``step * height``.

    """
    enc = get_encoding(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image has zero size ({width}x{height})")
    row_bytes = width * enc.bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            f"image is wrongly formed: step {step} < width {width} * {enc.bytes_per_pixel} "
            f"bytes per pixel ({msg.encoding})"
        )
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < step * height:
        raise ImageConversionError(
            f"image is wrongly formed: data has {buf.size} bytes, expected step {step} * "
            f"height {height} = {step * height}"
        )
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    if enc.dtype.itemsize > 1:
        swapped = bool(msg.is_bigendian) != _NATIVE_BIG_ENDIAN
        order = ">" if bool(msg.is_bigendian) else "<"
        pixels = rows.view(enc.dtype.newbyteorder(order))
        if swapped or not pixels.flags.aligned:
            pixels = pixels.astype(enc.dtype)  # native order (and alignment), one copy
    else:
        pixels = rows
    if enc.channels == 1:
        return pixels.reshape(height, width)
    return pixels.reshape(height, width, enc.channels)


def scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """cv_bridge's 16-bit -> 8-bit depth change: ``round(v * 255 / 65535)`` as uint8."""
    return cv2.convertScaleAbs(values, alpha=255.0 / 65535.0)


def image_to_rgb(msg: Any) -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` to RGB, as ``cv_bridge.toCvShare(msg, "rgb8")`` does.

    Args:
        msg: a ``sensor_msgs/Image`` with one of :data:`INPUT_ENCODINGS`.

    Returns:
        ndarray[H, W, 3] uint8 RGB. For ``rgb8`` a zero-copy view of ``msg.data`` (rows may
        be strided when ``step`` pads them; do not write to it); otherwise a new array.

    Raises:
        ImageConversionError: see :func:`image_to_array`; also an output-only encoding such as
            ``32SC1`` and a YUV 4:2:2 image of odd width.

    """
    enc = get_encoding(msg.encoding)
    if enc.to_rgb == _OUTPUT_ONLY:
        raise ImageConversionError(
            f"encoding {msg.encoding!r} has no colour meaning; expected one of "
            f"{', '.join(INPUT_ENCODINGS)}"
        )
    if enc.channels == 2 and int(msg.width) % 2:
        raise ImageConversionError(
            f"{msg.encoding} (YUV 4:2:2) needs an even width, got {msg.width}"
        )
    pixels = image_to_array(msg)
    if enc.to_rgb is None:
        return pixels
    if enc.dtype == np.uint16:
        # cv_bridge: colour conversion first, then the depth change with scaling.
        return scale_16_to_8(cv2.cvtColor(pixels, enc.to_rgb))
    return cv2.cvtColor(pixels, enc.to_rgb)


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) to RGB.

    Like cv_bridge: decoded with ``cv2.IMREAD_COLOR`` (grey and 16-bit images become 8-bit
    three-channel), read as bgr8 and converted to rgb8. The ``format`` string (``"jpeg"``,
    ``"png"``, ``"bgr8; jpeg compressed bgr8"``) is not needed: the data identifies itself.

    Returns:
        ndarray[H, W, 3] uint8 RGB.

    Raises:
        ImageConversionError: empty or undecodable data.

    """
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageConversionError("compressed image has no data")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageConversionError(
            f"compressed image ({msg.format or 'no format'}, {data.size} bytes) does not "
            "decode: corrupt or unsupported data"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def fill_image_data(msg: Image, pixels: np.ndarray) -> None:
    """Set ``msg.data`` (and ``step``, ``is_bigendian``) from a C-ordered copy of ``pixels``.

    The fast path: ``array.array('B').frombytes`` of a byte view, one memcpy.
    """
    pixels = np.ascontiguousarray(pixels)
    data = array.array("B")
    data.frombytes(memoryview(pixels).cast("B"))
    msg.data = data
    msg.step = int(pixels.strides[0]) if pixels.ndim else 0
    msg.is_bigendian = int(_NATIVE_BIG_ENDIAN and pixels.dtype.itemsize > 1)


def array_to_image(pixels: np.ndarray, encoding: str, header: Any = None) -> Image:
    """Build a ``sensor_msgs/Image`` holding ``pixels`` with ``encoding`` (native byte order).

    Args:
        pixels: ndarray[H, W] or ndarray[H, W, C] whose channel count and dtype match the
            encoding (e.g. int32 ``[H, W]`` for ``32SC1``, uint8 ``[H, W, 3]`` for ``rgb8``).
        encoding: one of :data:`ENCODINGS`.
        header: ``std_msgs/Header`` to copy in (the input frame's), or ``None``.

    Raises:
        ImageConversionError: unknown encoding; ``TypeError``/``ValueError`` when the array
        does not fit it.

    """
    enc = get_encoding(encoding)
    if pixels.dtype != enc.dtype:
        raise TypeError(f"{encoding} needs {enc.dtype} pixels, got {pixels.dtype}")
    channels = 1 if pixels.ndim == 2 else (pixels.shape[2] if pixels.ndim == 3 else -1)
    if channels != enc.channels:
        raise ValueError(
            f"{encoding} needs {enc.channels} channel(s), got an array of shape {pixels.shape}"
        )
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    fill_image_data(msg, pixels)
    return msg
