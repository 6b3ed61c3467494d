"""Live video metrics, updated frame by frame: STQ (AQ, SQ) and ID switches of one sequence.

For a monitor that sees ground truth and predictions as they come (the demo): each
:meth:`LiveVideoMetrics.update` measures one frame (one joint histogram of its ids) and updates
running sums, so its cost does not grow with the frames seen so far, only (slightly) with the
number of tracks. The values equal those of :func:`~panoptic_ros.evaluation.stq.stq_sequence`
and :func:`~panoptic_ros.evaluation.mot.mot_sequence` on the frames seen so far.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from panoptic_ros.data.id_runs import IdRuns
from panoptic_ros.evaluation.mot import MATCH_IOU
from panoptic_ros.evaluation.sequence import Categories, Frame, FramePairs, SequenceCounts
from panoptic_ros.evaluation.stq import STQStat, stq_from_total


@dataclass(frozen=True)
class LiveSnapshot:
    """The metrics after a frame (fractions; ``id_switches`` and ``*_tracks`` are counts)."""

    frames: int
    stq: float
    aq: float
    sq: float
    id_switches: int
    gt_tracks: int

    @property
    def id_switches_per_100_tracks(self) -> float:
        """ID switches per 100 ground-truth thing tracks (0 without tracks)."""
        return 100.0 * self.id_switches / self.gt_tracks if self.gt_tracks else 0.0


class LiveVideoMetrics:
    """Running STQ and ID switches of one sequence, fed one frame at a time.

    Args:
        categories: the scored categories (thing or stuff).

    Call :meth:`reset` when a new sequence starts (a replay loop, another camera).
    """

    def __init__(self, categories: Categories) -> None:
        self._categories = categories
        self.reset()

    def reset(self) -> None:
        """Forget every frame seen."""
        self._counts = SequenceCounts(self._categories)
        self._total = np.zeros((1, 1), np.int64)  # pixels per (gt track, pred track), all frames
        self._last_match: dict[int, int] = {}  # gt track -> pred track at its last match
        self._switches = 0
        self._frames = 0

    def update(
        self,
        gt_ids: np.ndarray | IdRuns,
        gt_segments: Sequence[Mapping],
        pred_ids: np.ndarray | IdRuns,
        pred_segments: Sequence[Mapping],
    ) -> LiveSnapshot:
        """Add the next frame and return the metrics so far.

        Args:
            gt_ids, pred_ids: ndarray[H, W] integer segment ids (0 = VOID) whose thing ids
                persist across frames (e.g. label images ``category * 1000 + track``).
            gt_segments, pred_segments: their ``segments_info`` (``id``, ``category_id``,
                ``iscrowd``); :meth:`Frame.from_label_image` makes them from a label image.

        Raises:
            PQError: sizes differ, an id is not listed, or a category is unknown.
        """
        pairs = self._counts.add(Frame(gt_ids, gt_segments), Frame(pred_ids, pred_segments))
        self._counts.frames.clear()  # the running sums below are all that is kept
        ng, npred = len(self._counts.gt), len(self._counts.pred)
        if self._total.shape != (ng, npred):  # new tracks appeared
            grown = np.zeros((ng, npred), np.int64)
            grown[: self._total.shape[0], : self._total.shape[1]] = self._total
            self._total = grown
        self._total[pairs.gt, pairs.pred] += pairs.count
        self._count_switches(pairs)
        stq = self.stq_stat().results()
        self._frames += 1
        return LiveSnapshot(frames=self._frames, stq=stq["stq"], aq=stq["aq"], sq=stq["sq"],
                            id_switches=self._switches, gt_tracks=stq["tracks"])

    def stq_stat(self) -> STQStat:
        """STQ counts of the frames so far: mergeable, to pool sequences (``pooled += ...``)."""
        return stq_from_total(self._counts, self._total)

    def _count_switches(self, pairs: FramePairs) -> None:
        """Match this frame's thing masks (IoU > 0.5, same category) and count ID switches."""
        g_cat, g_crowd, g_thing = self._counts.gt.arrays()
        p_cat, _, p_thing = self._counts.pred.arrays()
        g_area = np.bincount(pairs.gt, weights=pairs.count, minlength=len(g_cat))
        p_area = np.bincount(pairs.pred, weights=pairs.count, minlength=len(p_cat))
        g, p, inter = pairs.gt, pairs.pred, pairs.count
        ok = g_thing[g] & ~g_crowd[g] & p_thing[p] & (g_cat[g] == p_cat[p])
        iou = inter / (g_area[g] + p_area[p] - inter)
        for gi, pi in zip(g[ok & (iou > MATCH_IOU)].tolist(), p[ok & (iou > MATCH_IOU)].tolist()):
            last = self._last_match.get(gi)
            if last is not None and last != pi:
                self._switches += 1
            self._last_match[gi] = pi
