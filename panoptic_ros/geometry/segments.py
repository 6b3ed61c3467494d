"""Where every segment is in 3D: order statistics of its back-projected valid depth pixels.

For each segment with at least one valid depth pixel (camera optical frame, metres):

- ``valid_fraction`` = valid depth pixels / segment pixels;
- ``centroid`` = per-axis median of the points (``numpy.median``: the mean of the two middle
  values for an even count);
- ``distance`` = 5th percentile of their Euclidean range ``sqrt(x^2 + y^2 + z^2)``;
- ``extent_min`` / ``extent_max`` = per-axis 5th / 95th percentiles.

Percentiles follow ``numpy.percentile``'s default (``method="linear"``): for ``n`` sorted values
``a`` and ``q`` in percent, ``i = (n - 1) q / 100``, ``a[floor(i)] + (a[floor(i) + 1] -
a[floor(i)]) (i - floor(i))`` (numpy's ``_lerp``, reproduced bit for bit, in float64).

Points are computed in float32 as ``x = sx[u] * z``, ``y = sy[v] * z`` with the ray slopes
``sx[u] = (u - cx) / fx``, ``sy[v] = (v - cy) / fy`` rounded to float32
(:func:`backproject_image`); order statistics are taken on those values and interpolated in
float64.

Speed, in two parts. :func:`group_pixels`: a panoptic id map is piecewise constant along its
rows, so the image is cut into runs of equal (id, depth valid) and only the runs (a few
thousand) are sorted by segment; they are expanded into one pixel index array in segment order
and the points gathered once (:func:`segment_points`).
:func:`~panoptic_ros.geometry.selection.grouped_order_statistics` then selects the wanted ranks
of all segments and all four rows (x, y, z, range) exactly, by one histogram (one
``np.bincount``) and a sort of only the few values in the bins that hold a wanted rank. The
interpolation is vectorised over all segments. No boolean mask per segment, no sort or partition
of a segment's points.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import numpy as np

from panoptic_ros.geometry.depth import DepthError
from panoptic_ros.geometry.selection import grouped_order_statistics
from panoptic_ros.result import PanopticResult, SegmentGeometry

LOW_Q, HIGH_Q = 5.0, 95.0
"""Percentiles (percent) of the extent box and, for ``LOW_Q``, of the distance."""


class PinholeLike(Protocol):
    """Anything with pinhole intrinsics in pixels (:class:`Intrinsics`, CameraCalibration)."""

    @property
    def fx(self) -> float: ...  # noqa: D102
    @property
    def fy(self) -> float: ...  # noqa: D102
    @property
    def cx(self) -> float: ...  # noqa: D102
    @property
    def cy(self) -> float: ...  # noqa: D102


def ray_slopes(height: int, width: int, camera: PinholeLike) -> tuple[np.ndarray, np.ndarray]:
    """Ray slopes: ``sx`` ndarray[width], ``sy`` ndarray[height] float32.

    ``sx[u] = (u - cx) / fx`` and ``sy[v] = (v - cy) / fy``, computed in float64 and rounded.
    """
    sx = ((np.arange(width, dtype=np.float64) - camera.cx) / camera.fx).astype(np.float32)
    sy = ((np.arange(height, dtype=np.float64) - camera.cy) / camera.fy).astype(np.float32)
    return sx, sy


def backproject_image(depth_m: np.ndarray, camera: PinholeLike) -> tuple[np.ndarray, np.ndarray]:
    """The x and y of every pixel of a depth image (z is the depth itself).

    Args:
        depth_m: ndarray[H, W] float32 metres, NaN = none.
        camera: intrinsics of the image (pixels).

    Returns:
        ``x``, ``y`` ndarray[H, W] float32 metres, optical frame; NaN where the depth is.
    """
    h, w = depth_m.shape
    sx, sy = ray_slopes(h, w, camera)
    return sx[None, :] * depth_m, sy[:, None] * depth_m


def _linear_index(n: int, q: float) -> tuple[int, int, float]:
    """Neighbouring ranks and upper weight of numpy's linear method."""
    virtual = (n - 1) * (q / 100.0)
    if virtual >= n - 1:
        return n - 1, n - 1, float(virtual - np.floor(virtual))
    lo = int(np.floor(virtual))
    return lo, lo + 1, float(virtual - lo)


def _lerp(a: np.ndarray, b: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """The ``_lerp`` of numpy (float64): exact at both ends, the rounding of np.percentile."""
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1.0 - gamma), a + diff * gamma)


# Columns of the rank table: the ranks each statistic needs.
_LO5, _HI5, _MID_LO, _MID_HI, _LO95, _HI95 = range(6)


