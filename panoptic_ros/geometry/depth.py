"""Depth images as REP 118 defines them, decoded to float32 metres with NaN = no measurement.

``16UC1``: unsigned millimetres, 0 = no measurement. ``32FC1``: metres, NaN = no measurement,
+Inf / -Inf = beyond / below the sensor's range; both infinities, zero and negative values
count as no measurement here (no surface position can be computed from them).
"""

from __future__ import annotations

import numpy as np

from panoptic_ros.camera_model import depth_from_millimetres
from panoptic_ros.errors import PanopticRosError

DEPTH_ENCODINGS: dict[str, np.dtype] = {"16UC1": np.dtype(np.uint16),
                                        "32FC1": np.dtype(np.float32)}
"""The depth encodings understood (REP 118) and their pixel type (native byte order)."""


class DepthError(PanopticRosError, ValueError):
    """A depth image or a calibration cannot be used; the message says what and why."""


def depth_array(data: bytes | bytearray | memoryview | np.ndarray, height: int, width: int,
                step: int, encoding: str, is_bigendian: bool = False) -> np.ndarray:
    """The pixels of a depth image buffer (``sensor_msgs/Image`` fields as plain values).

    Args:
        data: the raw bytes, ``step * height`` of them at least.
        height, width: pixels.
        step: bytes per row (>= ``width * pixel size``; padding at row ends is skipped).
        encoding: ``"16UC1"`` or ``"32FC1"``; anything else raises :class:`DepthError`.
        is_bigendian: byte order of the pixels.

    Returns:
        ndarray[height, width] uint16 (16UC1) or float32 (32FC1), a view of ``data`` where the
        byte order is native, else a byte-swapped copy.
    """
    dtype = _dtype(encoding)
    if height < 1 or width < 1:
        raise DepthError(f"depth image is empty ({width}x{height})")
    size = dtype.itemsize
    if step < width * size:
        raise DepthError(f"depth step {step} < width {width} x {size} bytes ({encoding})")
    buf = np.frombuffer(data, np.uint8)
    if buf.size < step * height:
        raise DepthError(f"depth data has {buf.size} bytes, needs step x height = "
                         f"{step * height}")
    order = ">" if is_bigendian else "<"
    rows = buf[:step * height].reshape(height, step)[:, :width * size]
    pixels = np.ascontiguousarray(rows).view(dtype.newbyteorder(order)).reshape(height, width)
    return pixels.astype(dtype, copy=False)


def depth_to_metres(depth: np.ndarray, encoding: str) -> np.ndarray:
    """Decode a depth image to metres.

    Args:
        depth: ndarray[H, W] of the encoding's pixel type: uint16 millimetres for ``16UC1``,
            float32 metres for ``32FC1`` (any byte order).
        encoding: ``"16UC1"`` or ``"32FC1"``; any other raises :class:`DepthError`, as does a
            pixel type that does not fit the encoding or an array that is not 2-D.

    Returns:
        ndarray[H, W] float32 metres, NaN where there is no measurement (16UC1: 0; 32FC1: NaN,
        +-Inf, <= 0). A new array; the input is not changed.
    """
    dtype = _dtype(encoding)
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise DepthError(f"depth must be a single-channel 2-D image, got shape {depth.shape}")
    if depth.dtype.kind != dtype.kind or depth.dtype.itemsize != dtype.itemsize:
        raise DepthError(f"{encoding} depth must be {dtype}, got {depth.dtype}")
    if encoding == "16UC1":
        return depth_from_millimetres(depth.astype(np.uint16, copy=False))
    metres = depth.astype(np.float32, copy=True)
    with np.errstate(invalid="ignore"):
        metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres


def match_depth_size(depth_m: np.ndarray, height: int, width: int) -> tuple[np.ndarray, bool]:
    """A depth image at the colour image's size (same field of view), by nearest neighbour.

    Colour pixel ``(u, v)`` takes depth pixel ``(floor((u + 0.5) * Wd / W),
    floor((v + 0.5) * Hd / H))``, the depth pixel whose area holds its centre (OpenCV's
    ``INTER_NEAREST_EXACT``): at half resolution colour pixels ``2k`` and ``2k + 1`` both take
    depth pixel ``k``. No interpolation: a depth edge never gets depths between the two surfaces.

    Args:
        depth_m: ndarray[Hd, Wd] depth (any dtype).
        height, width: the colour image's size.

    Returns:
        ``(depth, scaled)``: ndarray[height, width] (the input itself when the sizes match) and
        whether it was scaled (the node reports that in its diagnostics).
    """
    hd, wd = depth_m.shape[:2]
    if (hd, wd) == (height, width):
        return depth_m, False
    if min(hd, wd, height, width) < 1:
        raise DepthError(f"cannot scale a {wd}x{hd} depth image to {width}x{height}")
    rows = ((np.arange(height) + 0.5) * (hd / height)).astype(np.intp)
    cols = ((np.arange(width) + 0.5) * (wd / width)).astype(np.intp)
    np.minimum(rows, hd - 1, out=rows)
    np.minimum(cols, wd - 1, out=cols)
    return depth_m[rows[:, None], cols[None, :]], True


def _dtype(encoding: str) -> np.dtype:
    try:
        return DEPTH_ENCODINGS[encoding]
    except (KeyError, TypeError):
        raise DepthError(f"unsupported depth encoding {encoding!r}: expected one of "
                         f"{', '.join(DEPTH_ENCODINGS)} (REP 118)") from None

