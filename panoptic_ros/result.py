"""PanopticResult: the one output type of every model backend.

A result is an int32 id map at the input image's resolution (``category * label_divisor +
instance``, 0 = void; see :mod:`panoptic_ros.categories`) plus one :class:`Segment` per id
present in it. Segment areas and boxes are computed from the id map, so both always agree;
the semantic map, the instance map and the per-class counts are derived from the same data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from panoptic_ros.categories import (
    DEFAULT_LABEL_DIVISOR,
    VOID,
    LabelSet,
    check_label_divisor,
    id_to_rgb,
    rgb_to_id,
)


@dataclass(frozen=True)
class SegmentGeometry:
    """Where a segment is in 3D, from an aligned depth image (camera optical frame, metres).

    Frame: REP 103 optical (x right, y down, z forward) of the image's header.

    Attributes:
        valid_fraction: valid depth pixels / segment pixels, 0..1 (> 0: at least one).
        centroid: ``(x, y, z)``, per-axis median of the back-projected valid pixels.
        distance: 5th percentile of their Euclidean range (the robust nearest point).
        extent_min: ``(x, y, z)`` per-axis 5th percentiles (axis-aligned box).
        extent_max: ``(x, y, z)`` per-axis 95th percentiles.
    """

    valid_fraction: float
    centroid: tuple[float, float, float]
    distance: float
    extent_min: tuple[float, float, float]
    extent_max: tuple[float, float, float]


@dataclass(frozen=True)
class Segment:
    """One segment of a panoptic label image.

    Attributes:
        id: its pixel value, ``category_id * label_divisor + instance_id``.
        category_id: dataset category id.
        is_thing: whether the category is a thing.
        instance_id: 1.. within its category for things; 0 for stuff.
        score: detection confidence (things) or mean class probability (stuff), 0..1.
        area: number of pixels.
        bbox: ``(x, y, width, height)`` in pixels, the tight box around its pixels.
        iscrowd: a crowd region (ground truth only).
        track_id: identity of the object over time, unique among the tracks of one tracker
            run (since its last reset), never reused; 0 for stuff and untracked segments.
            With tracking on, ``instance_id`` is the track's instance number within its
            category and stays the same for the track's life (the STEP convention), so the
            label image's pixel value of an object persists across frames too.
        track_age: seconds since the track was first seen (header stamps); 0.0 untracked.
        geometry: where it is in 3D (:class:`SegmentGeometry`), None without depth or without
            a valid depth pixel in it.
    """

    id: int
    category_id: int
    is_thing: bool
    instance_id: int
    score: float = 1.0
    area: int = 0
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)
    iscrowd: bool = False
    track_id: int = 0
    track_age: float = 0.0
    geometry: SegmentGeometry | None = None


def segment_stats(index_map: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Areas and tight boxes of the segments of a compact index map, vectorised.

    Args:
        index_map: ndarray[H, W] integer in ``0..count-1``.
        count: number of segment indices.

    Returns:
        ``areas`` ndarray[count] int64 and ``boxes`` ndarray[count, 4] int64 as
        ``(x, y, w, h)``; a segment with no pixels has area 0 and box ``(0, 0, 0, 0)``.
    """
    h, w = index_map.shape
    areas = np.bincount(index_map.reshape(-1), minlength=count)[:count]
    # Presence of each index per row and per column, from two bincounts (no sort).
    rows = np.bincount(
        (np.arange(h, dtype=index_map.dtype)[:, None] * count + index_map).reshape(-1),
        minlength=h * count,
    ).reshape(h, count) > 0
    cols = np.bincount(
        (np.arange(w, dtype=index_map.dtype)[None, :] * count + index_map).reshape(-1),
        minlength=w * count,
    ).reshape(w, count) > 0
    y0 = rows.argmax(axis=0)
    y1 = h - rows[::-1].argmax(axis=0)
    x0 = cols.argmax(axis=0)
    x1 = w - cols[::-1].argmax(axis=0)
    boxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.int64)
    boxes[areas == 0] = 0
    return areas, boxes


