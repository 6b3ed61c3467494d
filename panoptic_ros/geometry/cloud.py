"""The labelled point cloud: every valid depth pixel as (x, y, z, rgb, panoptic id).

Byte layout (little endian, 20 bytes a point), as ``sensor_msgs/PointCloud2`` declares it with
:func:`pointcloud2_fields`:

====== ====== ========= =====================================================
name   offset datatype  meaning
====== ====== ========= =====================================================
x      0      FLOAT32 7 metres, camera optical frame (REP 103)
y      4      FLOAT32 7
z      8      FLOAT32 7
rgb    12     FLOAT32 7 the uint32 ``0x00RRGGBB`` bits read as float32 (PCL)
id     16     UINT32 6  panoptic id ``category * label_divisor + instance``
====== ====== ========= =====================================================

The node fills ``PointCloud2.data`` from ``points.tobytes()`` with ``height = 1``,
``width = len(points)``, ``point_step = 20``, ``row_step = 20 * width``, ``is_dense = True``
(no invalid point is ever written), ``is_bigendian = False``.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from panoptic_ros.geometry.depth import DepthError
from panoptic_ros.geometry.segments import PinholeLike, ray_slopes
from panoptic_ros.result import PanopticResult

FLOAT32, UINT32 = 7, 6
"""``sensor_msgs/PointField`` datatype constants used here."""

POINT_DTYPE = np.dtype({"names": ["x", "y", "z", "rgb", "id"],
                        "formats": ["<f4", "<f4", "<f4", "<f4", "<u4"],
                        "offsets": [0, 4, 8, 12, 16], "itemsize": 20})
"""One point of the labelled cloud (packed, little endian)."""


class PointField(NamedTuple):
    """A ``sensor_msgs/PointField`` as plain values."""

    name: str
    offset: int
    datatype: int
    count: int


def pointcloud2_fields() -> tuple[list[PointField], int]:
    """The fields of :data:`POINT_DTYPE` and its ``point_step`` (bytes)."""
    kinds = {"f": FLOAT32, "u": UINT32}
    fields = [PointField(name, offset, kinds[dt.kind], 1)
              for name, (dt, offset) in POINT_DTYPE.fields.items()]
    return fields, POINT_DTYPE.itemsize


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """ndarray[H, W, 3] uint8 RGB -> ndarray[H, W] uint32 ``0x00RRGGBB`` (PCL's packing)."""
    bgra = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGRA)
    bgra[..., 3] = 0
    return bgra.view("<u4")[..., 0]


def labelled_points(
    result: PanopticResult,
    depth_m: np.ndarray,
    rgb: np.ndarray | None,
    camera: PinholeLike,
    stride: int = 1,
    voxel: float = 0.0,
) -> np.ndarray:
    """The cloud of valid depth pixels with their colour and panoptic id.

    Args:
        result: the frame's panoptic result (ids ndarray[H, W] int32; void pixels are kept
            with id 0).
        depth_m: ndarray[H, W] float32 metres, NaN (or <= 0) = none, aligned with ``ids``.
        rgb: ndarray[H, W, 3] uint8 colour image, or None (rgb field 0).
        camera: the image's intrinsics (pixels).
        stride: keep every ``stride``-th pixel of every ``stride``-th row (>= 1).
        voxel: > 0: keep one point per occupied cube of this edge (metres; cubes aligned to
            the optical frame origin, ``floor(x / voxel)`` per axis), the first in
            row-major pixel order (a measured point with its own colour and id, not an
            average); 0: no voxel thinning.

    Returns:
        ndarray[N] :data:`POINT_DTYPE`, points in row-major pixel order, every one valid.
        ``x = (u - cx) / fx * z``, ``y = (v - cy) / fy * z`` in float32, as
        :func:`~panoptic_ros.geometry.segments.backproject_image` computes them.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if not voxel >= 0:
        raise ValueError(f"voxel must be >= 0 metres, got {voxel}")
    ids = result.ids
    if depth_m.shape != ids.shape:
        raise DepthError(f"depth is {depth_m.shape[1]}x{depth_m.shape[0]}, the label image "
                         f"{ids.shape[1]}x{ids.shape[0]}")
    if rgb is not None and rgb.shape[:2] != ids.shape:
        raise ValueError(f"rgb is {rgb.shape[:2]}, the label image {ids.shape}")
    h, w = ids.shape
    sx, sy = ray_slopes(h, w, camera)
    if stride > 1:
        ids, depth_m, sx, sy = (ids[::stride, ::stride], depth_m[::stride, ::stride],
                                sx[::stride], sy[::stride])
        rgb = None if rgb is None else rgb[::stride, ::stride]
    depth = np.asarray(depth_m, np.float32)
    with np.errstate(invalid="ignore"):
        valid = (depth > 0).reshape(-1)
    # Whole-image float32 planes, each compressed by the mask (contiguous, fast) and written
    # into its field: no per-pixel index arrays, no compress of 20-byte records.
    points = np.empty(int(np.count_nonzero(valid)), POINT_DTYPE)
    points["x"] = (sx[None, :] * depth).reshape(-1)[valid]
    points["y"] = (sy[:, None] * depth).reshape(-1)[valid]
    points["z"] = depth.reshape(-1)[valid]
    points["id"] = np.ascontiguousarray(ids).reshape(-1)[valid]
    if rgb is None:
        points["rgb"] = 0.0
    else:
        points["rgb"] = pack_rgb(rgb).view("<f4").reshape(-1)[valid]
    if voxel > 0 and len(points):
        points = _first_per_voxel(points, voxel)
    return points


def _first_per_voxel(points: np.ndarray, voxel: float) -> np.ndarray:
    """The first point (in array order) of every occupied cube of edge ``voxel``."""
    cells = np.floor(np.stack([points["x"], points["y"], points["z"]], axis=1).astype(np.float64)
                     / voxel).astype(np.int64)
    cells -= cells.min(axis=0)
    span = cells.max(axis=0) + 1
    key = (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]
    _, first = np.unique(key, return_index=True)
    first.sort()
    return points[first]
