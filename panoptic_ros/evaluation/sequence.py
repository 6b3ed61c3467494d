"""Pixel counts between the ground-truth and predicted tracks of a video, frame by frame.

Every video metric here (STQ, VPQ, IDF1, ID switches, MOTA, HOTA) needs nothing but the pixel
count of each (ground-truth track, predicted track) pair in each frame. :class:`SequenceCounts`
measures them once per frame with one joint histogram over the frame's segment ids (runs of equal
ids, :func:`~panoptic_ros.evaluation.pq.joint_histogram`) and keeps them as a short list of
``(gt track, pred track, pixels)`` triples; the metrics then work on these small tables.

A *track* (a tube over frames) is identified by its key over the whole sequence:

* a thing segment that is not crowd: ``(category_id, segment id)``. The segment id (a COCO
  panoptic PNG id, or a label-image value ``category * label_divisor + instance``) is the same
  in every frame of the object, which is what a tracker or the video ground truth provides;
* a stuff segment: ``(category_id, 0)``: all pixels of a stuff category form one track, whatever
  ids a frame gives them (stuff has no identity; STEP and Cityscapes-VPS treat it so);
* a ground-truth crowd region: ``(category_id, 0)`` of its thing category (never matched,
  ignored by the tracking terms). Predictions have no crowd.

Track index 0 on either side is VOID (segment id 0, or pixels no listed segment covers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from panoptic_ros.categories import DEFAULT_LABEL_DIVISOR, VOID, LabelSet
from panoptic_ros.data.id_runs import IdRuns
from panoptic_ros.evaluation.pq import PQError, category_things, joint_histogram

Categories = Mapping[int, Mapping] | LabelSet
"""COCO ``categories`` as ``{id: {"isthing": 0|1, ...}}``, or a :class:`LabelSet`."""


@dataclass(frozen=True)
class Frame:
    """One panoptic frame of a video.

    Attributes:
        ids: ndarray[H, W] integer segment ids (0 = VOID), or their
            :class:`~panoptic_ros.data.id_runs.IdRuns`. A thing keeps its id across the frames
            of its video.
        segments: ``segments_info`` entries with ``id``, ``category_id`` and (ground truth,
            optional) ``iscrowd``.
    """

    ids: np.ndarray | IdRuns
    segments: Sequence[Mapping]

    @classmethod
    def from_label_image(
        cls,
        label: np.ndarray,
        categories: Categories,
        label_divisor: int = DEFAULT_LABEL_DIVISOR,
    ) -> Frame:
        """A frame from a panoptic label image (``category * label_divisor + instance``).

        Args:
            label: ndarray[H, W] integer; 0 = VOID; instance 0 of a thing category is crowd
                (the Cityscapes and STEP convention), stuff has instance 0.
            categories: tells things from stuff.
            label_divisor: the encoding's divisor.

        Returns:
            The frame with the label values themselves as segment ids (persistent when the
            instance ids are).
        """
        label = np.asarray(label)
        things = category_things(categories)
        runs = IdRuns.from_dense(label)
        values = np.unique(runs.ids)
        segments = []
        for value in values[values != VOID].tolist():
            cat, inst = divmod(int(value), label_divisor)
            crowd = things.get(cat, False) and inst == 0
            segments.append({"id": int(value), "category_id": cat, "iscrowd": int(crowd)})
        return cls(runs, segments)


class FramePairs(NamedTuple):
    """Pixel counts of one frame's track pairs.

    ``count[i]`` pixels of ground-truth track ``gt[i]`` lie on predicted track ``pred[i]``
    (ndarray[N] int64 each; track 0 = VOID; no pair repeats).
    """

    gt: np.ndarray
    pred: np.ndarray
    count: np.ndarray


@dataclass
class TrackTable:
    """The tracks of one side of a sequence, indexed from 1 (0 is VOID) in order of appearance.

    Attributes:
        category: per index, the category id (0 for VOID).
        segment_id: per index, the segment id of a thing track, 0 for stuff, crowd and VOID.
        crowd: per index, whether it is a ground-truth crowd region.
        thing: per index, whether its category is a thing.
    """

    category: list[int] = field(default_factory=lambda: [VOID])
    segment_id: list[int] = field(default_factory=lambda: [0])
    crowd: list[bool] = field(default_factory=lambda: [False])
    thing: list[bool] = field(default_factory=lambda: [False])
    _index: dict[tuple[int, int], int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        """Number of tracks, VOID included."""
        return len(self.category)

    def lookup(self, category: int, segment_id: int, crowd: bool, thing: bool) -> int:
        """The index of the track ``(category, segment_id)``, added when new."""
        key = (category, segment_id)
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self.category)
            self.category.append(category)
            self.segment_id.append(segment_id)
            self.crowd.append(crowd)
            self.thing.append(thing)
        return index

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(category int64, crowd bool, thing bool)``, ndarray[len] each."""
        return (np.asarray(self.category, np.int64), np.asarray(self.crowd, bool),
                np.asarray(self.thing, bool))