def compact_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a non-negative id map and the map of their positions.

    Args:
        ids: ndarray[H, W] non-negative integers.

    Returns:
        ``values`` ndarray[K] int64 sorted ascending and ``index_map`` ndarray[H, W] integer with
        ``values[index_map] == ids``.
    """
    if ids.size == 0:
        return np.zeros(0, np.int64), np.zeros(ids.shape, np.int64)
    top = int(ids.max())
    if top < 4 * ids.size + 65536:
        # Dense lookup table: linear time, much faster than np.unique's sort.
        present = np.bincount(ids.reshape(-1), minlength=top + 1) > 0
        values = np.flatnonzero(present)
        lut = np.zeros(top + 1, dtype=np.int32)
        lut[values] = np.arange(len(values), dtype=np.int32)
        return values.astype(np.int64), lut[ids]
    values, inverse = np.unique(ids, return_inverse=True)
    return values.astype(np.int64), inverse.reshape(ids.shape)


@dataclass
class PanopticResult:
    """Panoptic segmentation of one image.

    Attributes:
        ids: ndarray[H, W] int32, ``category * label_divisor + instance``, 0 = void, at the
            input image's resolution.
        segments: one :class:`Segment` per non-void id in ``ids``, ascending by id.
        label_divisor: the divisor of the encoding.
    """

    ids: np.ndarray
    segments: list[Segment] = field(default_factory=list)
    label_divisor: int = DEFAULT_LABEL_DIVISOR

    @classmethod
    def from_ids(
        cls,
        ids: np.ndarray,
        label_set: LabelSet,
        label_divisor: int = DEFAULT_LABEL_DIVISOR,
        scores: Mapping[int, float] | None = None,
        crowd: Sequence[int] = (),
    ) -> PanopticResult:
        """Build a result from an id map; areas and boxes are measured from it.

        Args:
            ids: ndarray[H, W] integer, ``category * label_divisor + instance``, 0 = void.
            label_set: categories the ids refer to; an unknown category raises ``ValueError``.
            label_divisor: the encoding's divisor.
            scores: optional score per segment id (default 1.0).
            crowd: segment ids that are crowd regions (ground truth).
        """
        ids = np.ascontiguousarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"ids must be a 2-D label image, got shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be integers, got {ids.dtype}")
        check_label_divisor(label_divisor, label_set)
        ids = ids.astype(np.int32, copy=False)
        if ids.size and ids.min() < 0:
            raise ValueError("ids must be >= 0 (0 = void)")
        values, index_map = compact_ids(ids)
        areas, boxes = segment_stats(index_map, len(values))
        scores = scores or {}
        crowd_set = {int(c) for c in crowd}
        segments = []
        for value, area, box in zip(values.tolist(), areas.tolist(), boxes.tolist()):
            if value == VOID:
                continue
            cat, inst = divmod(value, label_divisor)
            if cat not in label_set:
                raise ValueError(
                    f"id {value} decodes to category {cat}, which is not in label set "
                    f"{label_set.name!r} (label_divisor {label_divisor})"
                )
            thing = label_set.is_thing(cat)
            segments.append(
                Segment(
                    id=value,
                    category_id=cat,
                    is_thing=thing,
                    instance_id=inst,
                    score=float(scores.get(value, 1.0)),
                    area=int(area),
                    bbox=tuple(int(v) for v in box),
                    iscrowd=value in crowd_set,
                )
            )
        return cls(ids=ids, segments=segments, label_divisor=label_divisor)

    # -- derived views --------------------------------------------------------------------
    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.ids.shape[0])

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.ids.shape[1])

    def semantic(self) -> np.ndarray:
        """ndarray[H, W] int32 of dataset category ids (0 = void)."""
        return self.ids // self.label_divisor

    def instances(self) -> np.ndarray:
        """ndarray[H, W] int32 of instance ids (0 = stuff or void)."""
        return self.ids % self.label_divisor

    def counts(self, label_set: LabelSet) -> dict[int, int]:
        """Number of thing instances per category: every thing category, zeros included."""
        out = {c.id: 0 for c in label_set.things}
        for s in self.segments:
            if s.is_thing and not s.iscrowd:
                out[s.category_id] = out.get(s.category_id, 0) + 1
        return out

    def segment(self, segment_id: int) -> Segment:
        """The segment with pixel value ``segment_id``; ``KeyError`` if absent."""
        for s in self.segments:
            if s.id == segment_id:
                return s
        raise KeyError(segment_id)

    def with_scores(self, scores: Mapping[int, float]) -> PanopticResult:
        """A copy whose segments take their scores from ``scores`` (segment id -> score)."""
        segs = [replace(s, score=float(scores.get(s.id, s.score))) for s in self.segments]
        return PanopticResult(self.ids, segs, self.label_divisor)

    def keep_categories(self, keep: Iterable[int]) -> PanopticResult:
        """Only the segments of the categories in ``keep``; every other pixel becomes void.

        Args:
            keep: dataset category ids to keep.

        Returns:
            A new result (``ids`` copied) whose pixels of other categories are :data:`VOID`;
            the kept segments are unchanged (same ids, areas, boxes, scores).
        """
        keep_ids = np.fromiter((int(k) for k in keep), dtype=np.int64)
        divisor = self.label_divisor
        top = max(int(keep_ids.max(initial=0)), int(self.ids.max(initial=0)) // divisor)
        lut = np.zeros(top + 1, dtype=bool)
        lut[keep_ids[keep_ids > 0]] = True
        ids = np.where(lut[self.ids // divisor], self.ids, VOID).astype(np.int32, copy=False)
        segments = [s for s in self.segments if lut[s.category_id]]
        return replace(self, ids=ids, segments=segments)

    # -- COCO panoptic --------------------------------------------------------------------
    def to_coco(self) -> tuple[np.ndarray, list[dict]]:
        """COCO panoptic form: the PNG's RGB array and the ``segments_info`` list.

        Segment ids in COCO form are the pixel values of :attr:`ids` themselves.

        Returns:
            ``rgb`` ndarray[H, W, 3] uint8 and ``segments_info`` dicts with ``id``,
            ``category_id``, ``iscrowd``, ``bbox`` ([x, y, w, h]), ``area`` and ``score``;
            tracked segments also ``track_id`` and ``track_age`` (seconds).
        """
        info = []
        for s in self.segments:
            entry = {
                "id": int(s.id),
                "category_id": int(s.category_id),
                "iscrowd": int(s.iscrowd),
                "bbox": [int(v) for v in s.bbox],
                "area": int(s.area),
                "score": round(float(s.score), 6),
            }
            if s.track_id:
                entry["track_id"] = int(s.track_id)
                entry["track_age"] = round(float(s.track_age), 6)
            info.append(entry)
        return id_to_rgb(self.ids), info

    @classmethod
    def from_coco(
        cls,
        png: np.ndarray,
        segments_info: Sequence[Mapping],
        label_set: LabelSet,
        label_divisor: int = DEFAULT_LABEL_DIVISOR,
    ) -> PanopticResult:
        """Build from a COCO panoptic PNG (RGB or decoded ids) and its ``segments_info``.

        Segments are re-encoded: things get instance ids 1.. per category in the order of
        ``segments_info``; stuff segments of one category merge into instance 0. Pixels whose
        segment id is not listed become void.

        Args:
            png: ndarray[H, W, 3] uint8 RGB, or ndarray[H, W] integer segment ids.
            segments_info: dicts with at least ``id`` and ``category_id`` (``iscrowd`` and
                ``score`` optional).
        """
        seg_ids = rgb_to_id(png) if png.ndim == 3 else np.asarray(png).astype(np.int64)
        values, index_map = compact_ids(seg_ids)
        lut = np.zeros(len(values), dtype=np.int64)
        position = {v: k for k, v in enumerate(values.tolist())}
        next_instance: dict[int, int] = {}
        scores: dict[int, float] = {}
        crowd = []
        for info in segments_info:
            sid, cat = int(info["id"]), int(info["category_id"])
            thing = label_set.is_thing(cat)
            if thing:
                inst = next_instance.get(cat, 0) + 1
                if inst >= label_divisor:
                    raise ValueError(
                        f"category {cat} has more than {label_divisor - 1} instances"
                    )
                next_instance[cat] = inst
            else:
                inst = 0
            new_id = cat * label_divisor + inst
            if "score" in info:
                scores[new_id] = float(info["score"])
            if info.get("iscrowd", 0):
                crowd.append(new_id)
            if sid in position:
                lut[position[sid]] = new_id
        return cls.from_ids(lut[index_map], label_set, label_divisor, scores=scores, crowd=crowd)
