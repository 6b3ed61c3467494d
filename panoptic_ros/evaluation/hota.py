"""HOTA, Higher Order Tracking Accuracy (Luiten et al., IJCV 2021), on thing masks.

Detections and their similarity ``S`` (mask IoU, 0 across categories) are those of
:mod:`panoptic_ros.evaluation.mot`. For each localisation threshold ``alpha`` in
:data:`ALPHAS` (0.05, 0.10, ..., 0.95):

* per frame, ground-truth and predicted detections are paired one to one (Hungarian) to maximise
  ``sum A_max(g, p) * S(g, p)``, where ``A_max`` is the *potential* association of the two
  tracks: ``A_max = P / (|g| + |p| - P)``, ``|.|`` their detection counts and ``P`` the sum over
  frames of ``S / (sum_p' S(g, p') + sum_g' S(g', p) - S)`` (a soft count of frames where they
  would match). One pairing per frame serves every ``alpha``; a pair is a true positive at
  ``alpha`` when ``S >= alpha``;
* ``DetA = TP / (TP + FN + FP)``;
* ``AssA = 1/TP * sum_{TPs c} A(c)``, ``A(c) = TPA / (TPA + FNA + FPA)`` of the two tracks of
  ``c``: ``TPA`` the true positives between them, ``FNA = |g| - TPA``, ``FPA = |p| - TPA``;
  summed per track pair as ``TPA * A``;
* ``HOTA_alpha = sqrt(DetA * AssA)``; ``HOTA`` (and the reported ``DetA``, ``AssA``, ``LocA``)
  is the mean over ``alpha``. ``LocA`` is the mean ``S`` of the true positives.

Over several sequences TP, FN, FP and the ``TPA * A`` sums add up (AssA weighted by TP).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from panoptic_ros.evaluation.mot import FrameIoU, frame_ious
from panoptic_ros.evaluation.sequence import SequenceCounts

ALPHAS = np.arange(1, 20) / 20
"""Localisation thresholds 0.05 .. 0.95 (each the nearest double to k/20)."""


def _zeros() -> np.ndarray:
    return np.zeros(len(ALPHAS))


@dataclass
class HOTAStat:
    """Mergeable HOTA counts per ``alpha`` (``stat += other``), ndarray[19] float64 each.

    Attributes:
        tp, fn, fp: detection true positives, false negatives, false positives.
        ass: ``sum over true positives of A``, the association score of their tracks.
        loc: ``sum over true positives of S``.
    """

    tp: np.ndarray = field(default_factory=_zeros)
    fn: np.ndarray = field(default_factory=_zeros)
    fp: np.ndarray = field(default_factory=_zeros)
    ass: np.ndarray = field(default_factory=_zeros)
    loc: np.ndarray = field(default_factory=_zeros)

    def __iadd__(self, other: HOTAStat) -> HOTAStat:
        for name in ("tp", "fn", "fp", "ass", "loc"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def per_alpha(self) -> dict[str, np.ndarray]:
        """``HOTA, DetA, AssA, LocA`` per alpha, ndarray[19] each (0 where undefined)."""
        det = np.divide(self.tp, self.tp + self.fn + self.fp,
                        out=_zeros(), where=self.tp + self.fn + self.fp > 0)
        ass = np.divide(self.ass, self.tp, out=_zeros(), where=self.tp > 0)
        loc = np.divide(self.loc, self.tp, out=_zeros(), where=self.tp > 0)
        return {"hota": np.sqrt(det * ass), "deta": det, "assa": ass, "loca": loc}

    def results(self) -> dict:
        """``{"hota", "deta", "assa", "loca"}``: means over alpha (fractions)."""
        return {k: float(v.mean()) for k, v in self.per_alpha().items()}


def hota_sequence(counts: SequenceCounts, ious: list[FrameIoU] | None = None) -> HOTAStat:
    """HOTA counts of one sequence.

    Args:
        counts: the sequence's pixel counts.
        ious: :func:`~panoptic_ros.evaluation.mot.frame_ious` of ``counts`` if already computed.
    """
    from scipy.optimize import linear_sum_assignment

    ious = frame_ious(counts) if ious is None else ious
    ng, npred = len(counts.gt), len(counts.pred)
    g_dets = np.zeros(ng)
    p_dets = np.zeros(npred)
    soft = np.zeros((ng, npred))  # P: soft count of frames in which the two tracks match
    for fr in ious:
        g_dets[fr.gt] += 1
        p_dets[fr.pred] += 1
        s = fr.iou
        denom = s.sum(axis=0)[None, :] + s.sum(axis=1)[:, None] - s
        soft[np.ix_(fr.gt, fr.pred)] += np.divide(s, denom, out=np.zeros_like(s),
                                                  where=denom > 0)
    union = g_dets[:, None] + p_dets[None, :] - soft
    potential = np.divide(soft, union, out=np.zeros_like(soft), where=union > 0)  # A_max

    # One pairing per frame; keep every pair with its similarity.
    g_all, p_all, s_all = [], [], []
    for fr in ious:
        if len(fr.gt) == 0 or len(fr.pred) == 0:
            continue
        score = potential[np.ix_(fr.gt, fr.pred)] * fr.iou
        rows, cols = linear_sum_assignment(score, maximize=True)
        g_all.append(fr.gt[rows])
        p_all.append(fr.pred[cols])
        s_all.append(fr.iou[rows, cols])
    g_pair = np.concatenate(g_all + [np.zeros(0, np.int64)])
    p_pair = np.concatenate(p_all + [np.zeros(0, np.int64)])
    s_pair = np.concatenate(s_all + [np.zeros(0)])

    stat = HOTAStat()
    n_gt, n_pred = g_dets.sum(), p_dets.sum()
    for a, alpha in enumerate(ALPHAS):
        hit = s_pair >= alpha
        tp = np.count_nonzero(hit)
        stat.tp[a], stat.fn[a], stat.fp[a] = tp, n_gt - tp, n_pred - tp
        stat.loc[a] = s_pair[hit].sum()
        # TPA per track pair, then sum of TPA * A over the pairs.
        key = g_pair[hit] * npred + p_pair[hit]
        pair, tpa = np.unique(key, return_counts=True)
        g, p = pair // npred, pair % npred
        stat.ass[a] = float(np.sum(tpa * tpa / (g_dets[g] + p_dets[p] - tpa)))
    return stat