class SequenceCounts:
    """Per-frame pixel counts between the ground-truth and predicted tracks of one sequence.

    Args:
        categories: the scored categories (thing or stuff; a segment of another category
            raises :class:`~panoptic_ros.evaluation.pq.PQError`).

    Attributes:
        gt, pred: the :class:`TrackTable` of each side.
        frames: one :class:`FramePairs` per frame added, in order.
    """

    def __init__(self, categories: Categories) -> None:
        self.things = category_things(categories)
        self.gt = TrackTable()
        self.pred = TrackTable()
        self.frames: list[FramePairs] = []

    @classmethod
    def of(cls, frames: Iterable[tuple[Frame, Frame]], categories: Categories) -> SequenceCounts:
        """Counts of a whole sequence of ``(ground truth, prediction)`` frames."""
        counts = cls(categories)
        for gt, pred in frames:
            counts.add(gt, pred)
        return counts

    def __len__(self) -> int:
        """Number of frames added."""
        return len(self.frames)

    def add(self, gt: Frame, pred: Frame) -> FramePairs:
        """Measure one frame (the next in time) and return its pairs.

        Raises:
            PQError: the maps differ in size, a non-zero id of a map is not in its
                ``segments``, or a segment has an unknown category.
        """
        where = f"frame {len(self.frames)}"
        g_ids = gt.ids if isinstance(gt.ids, IdRuns) else np.asarray(gt.ids)
        p_ids = pred.ids if isinstance(pred.ids, IdRuns) else np.asarray(pred.ids)
        if tuple(g_ids.shape) != tuple(p_ids.shape):
            raise PQError(f"{where}: ground truth is {tuple(g_ids.shape)} but prediction is "
                          f"{tuple(p_ids.shape)}")
        gvals, pvals, joint = joint_histogram(g_ids, p_ids)
        g_track = self._tracks(gvals, gt.segments, self.gt, True, f"{where} ground truth")
        p_track = self._tracks(pvals, pred.segments, self.pred, False, f"{where} prediction")
        rows, cols = np.nonzero(joint)
        # Several ids may fall on one track (stuff split into segments): sum their pixels.
        n_pred = len(self.pred)
        key = g_track[rows] * n_pred + p_track[cols]
        uniq, inverse = np.unique(key, return_inverse=True)
        count = np.bincount(inverse, weights=joint[rows, cols], minlength=len(uniq))
        pairs = FramePairs(uniq // n_pred, uniq % n_pred, count.astype(np.int64))
        self.frames.append(pairs)
        return pairs

    def _tracks(self, values: np.ndarray, segments: Sequence[Mapping], table: TrackTable,
                is_gt: bool, where: str) -> np.ndarray:
        """Track index of each distinct id ``values[i]`` of a map (0 for VOID)."""
        by_id: dict[int, Mapping] = {}
        for s in segments:
            try:
                by_id[int(s["id"])] = s  # a later duplicate wins, as in pq.py
            except (KeyError, TypeError, ValueError):
                raise PQError(f"{where}: a segment has no integer 'id'") from None
        out = np.zeros(len(values), np.int64)
        for i, value in enumerate(values.tolist()):
            if value == VOID:
                continue
            seg = by_id.get(value)
            if seg is None:
                raise PQError(f"{where}: segment id {value} is in the PNG but not in "
                              "segments_info")
            try:
                cat = int(seg["category_id"])
            except (KeyError, TypeError, ValueError):
                raise PQError(f"{where}: segment {value} has no 'category_id'") from None
            thing = self.things.get(cat)
            if thing is None:
                raise PQError(f"{where}: segment {value} has unknown category_id {cat}")
            crowd = is_gt and thing and int(seg.get("iscrowd", 0)) == 1
            out[i] = table.lookup(cat, value if thing and not crowd else 0, crowd, thing)
        return out

    def total(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Pixel counts summed over frames ``start:stop``: ndarray[len(gt), len(pred)] int64."""
        out = np.zeros((len(self.gt), len(self.pred)), np.int64)
        for f in self.frames[start:stop]:
            out[f.gt, f.pred] += f.count
        return out
