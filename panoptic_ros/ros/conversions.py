"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

Pixels come out exactly as ``cv_bridge.toCvShare(msg, "rgb8")`` / ``toCvCopy`` would give them:
the same OpenCV colour-conversion codes, the same ``step``, size and endianness rules, and the
same 16-bit -> 8-bit scaling (``255 / 65535``, rounded). The way in is zero-copy where the
encoding allows (``rgb8`` comes back as a strided view of the message buffer); the way out
fills ``Image.data`` with one fast buffer copy (``array.array.frombytes``: about 1 ms for a
1080p int32 image, where assigning a memoryview or ``ndarray.ravel()`` costs hundreds of ms).

Every frame on the way in is held to an :class:`InputBudget` (pixels, compressed bytes) that
is checked from the message fields and the compressed header *before* anything is decoded or
allocated: a 100 KB PNG can declare 30000x30000 pixels (several GiB once decoded). Oversized
frames are refused with a reason, or (``oversize="reduce"``) converted at a reduced size
without ever materialising the full-size image.

Only the message *attributes* are used on the way in (``height``, ``width``, ``encoding``,
``step``, ``is_bigendian``, ``data``; ``format`` for compressed images), so the pure pixel
functions are testable without a ROS graph and also convert other libraries' messages (the
``rosbags`` objects of ``panoptic-ros bag``). Nothing here imports rclpy, and ``sensor_msgs``
only inside :func:`array_to_image`: the way in works without a ROS installation.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from panoptic_ros.errors import PanopticRosError

if TYPE_CHECKING:
    from sensor_msgs.msg import Image


class ImageConversionError(PanopticRosError, ValueError):
    """An image message cannot be converted (the counterpart of cv_bridge's CvBridgeError).

    Raised for an unknown encoding, a zero-sized image, ``step < width * bytes_per_pixel``,
    ``data`` shorter than ``step * height``, a width the encoding cannot have (odd YUV 4:2:2),
    a frame over its :class:`InputBudget`, a compressed format other than JPEG and PNG, and
    compressed data that does not decode.
    """


OVERSIZE_POLICIES: tuple[str, ...] = ("refuse", "reduce")
"""Values of :attr:`InputBudget.oversize` (the node's ``oversize_policy`` parameter)."""


@dataclass(frozen=True)
class InputBudget:
    """Limits on one input frame, checked before any pixel is decoded or copied.

    Attributes:
        max_pixels: most pixels (``width * height``) a frame may have (node parameter
            ``max_image_pixels``); the default 4096*4096 = 16.8 Mpx covers 4K and 12 Mpx
            cameras.
        max_compressed_bytes: most bytes of ``CompressedImage.data`` (default 32 MiB); larger
            payloads are refused before their header is read.
        oversize: what happens to a frame over ``max_pixels`` (node parameter
            ``oversize_policy``): ``"refuse"`` raises :class:`ImageConversionError`;
            ``"reduce"`` converts it at the smallest reduction that fits: an integer stride
            ``k`` for raw images (see :func:`image_to_rgb`), 1/2, 1/4 or 1/8 scaled decoding
            for sequential JPEG. PNG and progressive or multi-scan JPEG cannot be decoded
            reduced without a full-size buffer, so they are refused under either policy.

    Memory a frame can cost. With ``P`` the pixels of the frame that is produced
    (``P <= max_pixels``; the reduced count under ``"reduce"``) and ``B`` the compressed payload
    (``B <= max_compressed_bytes``, already held by the message), the conversion itself
    allocates at most about:

    - ``sensor_msgs/Image``: ``3*P`` bytes for the RGB result (0 for ``rgb8``, a view of
      ``msg.data``), ``+ 2*P`` for mono16 in the foreign byte order or at an odd ``step``
      (byte-swapped copy), ``+ P`` for mono16's 8-bit stage. A reduced frame is a strided view
      of ``msg.data`` until its colour conversion: nothing of full size is copied.
    - ``sensor_msgs/CompressedImage``: ``3*P`` (the decoded BGR image, turned to RGB in place)
      ``+ 2*S*P`` for libjpeg's whole-image coefficient buffer when a JPEG is progressive or
      multi-scan (``S`` samples per pixel: 1 grey, 1.5 YCbCr 4:2:0, 3 YCbCr 4:4:4, 4 CMYK)
      ``+ 3*P`` when an EXIF orientation rotates the image: at most ``14*P`` in all.

    So the defaults bound a raw frame's conversion at ``3*P`` = 48 MiB, and a compressed one
    at ``14*P + B`` = about 260 MiB in the worst case (typically ``3*P + B`` = 80 MiB).

    Raises:
        TypeError: a limit is not an integer.
        ValueError: a limit is below 1, or ``oversize`` is not one of :data:`OVERSIZE_POLICIES`.

    """

    max_pixels: int = 4096 * 4096
    max_compressed_bytes: int = 32 * 1024 * 1024
    oversize: str = "refuse"

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_compressed_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"InputBudget.{name} must be an integer, got {value!r}")
            if value < 1:
                raise ValueError(f"InputBudget.{name} must be >= 1, got {value}")
        if self.oversize not in OVERSIZE_POLICIES:
            raise ValueError(
                f"InputBudget.oversize must be one of {', '.join(OVERSIZE_POLICIES)}, "
                f"got {self.oversize!r}"
            )


