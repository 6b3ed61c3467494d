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
``np.partition`` of its contiguous slice (a large segment's row by row, by nested single-rank
selections, the neighbouring ranks the interpolation needs being a min or max beside them);
the interpolation is vectorised over all segments.
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


def _lerp(a: np.ndarray, b: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """The ``_lerp`` of numpy (float64): exact at both ends, the rounding of np.percentile."""
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1.0 - gamma), a + diff * gamma)


LARGE = 2048
"""Segments with more valid pixels than this are selected row by row (see :func:`rank_values`)."""

# Columns of the rank table: the ranks each statistic needs.
_LO5, _HI5, _MID_LO, _MID_HI, _LO95, _HI95 = range(6)


def _ranks(n: int) -> tuple[list[int], float, float]:
    """Sorted positions ``[lo5, hi5, mid_lo, mid_hi, lo95, hi95]`` and the two weights."""
    lo5, hi5, g5 = _linear_index(n, LOW_Q)
    lo95, hi95, g95 = _linear_index(n, HIGH_Q)
    return [lo5, hi5, (n - 1) // 2, n // 2, lo95, hi95], g5, g95


def rank_values(block: np.ndarray, large: int = LARGE) -> np.ndarray:
    """The values at the ranks of :func:`_ranks` of each row of one segment's points.

    Args:
        block: ndarray[4, n] float32 rows x, y, z, range (n >= 1), each row contiguous;
            partitioned in place.
        large: up to this ``n`` (or 64), one ``np.partition`` of the block at all six ranks
            (few calls: small segments cost their call overhead). Above, each row is selected
            by nested single-rank partitions (the median, then the 5th percentile rank in the
            lower part and the 95th in the upper), and each neighbouring rank the interpolation
            needs is the min or max of the unordered run beside a selected one: numpy's
            multi-rank partition costs several times a single one.

    Returns:
        ndarray[4, 6] float64 (the range row: only its two 5th-percentile ranks, NaN else).
    """
    n = block.shape[1]
    ranks, _, _ = _ranks(n)
    if n <= max(large, 64):
        block.partition(sorted(set(ranks)), axis=1)
        return block[:, ranks].astype(np.float64)
    lo5, _, mid_lo, mid, lo95, _ = ranks
    out = np.full((4, 6), np.nan)
    for j in range(3):
        row = block[j]
        row.partition(mid)
        row[:mid].partition(lo5)
        row[mid + 1:].partition(lo95 - mid - 1)
        out[j] = (row[lo5], row[lo5 + 1:mid + 1].min(),  # all >= row[lo5] there
                  row[mid] if mid_lo == mid else row[:mid].max(), row[mid],
                  row[lo95], row[lo95 + 1:].min() if lo95 + 1 < n else row[lo95])
    rng = block[3]
    rng.partition(lo5)
    out[3, _LO5], out[3, _HI5] = rng[lo5], rng[lo5 + 1:].min()
    return out


def geometries_of(values: np.ndarray, counts: np.ndarray,
                  areas: np.ndarray) -> list[SegmentGeometry | None]:
    """Interpolate every segment's statistics from its rank values, vectorised.

    Args:
        values: ndarray[K, 4, 6] float64 from :func:`rank_values` (anything where count is 0).
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
    values = np.zeros((k, 4, 6), np.float64)
    for i in np.flatnonzero(counts).tolist():
        values[i] = rank_values(points[:, ends[i] - counts[i]:ends[i]])
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
