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

Speed: one pass groups the pixels by segment. A panoptic id map is piecewise constant along its
rows, so the image is cut into runs of equal (id, depth valid) and only the runs (a few
thousand) are sorted by segment; the runs are expanded into one pixel index array in segment
order, the points gathered once, and each segment's order statistics come from one
``np.partition`` of its contiguous slice at three anchor ranks (5th, 50th, 95th percentile;
the neighbouring ranks the interpolation needs are a min or max of the run beside an anchor).
No boolean mask per segment, no full-image sort.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import numpy as np

from panoptic_ros.geometry.depth import DepthError
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


def _lerp(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """The ``_lerp`` of numpy (float64): exact at both ends, the rounding of np.percentile."""
    diff = b - a
    return b - diff * (1.0 - gamma) if gamma >= 0.5 else a + diff * gamma


class _OrderStats:
    """Values of chosen ranks of each row of ndarray[R, n], by one partition and min/max.

    Ranks that are *anchors* are fixed by ``np.partition``; a rank next to an anchor (just
    above one, or just below the next) is the min / max of the unordered run between them, a
    cheap reduction instead of another selection. The rows are partitioned in place.
    """

    def __init__(self, rows: np.ndarray, anchors: list[int]) -> None:
        self.rows, self.n = rows, rows.shape[1]
        self.anchors = sorted(set(anchors))
        rows.partition(self.anchors, axis=1)

    def at(self, rank: int) -> np.ndarray:
        """ndarray[R] float64: the value of sorted position ``rank`` of every row."""
        if rank in self.anchors:
            return self.rows[:, rank].astype(np.float64)
        prev = max((a for a in self.anchors if a < rank), default=-1)
        nxt = min((a for a in self.anchors if a > rank), default=self.n)
        run = self.rows[:, prev + 1:nxt]
        if rank == prev + 1:
            return run.min(axis=1).astype(np.float64)
        if rank == nxt - 1:
            return run.max(axis=1).astype(np.float64)
        raise ValueError(f"rank {rank} is not next to an anchor of {self.anchors}")

    def percentile(self, q: float) -> np.ndarray:
        """``numpy.percentile(row, q)`` (linear) of every row, float64."""
        lo, hi, gamma = _linear_index(self.n, q)
        return _lerp(self.at(lo), self.at(hi), gamma)

    def median(self) -> np.ndarray:
        """``numpy.median(row)`` of every row (mean of the middle two for even n), float64."""
        n = self.n
        if n % 2:
            return self.at(n // 2)
        return (self.at(n // 2 - 1) + self.at(n // 2)) / 2.0


def geometry_of_points(points: np.ndarray, area: int) -> SegmentGeometry:
    """The statistics of one segment's points.

    Args:
        points: ndarray[4, n] float32 rows x, y, z, range (n >= 1); partitioned in place.
        area: the segment's pixel count (>= n).
    """
    n = points.shape[1]
    lo5, lo95 = _linear_index(n, LOW_Q)[0], _linear_index(n, HIGH_Q)[0]
    xyz = _OrderStats(points[:3], [lo5, n // 2, lo95])
    rng = _OrderStats(points[3:], [lo5])
    centre, low, high = xyz.median(), xyz.percentile(LOW_Q), xyz.percentile(HIGH_Q)
    return SegmentGeometry(
        valid_fraction=n / area,
        centroid=(float(centre[0]), float(centre[1]), float(centre[2])),
        distance=float(rng.percentile(LOW_Q)[0]),
        extent_min=(float(low[0]), float(low[1]), float(low[2])),
        extent_max=(float(high[0]), float(high[1]), float(high[2])),
    )


def segment_geometries(
    ids: np.ndarray, segment_ids: np.ndarray, depth_m: np.ndarray, camera: PinholeLike
) -> list[SegmentGeometry | None]:
    """3D statistics of every listed segment (see the module docstring).

    Args:
        ids: ndarray[H, W] integer segment ids (panoptic ``category * divisor + instance``);
            ids not in ``segment_ids`` (void) are ignored.
        segment_ids: ndarray[K] integer, strictly ascending.
        depth_m: ndarray[H, W] float32 metres, NaN (or <= 0) = no depth; aligned with ``ids``.
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
    flat_ids = np.ascontiguousarray(ids).reshape(-1)
    z = depth.reshape(-1)
    with np.errstate(invalid="ignore"):
        valid = z > 0  # False for NaN
    # Runs of equal (id, valid) in row-major order (a run may continue on the next row).
    change = np.empty(z.size, bool)
    change[0] = True
    np.not_equal(flat_ids[1:], flat_ids[:-1], out=change[1:])
    change[1:] |= valid[1:] != valid[:-1]
    starts = np.flatnonzero(change)
    lengths = np.diff(starts, append=z.size)
    run_seg = np.searchsorted(segment_ids, flat_ids[starts])
    np.minimum(run_seg, k - 1, out=run_seg)
    listed = segment_ids[run_seg] == flat_ids[starts]
    areas = np.bincount(run_seg[listed], weights=lengths[listed], minlength=k)
    keep = listed & valid[starts]
    starts, lengths, run_seg = starts[keep], lengths[keep], run_seg[keep]
    order = np.argsort(run_seg, kind="stable")
    starts, lengths, run_seg = starts[order], lengths[order], run_seg[order]
    counts = np.bincount(run_seg, weights=lengths, minlength=k).astype(np.int64)
    total = int(counts.sum())
    # Expand the runs into pixel indices: run r covers out[o_r : o_r + len_r] = start_r + 0..
    out_start = np.cumsum(lengths) - lengths
    pixels = np.repeat(starts - out_start, lengths) + np.arange(total)
    x, y = backproject_image(depth, camera)
    points = np.empty((4, total), np.float32)
    np.take(x.reshape(-1), pixels, out=points[0])
    np.take(y.reshape(-1), pixels, out=points[1])
    np.take(z, pixels, out=points[2])
    range_ = points[3]  # sqrt((x*x + y*y) + z*z), float32, this order
    np.multiply(points[0], points[0], out=range_)
    range_ += points[1] * points[1]
    range_ += points[2] * points[2]
    np.sqrt(range_, out=range_)
    ends = np.cumsum(counts)
    out: list[SegmentGeometry | None] = []
    for i in range(k):
        n = int(counts[i])
        if n == 0:
            out.append(None)
            continue
        out.append(geometry_of_points(points[:, ends[i] - n:ends[i]], int(areas[i])))
    return out


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