DEFAULT_INPUT_BUDGET = InputBudget()
"""The budget used when a conversion is given none."""


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


_MAX_FIELD = 2**31 - 1  # height, width and step must stay within OpenCV's and numpy's int32 sizes


def _field(msg: Any, name: str) -> int:
    """``msg.<name>`` as an int in ``[0, 2**31 - 1]``, checked before any arithmetic uses it."""
    value = getattr(msg, name)
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ImageConversionError(f"image {name} is not an integer: {value!r}") from None
    if not 0 <= number <= _MAX_FIELD:
        raise ImageConversionError(
            f"image {name} {number} is out of range (0..{_MAX_FIELD}): corrupt message"
        )
    return number


def _raw_view(msg: Any, enc: Encoding) -> np.ndarray:
    """Validate the layout of ``msg`` and view its pixels without copying anything.

    Returns:
        ndarray[H, W] or ndarray[H, W, C] over ``msg.data`` whose dtype carries the message's
        byte order (possibly foreign, possibly unaligned when ``step`` is odd).

    """
    height, width, step = _field(msg, "height"), _field(msg, "width"), _field(msg, "step")
    if height == 0 or width == 0:
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
        rows = rows.view(enc.dtype.newbyteorder(">" if bool(msg.is_bigendian) else "<"))
    if enc.channels == 1:
        return rows.reshape(height, width)
    return rows.reshape(height, width, enc.channels)


