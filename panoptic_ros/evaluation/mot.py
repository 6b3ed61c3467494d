"""Multi-object tracking metrics of thing masks: CLEAR MOT (MOTA, ID switches) and IDF1.

Tracking metrics are defined on detections per frame; for panoptic masks (as in MOTS) a
detection is one thing segment, and the similarity of a ground-truth and a predicted segment is
their mask IoU when both have the same category (0 otherwise). Ground-truth crowd regions are
not objects. A ground-truth and a predicted segment *match* in a frame when their IoU exceeds
0.5; masks of one side do not overlap, so each segment has at most one match and no assignment
is needed.

* CLEAR MOT (Bernardin & Stiefelhagen 2008): ``TP`` matches, ``FN`` unmatched ground truth,
  ``FP`` unmatched predictions; an *ID switch* is a ground-truth track matched to another
  predicted track than at its previous match (frames without a match in between do not reset
  it); ``MOTA = 1 - (FN + FP + IDSW) / GT`` with ``GT`` the ground-truth detections.
* IDF1 (Ristani et al. 2016): ground-truth and predicted tracks are paired one to one so that the
  number ``IDTP`` of frames in which paired tracks match is largest;
  ``IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN)`` with ``IDFN = GT - IDTP``, ``IDFP = PRED - IDTP``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

from panoptic_ros.evaluation.sequence import SequenceCounts

MATCH_IOU = 0.5
"""A ground-truth and a predicted mask match in a frame when their IoU exceeds this."""


class FrameIoU(NamedTuple):
    """The thing detections of one frame and their mask IoUs.

    Attributes:
        gt: ndarray[n] int64 ground-truth track indices present (crowd excluded).
        pred: ndarray[m] int64 predicted thing track indices present.
        iou: ndarray[n, m] float64 mask IoU, 0 between different categories.
    """

    gt: np.ndarray
    pred: np.ndarray
    iou: np.ndarray


def frame_ious(counts: SequenceCounts) -> list[FrameIoU]:
    """Per frame, the mask IoU of every ground-truth and predicted thing segment."""
    g_cat, g_crowd, g_thing = counts.gt.arrays()
    p_cat, _, p_thing = counts.pred.arrays()
    ng, npred = len(g_cat), len(p_cat)
    out = []
    for f in counts.frames:
        g_area = np.bincount(f.gt, weights=f.count, minlength=ng)
        p_area = np.bincount(f.pred, weights=f.count, minlength=npred)
        gt = np.flatnonzero((g_area > 0) & g_thing & ~g_crowd)
        pred = np.flatnonzero((p_area > 0) & p_thing)
        g_pos = np.full(ng, -1)
        g_pos[gt] = np.arange(len(gt))
        p_pos = np.full(npred, -1)
        p_pos[pred] = np.arange(len(pred))
        keep = (g_pos[f.gt] >= 0) & (p_pos[f.pred] >= 0) & (g_cat[f.gt] == p_cat[f.pred])
        g, p, inter = f.gt[keep], f.pred[keep], f.count[keep]
        iou = np.zeros((len(gt), len(pred)))
        iou[g_pos[g], p_pos[p]] = inter / (g_area[g] + p_area[p] - inter)
        out.append(FrameIoU(gt, pred, iou))
    return out


@dataclass
class MOTStat:
    """Mergeable CLEAR MOT and identity counts (``stat += other``).

    Attributes:
        gt_dets, pred_dets: ground-truth and predicted detections (segments over frames).
        tp: matches; switches: ID switches; idtp: identity true positives.
        gt_tracks, pred_tracks: tracks with at least one detection.
    """

    gt_dets: int = 0
    pred_dets: int = 0
    tp: int = 0
    switches: int = 0
    idtp: int = 0
    gt_tracks: int = 0
    pred_tracks: int = 0

    def __iadd__(self, other: MOTStat) -> MOTStat:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def results(self) -> dict:
        """``idf1, idp, idr, mota, id_switches, id_switches_per_100_tracks`` and the counts."""
        idfn = self.gt_dets - self.idtp
        idfp = self.pred_dets - self.idtp
        fn = self.gt_dets - self.tp
        fp = self.pred_dets - self.tp

        def ratio(num: float, den: float) -> float:
            return num / den if den else 0.0

        return {
            "idf1": ratio(2 * self.idtp, 2 * self.idtp + idfp + idfn),
            "idp": ratio(self.idtp, self.pred_dets),
            "idr": ratio(self.idtp, self.gt_dets),
            "mota": 1.0 - ratio(fn + fp + self.switches, self.gt_dets),
            "id_switches": self.switches,
            "id_switches_per_100_tracks": ratio(100.0 * self.switches, self.gt_tracks),
            "tp": self.tp, "fp": fp, "fn": fn, "idtp": self.idtp, "idfp": idfp, "idfn": idfn,
            "gt_dets": self.gt_dets, "pred_dets": self.pred_dets,
            "gt_tracks": self.gt_tracks, "pred_tracks": self.pred_tracks,
        }


def matches(ious: list[FrameIoU], threshold: float = MATCH_IOU) -> np.ndarray:
    """The matches of a sequence: ndarray[N, 2] int64 (gt track, pred track), in frame order."""
    parts = [np.zeros((0, 2), np.int64)]
    for fr in ious:
        gi, pi = np.nonzero(fr.iou > threshold)
        parts.append(np.stack([fr.gt[gi], fr.pred[pi]], axis=1))
    return np.concatenate(parts)


def count_switches(pairs: np.ndarray) -> int:
    """ID switches of the matches ``pairs`` (ndarray[N, 2], gt and pred track, frame order)."""
    order = np.argsort(pairs[:, 0], kind="stable")  # by track, keeping time order
    g, p = pairs[order, 0], pairs[order, 1]
    return int(np.count_nonzero((g[1:] == g[:-1]) & (p[1:] != p[:-1])))


def mot_sequence(counts: SequenceCounts, ious: list[FrameIoU] | None = None) -> MOTStat:
    """CLEAR MOT and identity counts of one sequence.

    Args:
        counts: the sequence's pixel counts.
        ious: :func:`frame_ious` of ``counts`` if already computed.
    """
    from scipy.optimize import linear_sum_assignment

    ious = frame_ious(counts) if ious is None else ious
    pairs = matches(ious)
    ng, npred = len(counts.gt), len(counts.pred)
    stat = MOTStat()
    stat.gt_dets = sum(len(fr.gt) for fr in ious)
    stat.pred_dets = sum(len(fr.pred) for fr in ious)
    stat.tp = len(pairs)
    stat.switches = count_switches(pairs)
    # IDTP: the one-to-one pairing of tracks with the most frames matched together.
    together = np.zeros((ng, npred), np.int64)
    np.add.at(together, (pairs[:, 0], pairs[:, 1]), 1)
    rows, cols = linear_sum_assignment(together, maximize=True)
    stat.idtp = int(together[rows, cols].sum())
    stat.gt_tracks = len(np.unique(np.concatenate([fr.gt for fr in ious] + [[]]).astype(int)))
    stat.pred_tracks = len(np.unique(np.concatenate([fr.pred for fr in ious] + [[]]).astype(int)))
    return stat