def _ranks(n: int) -> tuple[list[int], float, float]:
    """Sorted positions ``[lo5, hi5, mid_lo, mid_hi, lo95, hi95]`` and the two weights."""
    lo5, hi5, g5 = _linear_index(n, LOW_Q)
    lo95, hi95, g95 = _linear_index(n, HIGH_Q)
    return [lo5, hi5, (n - 1) // 2, n // 2, lo95, hi95], g5, g95


def rank_table(counts: np.ndarray) -> np.ndarray:
    """The sorted positions each row of :func:`segment_points` needs, per segment.

    Args:
        counts: ndarray[K] valid pixels per segment (each >= 1).

    Returns:
        ndarray[4, K, 6] intp, columns as :func:`_ranks`; the range row only needs its two
        5th-percentile ranks (the other columns repeat the first, which costs nothing).
    """
    table = np.array([_ranks(int(n))[0] for n in counts], np.intp).reshape(-1, 6)
    out = np.repeat(table[None], 4, axis=0)
    out[3, :, 2:] = table[:, :1]
    return out


def group_pixels(ids: np.ndarray, segment_ids: np.ndarray,
                 valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The valid pixels of every segment, segment by segment, without a mask per segment.

    A panoptic id map is piecewise constant along its rows: the image is cut into runs of equal
    (id, valid) in row-major order (a run may continue on the next row), the runs of listed
    segments are sorted by segment and expanded into pixel indices.

    Args:
        ids: ndarray[H, W] integer segment ids; ids not in ``segment_ids`` are ignored.
        segment_ids: ndarray[K] int64, strictly ascending, K >= 1.
        valid: ndarray[H, W] bool, the pixels with depth.

    Returns:
        ``pixels`` ndarray[N] intp, flat indices of the valid pixels of listed segments, segment
        0's first (row-major within a segment); ``counts`` ndarray[K] int64 (valid pixels per
        segment, summing to N); ``areas`` ndarray[K] float64 (all pixels per segment).
    """
    k = len(segment_ids)
    flat_ids = np.ascontiguousarray(ids).reshape(-1)
    flat_valid = valid.reshape(-1)
    change = np.empty(flat_ids.size, bool)
    change[0] = True
    np.not_equal(flat_ids[1:], flat_ids[:-1], out=change[1:])
    change[1:] |= flat_valid[1:] != flat_valid[:-1]
    starts = np.flatnonzero(change)
    lengths = np.diff(starts, append=flat_ids.size)
    run_seg = np.searchsorted(segment_ids, flat_ids[starts])
    np.minimum(run_seg, k - 1, out=run_seg)
    listed = segment_ids[run_seg] == flat_ids[starts]
    areas = np.bincount(run_seg[listed], weights=lengths[listed], minlength=k)
    keep = listed & flat_valid[starts]
    starts, lengths, run_seg = starts[keep], lengths[keep], run_seg[keep]
    order = np.argsort(run_seg, kind="stable")
    starts, lengths, run_seg = starts[order], lengths[order], run_seg[order]
    counts = np.bincount(run_seg, weights=lengths, minlength=k).astype(np.int64)
    # Run r covers pixels[o_r : o_r + len_r] = start_r + 0, 1, ...
    out_start = np.cumsum(lengths) - lengths
    pixels = np.repeat(starts - out_start, lengths) + np.arange(int(counts.sum()))
    return pixels, counts, areas


def segment_points(depth: np.ndarray, camera: PinholeLike, pixels: np.ndarray) -> np.ndarray:
    """The back-projected points of the given pixels and their range.

    Args:
        depth: ndarray[H, W] float32 metres (C-contiguous).
        camera: intrinsics of this image size.
        pixels: ndarray[N] flat pixel indices (valid depth).

    Returns:
        ndarray[4, N] float32 rows x, y, z, range ``sqrt((x*x + y*y) + z*z)`` (in this order of
        float32 operations, as the reference's ``np.sqrt(x * x + y * y + z * z)``).
    """
    h, w = depth.shape
    sx, sy = ray_slopes(h, w, camera)
    z = depth.reshape(-1)
    points = np.empty((4, len(pixels)), np.float32)
    np.take(z, pixels, out=points[2])
    np.take(np.broadcast_to(sx, (h, w)).reshape(-1), pixels, out=points[0])
    np.take(np.broadcast_to(sy[:, None], (h, w)).reshape(-1), pixels, out=points[1])
    points[:2] *= points[2]
    range_ = points[3]
    np.multiply(points[0], points[0], out=range_)
    range_ += points[1] * points[1]
    range_ += points[2] * points[2]
    np.sqrt(range_, out=range_)
    return points


def geometries_of(values: np.ndarray, counts: np.ndarray,
                  areas: np.ndarray) -> list[SegmentGeometry | None]:
    """Interpolate every segment's statistics from its rank values, vectorised.

    Args:
        values: ndarray[K, 4, 6] float64, the values at the ranks of :func:`rank_table` (rows
            x, y, z, range; anything where count is 0).
        counts: ndarray[K] valid pixels per segment; areas: ndarray[K] pixels per segment.
    """
    n = np.maximum(counts, 1)
    g5 = np.array([_ranks(int(c))[1] for c in n])[:, None]
    g95 = np.array([_ranks(int(c))[2] for c in n])[:, None]
    low = _lerp(values[:, :, _LO5], values[:, :, _HI5], g5)
    high = _lerp(values[:, :, _LO95], values[:, :, _HI95], g95)
    mid = np.where((n % 2 == 1)[:, None], values[:, :, _MID_HI],
                   (values[:, :, _MID_LO] + values[:, :, _MID_HI]) / 2.0)
    out: list[SegmentGeometry | None] = []
    for i, count in enumerate(counts.tolist()):
        if count == 0:
            out.append(None)
            continue
        out.append(SegmentGeometry(
            valid_fraction=count / float(areas[i]),
            centroid=(float(mid[i, 0]), float(mid[i, 1]), float(mid[i, 2])),
            distance=float(low[i, 3]),
            extent_min=(float(low[i, 0]), float(low[i, 1]), float(low[i, 2])),
            extent_max=(float(high[i, 0]), float(high[i, 1]), float(high[i, 2])),
        ))
    return out


def segment_geometries(
    ids: np.ndarray, segment_ids: np.ndarray, depth_m: np.ndarray, camera: PinholeLike
) -> list[SegmentGeometry | None]:
    """3D statistics of every listed segment (see the module docstring).

    Args:
        ids: ndarray[H, W] integer segment ids (panoptic ``category * divisor + instance``);
            ids not in ``segment_ids`` (void) are ignored.
        segment_ids: ndarray[K] integer, strictly ascending.
        depth_m: ndarray[H, W] float32 metres, NaN, inf or <= 0 = no depth; aligned with
            ``ids``.
        camera: intrinsics of this image size (pixels).

    Returns:
        One entry per ``segment_ids``: :class:`SegmentGeometry`, or None for a segment without
        a valid depth pixel (or without pixels).
    """
    if ids.shape != depth_m.shape:
        raise DepthError(f"depth is {depth_m.shape[1]}x{depth_m.shape[0]}, the label image "
                         f"{ids.shape[1]}x{ids.shape[0]}: scale it first (match_depth_size)")
    segment_ids = np.asarray(segment_ids, np.int64)
    k = len(segment_ids)
    if k == 0 or ids.size == 0:
        return [None] * k
    depth = np.ascontiguousarray(depth_m, np.float32)
    valid = depth > 0  # False for NaN
    valid &= depth < np.inf
    pixels, counts, areas = group_pixels(ids, segment_ids, valid)
    values = np.zeros((k, 4, 6), np.float64)
    present = counts > 0
    if present.any():
        found = grouped_order_statistics(segment_points(depth, camera, pixels),
                                         counts[present], rank_table(counts[present]))
        values[present] = found.transpose(1, 0, 2)
    return geometries_of(values, counts, areas)


def segment_geometry(result: PanopticResult, depth_m: np.ndarray,
                     camera: PinholeLike) -> PanopticResult:
    """The frame path's 3D step: ``result`` with :attr:`Segment.geometry` set.

    Args:
        result: a panoptic result (ids ndarray[H, W] int32).
        depth_m: ndarray[H, W] float32 metres, NaN = none, aligned with the colour image
            (decode with :func:`depth_to_metres`, scale with :func:`match_depth_size`).
        camera: the colour image's intrinsics (:func:`intrinsics_from_camera_info`).

    Returns:
        A new result (same ``ids`` array): every segment with at least one valid depth pixel
        has a :class:`SegmentGeometry`; the others have ``geometry=None``.
    """
    seg_ids = np.fromiter((s.id for s in result.segments), np.int64, len(result.segments))
    if len(seg_ids) and np.any(np.diff(seg_ids) <= 0):
        order = np.argsort(seg_ids, kind="stable")
        geoms_sorted = segment_geometries(result.ids, seg_ids[order], depth_m, camera)
        geoms: list[SegmentGeometry | None] = [None] * len(seg_ids)
        for pos, g in zip(order.tolist(), geoms_sorted):
            geoms[pos] = g
    else:
        geoms = segment_geometries(result.ids, seg_ids, depth_m, camera)
    segments = [replace(s, geometry=g) for s, g in zip(result.segments, geoms)]
    return replace(result, segments=segments)


def geometry_json(geometry: SegmentGeometry | None) -> dict:
    """A segment's 3D fields for COCO ``segments_info`` (``panoptic-ros infer --depth``).

    Returns:
        ``{"centroid_m": [x, y, z], "distance_m": d, "valid_depth_fraction": f}`` (metres,
        camera optical frame, rounded to 0.1 mm / 1e-6), or ``{}`` without geometry.
    """
    if geometry is None:
        return {}
    return {"centroid_m": [round(float(v), 4) for v in geometry.centroid],
            "distance_m": round(float(geometry.distance), 4),
            "valid_depth_fraction": round(float(geometry.valid_fraction), 6)}