def _native(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` in native byte order and aligned: itself, or one copy (as cv_bridge swaps)."""
    if pixels.dtype.itemsize > 1 and (not pixels.dtype.isnative or not pixels.flags.aligned):
        return pixels.astype(pixels.dtype.newbyteorder("="))
    return pixels


def image_to_array(msg: Any) -> np.ndarray:
    """Return the pixels of a ``sensor_msgs/Image`` as an array in the message's own layout.

    Zero-copy: the result is a (possibly row-strided) view of ``msg.data`` whenever the data is
    in native byte order, which is always the case for 8-bit encodings. Multi-byte data with
    the other byte order is copied once and swapped, as cv_bridge does. No size budget applies
    here (label images come back through this); :func:`image_to_rgb` enforces one.

    Args:
        msg: a ``sensor_msgs/Image`` (or anything with its attributes).

    Returns:
        ndarray[H, W] for one channel, else ndarray[H, W, C], of the encoding's dtype in native
        byte order: uint8 ``[H, W, 2]`` for YUV 4:2:2, uint16 ``[H, W]`` for mono16.

    Raises:
        ImageConversionError: unknown encoding, zero size, a height, width or step outside
            ``0..2**31-1``, ``step`` too small, ``data`` shorter than ``step * height``.

    """
    return _native(_raw_view(msg, get_encoding(msg.encoding)))


def scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """cv_bridge's 16-bit -> 8-bit depth change: ``round(v * 255 / 65535)`` as uint8."""
    return cv2.convertScaleAbs(values, alpha=255.0 / 65535.0)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _smallest_stride(pixels_at: Callable[[int], int], limit: int, largest: int) -> int | None:
    """Smallest ``s`` in ``[1, largest]`` with ``pixels_at(s) <= limit``, else ``None``.

    ``pixels_at`` must not increase with ``s`` (it counts the pixels left by stride ``s``); a
    binary search keeps this at ~32 evaluations even for a 2**31-wide image.
    """
    if largest < 1 or pixels_at(largest) > limit:
        return None
    low, high = 1, largest
    while low < high:
        mid = (low + high) // 2
        if pixels_at(mid) <= limit:
            high = mid
        else:
            low = mid + 1
    return low


def _is_bayer(enc: Encoding) -> bool:
    return enc.name.startswith("bayer_")


def _reduce_raw(pixels: np.ndarray, enc: Encoding, max_pixels: int) -> np.ndarray:
    """Subsample the raw pixels of an oversized frame so at most ``max_pixels`` remain.

    Plain encodings: ``pixels[::k, ::k]`` with the smallest integer ``k`` that fits (a view:
    no copy at all). Bayer mosaics and YUV 4:2:2 cannot lose single pixels without scrambling
    their colour pattern or chroma, so they keep whole units: every ``m``-th 2x2 Bayer cell in
    both directions (an odd last row or column is dropped), or every ``m``-th row and every
    ``m``-th horizontal YUV pixel pair, with the smallest ``m`` that fits. That is a scale of
    ``1/m`` in both directions (two pixels kept of every ``2*m``); the result is one copy at
    the reduced size.

    Returns:
        the subsampled pixels in the layout (and byte order) of ``pixels``.

    Raises:
        ImageConversionError: not even the coarsest stride fits ``max_pixels``.

    """
    height, width = pixels.shape[:2]
    if _is_bayer(enc):
        cells_h, cells_w = height // 2, width // 2
        m = _smallest_stride(
            lambda m: 4 * _ceil_div(cells_h, m) * _ceil_div(cells_w, m),
            max_pixels,
            max(cells_h, cells_w) if cells_h and cells_w else 0,
        )
        if m is None:
            raise _not_reducible(enc, width, height, max_pixels, "whole 2x2 Bayer cells")
        cells = pixels[: 2 * cells_h, : 2 * cells_w].reshape(cells_h, 2, cells_w, 2)
        picked = cells[::m, :, ::m, :]
        return picked.reshape(2 * picked.shape[0], 2 * picked.shape[2])
    if enc.channels == 2:  # YUV 4:2:2: pixel pairs share their chroma
        pairs = width // 2
        m = _smallest_stride(
            lambda m: _ceil_div(height, m) * 2 * _ceil_div(pairs, m),
            max_pixels,
            max(height, pairs),
        )
        if m is None:
            raise _not_reducible(enc, width, height, max_pixels, "whole YUV pixel pairs")
        picked = pixels.reshape(height, pairs, 2, 2)[::m, ::m]
        return picked.reshape(picked.shape[0], 2 * picked.shape[1], 2)
    k = _smallest_stride(
        lambda k: _ceil_div(height, k) * _ceil_div(width, k), max_pixels, max(height, width)
    )
    if k is None:  # unreachable: stride max(height, width) leaves one pixel
        raise _not_reducible(enc, width, height, max_pixels, "single pixels")
    return pixels[::k, ::k]


def _not_reducible(
    enc: Encoding, width: int, height: int, max_pixels: int, unit: str
) -> ImageConversionError:
    return ImageConversionError(
        f"{enc.name} image {width}x{height} ({width * height} pixels) is over the input "
        f"budget of {max_pixels} pixels (max_image_pixels) and cannot be reduced to fit by "
        f"striding over {unit} (oversize_policy 'reduce')"
    )


def _over_budget(what: str, width: int, height: int, budget: InputBudget, why: str) -> str:
    return (
        f"{what} {width}x{height} ({width * height} pixels) exceeds the input budget of "
        f"{budget.max_pixels} pixels (parameter max_image_pixels); {why}"
    )


_REFUSED = "refused under oversize_policy 'refuse' (set 'reduce' to convert it at reduced size)"


def image_to_rgb(msg: Any, budget: InputBudget | None = None) -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` to RGB, as ``cv_bridge.toCvShare(msg, "rgb8")`` does.

    A frame over ``budget.max_pixels`` is refused, or under ``oversize="reduce"`` subsampled by
    the smallest integer stride ``k`` that fits *before* its colour conversion, so no
    full-size copy is ever made: the result is ``rgb[::k, ::k]`` of the full conversion for
    per-pixel encodings. Bayer and YUV 4:2:2 keep whole units (every ``m``-th 2x2 Bayer cell;
    every ``m``-th row and ``m``-th pixel pair of YUV: scale ``1/m``; an odd last Bayer row or
    column is dropped) and are converted at the reduced size.

    Args:
        msg: a ``sensor_msgs/Image`` with one of :data:`INPUT_ENCODINGS`.
        budget: the limits to hold the frame to; ``None`` means :data:`DEFAULT_INPUT_BUDGET`.

    Returns:
        ndarray[H, W, 3] uint8 RGB, ``H, W`` the message's size or the reduced one
        (``ceil(height / k), ceil(width / k)`` for per-pixel encodings). For ``rgb8`` a
        zero-copy view of ``msg.data`` (rows may be strided when ``step`` pads them or
        ``k > 1``; do not write to it); otherwise a new array.

    Raises:
        ImageConversionError: see :func:`image_to_array`; also an output-only encoding such as
            ``32SC1``, a YUV 4:2:2 image of odd width, a frame over the budget that is refused
            or cannot be reduced to fit, and an OpenCV failure.

    """
    budget = DEFAULT_INPUT_BUDGET if budget is None else budget
    enc = get_encoding(msg.encoding)
    if enc.to_rgb == _OUTPUT_ONLY:
        raise ImageConversionError(
            f"encoding {msg.encoding!r} has no colour meaning; expected one of "
            f"{', '.join(INPUT_ENCODINGS)}"
        )
    if enc.channels == 2 and _field(msg, "width") % 2:
        raise ImageConversionError(
            f"{msg.encoding} (YUV 4:2:2) needs an even width, got {msg.width}"
        )
    pixels = _raw_view(msg, enc)
    height, width = pixels.shape[:2]
    if height * width > budget.max_pixels:
        if budget.oversize == "refuse":
            raise ImageConversionError(
                _over_budget(f"{enc.name} image", width, height, budget, _REFUSED)
            )
        pixels = _reduce_raw(pixels, enc, budget.max_pixels)
    pixels = _native(pixels)
    try:
        if enc.to_rgb is None:
            return pixels
        if enc.dtype == np.uint16:
            # cv_bridge converts colour first, then depth; for grey the order does not change a
            # value, and scaling first keeps the 16-bit intermediate at one channel.
            return cv2.cvtColor(scale_16_to_8(pixels), enc.to_rgb)
        return cv2.cvtColor(pixels, enc.to_rgb)
    except cv2.error as err:
        raise ImageConversionError(
            f"OpenCV cannot convert this {width}x{height} {enc.name} image: {err}"
        ) from err


# --- Compressed images ----------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"  # SOI and the first byte of the next marker: OpenCV's signature
# Frame headers (SOFn). C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_SOF = frozenset(
    (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
)
# Sequential DCT (baseline, extended, arithmetic): libjpeg scales these by 1/2, 1/4, 1/8 while
# decoding, one MCU row at a time. Progressive (C2, CA), lossless (C3, CB) and hierarchical
# frames either keep a whole-image coefficient buffer at full size or cannot scale at all.
_JPEG_STREAMABLE_SOF = frozenset((0xC0, 0xC1, 0xC9))
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))  # TEM, RST0-7: no length field
_JPEG_SOS, _JPEG_SOI_MARKER, _JPEG_EOI = 0xDA, 0xD8, 0xD9
_UNSUPPORTED_FORMAT = "unsupported compressed format: only jpeg and png are accepted"
# Real JPEGs have tens of segments before their scan (a 255-chunk ICC profile is the extreme);
# the cap keeps a payload of millions of 4-byte segments from costing seconds of Python.
_JPEG_MAX_MARKERS = 4096


@dataclass(frozen=True)
class _Header:
    """What a compressed image's header declares.

    ``streamable``: libjpeg can decode it at a reduced scale without full-size buffers (a
    sequential-DCT JPEG whose first scan holds every component); always False for PNG.
    """

    format: str
    width: int
    height: int
    streamable: bool = False


def _find_byte(buf: np.ndarray, start: int, is_ff: bool) -> int:
    """Index of the first byte at or after ``start`` that is (or is not) 0xFF, else the size.

    Vectorised in growing chunks, so a payload of garbage costs no Python loop.
    """
    chunk = 256
    while start < buf.size:
        part = buf[start : start + chunk]
        hits = np.flatnonzero((part == 0xFF) if is_ff else (part != 0xFF))
        if hits.size:
            return start + int(hits[0])
        start += part.size
        chunk = min(chunk * 4, 1 << 20)
    return int(buf.size)


def _next_jpeg_marker(buf: np.ndarray, pos: int) -> tuple[int, int]:
    """The next marker at or after ``pos`` and the position after it, as libjpeg finds it.

    Mirrors libjpeg's ``next_marker``: bytes before 0xFF are skipped (libjpeg warns "extraneous
    bytes before marker" and carries on), a run of 0xFF fill bytes is one prefix, and 0xFF00 is
    a stuffed zero, not a marker. Reading the same markers libjpeg reads keeps the declared
    size the one it will allocate.
    """
    for _ in range(_JPEG_MAX_MARKERS):
        pos = _find_byte(buf, _find_byte(buf, pos, is_ff=True), is_ff=False)
        if pos >= buf.size:
            raise ImageConversionError("truncated JPEG header: no frame header (SOFn) found")
        marker = int(buf[pos])
        pos += 1
        if marker != 0:
            return marker, pos
    raise ImageConversionError(
        f"malformed JPEG header: more than {_JPEG_MAX_MARKERS} stuffed zeros before a marker"
    )


def _jpeg_header(buf: np.ndarray) -> _Header:
    """Walk the JPEG markers to the first frame header (SOFn), skipping segments by length."""
    pos = 2  # after SOI
    frame: tuple[int, int, int, int] | None = None  # marker, width, height, components
    for _ in range(_JPEG_MAX_MARKERS):
        try:
            marker, pos = _next_jpeg_marker(buf, pos)
        except ImageConversionError:
            if frame is None:
                raise
            break  # the size is known; what follows decides only streamability
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (_JPEG_SOI_MARKER, _JPEG_EOI):
            if frame is None:
                raise ImageConversionError(
                    f"malformed JPEG header: marker 0xFF{marker:02X} before the frame header"
                )
            break
        if pos + 2 > buf.size:
            if frame is None:
                raise ImageConversionError("truncated JPEG header: segment length cut off")
            break
        length = (int(buf[pos]) << 8) | int(buf[pos + 1])
        if length < 2:
            raise ImageConversionError(
                f"malformed JPEG header: segment 0xFF{marker:02X} has length {length} < 2"
            )
        if marker == _JPEG_SOS:
            if frame is None:
                raise ImageConversionError(
                    "malformed JPEG header: scan data (SOS) before the frame header (SOFn)"
                )
            if pos + 3 > buf.size:
                break
            sof, width, height, components = frame
            in_first_scan = int(buf[pos + 2])
            streamable = sof in _JPEG_STREAMABLE_SOF and in_first_scan == components
            return _Header("jpeg", width, height, streamable)
        if marker in _JPEG_SOF and frame is None:
            if length < 8:
                raise ImageConversionError(
                    f"malformed JPEG header: frame header of length {length} < 8"
                )
            if pos + 8 > buf.size:
                raise ImageConversionError("truncated JPEG header: frame header cut off")
            height = (int(buf[pos + 3]) << 8) | int(buf[pos + 4])
            width = (int(buf[pos + 5]) << 8) | int(buf[pos + 6])
            frame = (marker, width, height, int(buf[pos + 7]))
        pos += length
    if frame is None:
        raise ImageConversionError(
            f"malformed JPEG header: no frame header (SOFn) in the first {_JPEG_MAX_MARKERS} "
            "markers"
        )
    return _Header("jpeg", frame[1], frame[2])


def _png_header(buf: np.ndarray) -> _Header:
    """Read width and height from the IHDR chunk, which the PNG format puts first."""
    if buf.size < 33:  # signature 8 + chunk length 4 + type 4 + IHDR data 13 + CRC 4
        raise ImageConversionError(f"truncated PNG header: {buf.size} bytes < 33")
    head = buf[8:24].tobytes()
    length, kind = int.from_bytes(head[0:4], "big"), head[4:8]
    if kind != b"IHDR" or length != 13:
        raise ImageConversionError(
            f"malformed PNG header: first chunk is {kind!r} of {length} bytes, expected "
            "b'IHDR' of 13"
        )
    width, height = int.from_bytes(head[8:12], "big"), int.from_bytes(head[12:16], "big")
    if width > _MAX_FIELD or height > _MAX_FIELD:
        raise ImageConversionError(
            f"malformed PNG header: size {width}x{height} is over the format's 2**31-1"
        )
    return _Header("png", width, height)


def _compressed_header(data: Any) -> _Header:
    buf = np.frombuffer(data, dtype=np.uint8)
    head = buf[:8].tobytes()
    if head.startswith(_PNG_SIGNATURE):
        header = _png_header(buf)
    elif head.startswith(_JPEG_SOI):
        header = _jpeg_header(buf)
    elif 0 < buf.size < len(_PNG_SIGNATURE) and (
        _PNG_SIGNATURE.startswith(head) or _JPEG_SOI.startswith(head)
    ):
        raise ImageConversionError(
            f"truncated compressed image: {buf.size} bytes, not even a PNG or JPEG signature"
        )
    else:
        raise ImageConversionError(_UNSUPPORTED_FORMAT)
    if header.width == 0 or header.height == 0:
        raise ImageConversionError(
            f"{header.format.upper()} header declares zero size ({header.width}x{header.height})"
        )
    return header


def compressed_image_size(data: Any) -> tuple[str, int, int]:
    """Format and declared size of a JPEG or PNG, read from its header without decoding.

    PNG: the signature and the IHDR chunk. JPEG: the markers from SOI to the first frame
    header (SOF0-3, 5-7, 9-11, 13-15), skipping every other segment by its length and 0xFF
    fill bytes as libjpeg does. Every read is bounds-checked; the cost is a few dozen byte
    reads, independent of the image size.

    Args:
        data: the compressed bytes (``bytes``, ``bytearray``, ``array.array('B')``, uint8
            ndarray, ``memoryview``): ``CompressedImage.data``.

    Returns:
        ``(format, width, height)``: ``format`` is ``"jpeg"`` or ``"png"``; width and height in
        pixels as the header declares them (before any EXIF orientation).

    Raises:
        ImageConversionError: another format ("unsupported compressed format: only jpeg and
            png are accepted"), a truncated or malformed header, or a zero width or height.

    """
    header = _compressed_header(data)
    return header.format, header.width, header.height


_REDUCED_JPEG_FLAGS = (
    (2, cv2.IMREAD_REDUCED_COLOR_2),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
    (8, cv2.IMREAD_REDUCED_COLOR_8),
)


def _reduced_jpeg_decode(header: _Header, budget: InputBudget) -> tuple[int, tuple[int, int]]:
    """The ``cv2.imdecode`` flag and ``(height, width)`` for an image over ``max_pixels``.

    Raises:
        ImageConversionError: with the reason it must be refused.

    """
    fmt, width, height = header.format, header.width, header.height
    if budget.oversize == "refuse":
        why = _REFUSED
    elif fmt == "png":
        why = (
            "a PNG cannot be decoded at reduced size without a full-size decode first, so it "
            "is refused under oversize_policy 'reduce' too"
        )
    elif not header.streamable:
        why = (
            "a progressive, lossless or multi-scan JPEG keeps a full-size buffer even when "
            "decoded reduced, so it is refused under oversize_policy 'reduce' too"
        )
    else:
        for k, flag in _REDUCED_JPEG_FLAGS:
            reduced = (_ceil_div(height, k), _ceil_div(width, k))
            if reduced[0] * reduced[1] <= budget.max_pixels:
                return flag, reduced
        why = (
            f"even decoded at 1/8 ({_ceil_div(width, 8)}x{_ceil_div(height, 8)}) it does not "
            "fit (oversize_policy 'reduce')"
        )
    raise ImageConversionError(
        _over_budget(f"compressed {fmt} declaring", width, height, budget, why)
    )


def compressed_to_rgb(msg: Any, budget: InputBudget | None = None) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG) to RGB, within a budget.

    Before decoding: a payload over ``budget.max_compressed_bytes`` is refused, then the header
    is read (:func:`compressed_image_size`); a declared size over ``budget.max_pixels`` is
    refused, or under ``oversize="reduce"`` a sequential JPEG is decoded by libjpeg at the
    smallest scale of 1/2, 1/4, 1/8 that fits (``ceil(w / k) x ceil(h / k)``; the full-size
    image is never allocated). PNG, progressive and multi-scan JPEG cannot be decoded reduced
    without a full-size buffer and are refused with a reason saying so. After decoding, the
    size must equal the declared (or reduced) one, transposed when EXIF orientation rotates
    it.

    Within budget the pixels are exactly cv_bridge's: decoded with ``cv2.IMREAD_COLOR`` (grey
    and 16-bit images become 8-bit three-channel, EXIF orientation applied), read as bgr8 and
    converted to rgb8. The ``format`` string (``"jpeg"``, ``"png"``, ``"bgr8; jpeg compressed
    bgr8"``) is only quoted in errors: the data identifies itself.

    Args:
        msg: a ``sensor_msgs/CompressedImage`` (or anything with ``data`` and ``format``).
        budget: the limits to hold the frame to; ``None`` means :data:`DEFAULT_INPUT_BUDGET`.

    Returns:
        ndarray[H, W, 3] uint8 RGB, contiguous.

    Raises:
        ImageConversionError: empty, oversized or undecodable data, a format other than JPEG
            and PNG, a declared size over the budget that is refused, a decoded size that
            differs from the declared one.

    """
    budget = DEFAULT_INPUT_BUDGET if budget is None else budget
    data = np.frombuffer(msg.data, dtype=np.uint8)  # a view: nothing is copied
    size = int(data.size)
    if size == 0:
        raise ImageConversionError("compressed image has no data")
    if size > budget.max_compressed_bytes:
        raise ImageConversionError(
            f"compressed image of {size} bytes exceeds the limit of "
            f"{budget.max_compressed_bytes} bytes (max_compressed_bytes)"
        )
    try:
        header = _compressed_header(data)
    except ImageConversionError as err:
        raise ImageConversionError(
            f"compressed image ({msg.format or 'no format'}, {size} bytes) does not decode: "
            f"{err}"
        ) from None
    fmt, width, height = header.format, header.width, header.height
    flag, expected = cv2.IMREAD_COLOR, (height, width)
    if width * height > budget.max_pixels:
        flag, expected = _reduced_jpeg_decode(header, budget)
    try:
        bgr = cv2.imdecode(data, flag)
        if bgr is None or bgr.size == 0:
            raise ImageConversionError(
                f"compressed {fmt} ({msg.format or 'no format'}, {size} bytes) does not "
                "decode: corrupt data"
            )
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.shape[:2] not in (expected, expected[::-1]):
            raise ImageConversionError(
                f"compressed {fmt} decoded to shape {bgr.shape}, but its header declares "
                f"{expected[1]}x{expected[0]} pixels: corrupt data"
            )
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)  # in place: no second copy
    except cv2.error as err:
        raise ImageConversionError(
            f"compressed {fmt} ({size} bytes) does not decode: {err}"
        ) from err


def fill_image_data(msg: Image, pixels: np.ndarray) -> None:
    """Set ``msg.data`` (and ``step``, ``is_bigendian``) from a C-ordered copy of ``pixels``.

    The fast path: ``array.array('B').frombytes`` of a byte view, one memcpy.
    """
    pixels = np.ascontiguousarray(pixels)
    data = array.array("B")
    data.frombytes(memoryview(pixels).cast("B"))
    msg.data = data
    # A row's bytes, not strides[0]: numpy may give a length-1 axis any stride (a 1-row image).
    msg.step = int(pixels[0].nbytes) if pixels.ndim else 0
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
    from sensor_msgs.msg import Image

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
