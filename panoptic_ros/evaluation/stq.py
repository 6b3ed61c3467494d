"""STQ, Segmentation and Tracking Quality (Weber et al., "STEP", NeurIPS 2021), mergeable.

``STQ = sqrt(AQ * SQ)`` with

* ``SQ``, segmentation quality: the mean over classes of the class IoU, every pixel of every frame
  counted together (a semantic confusion matrix summed over the data set). A class counts in the
  mean when it has a pixel on either side. Ground-truth VOID pixels are ignored; predicted VOID
  on a labelled pixel is a miss of that pixel's class.
* ``AQ``, association quality, over ground-truth thing tracks ``g`` (crowd excluded) and predicted
  thing tracks ``p`` (category and instance, class-agnostic association):
  ``AQ = 1/|G| * sum_g 1/|g| * sum_{p: TPA(p,g) > 0} TPA(p,g) * IoU_id(p,g)``,
  ``IoU_id = TPA / (TPA + FPA + FNA)``, with ``TPA`` the pixels ``p`` and ``g`` share over the
  sequence, ``FPA = |p| - TPA``, ``FNA = |g| - TPA`` and ``|.|`` pixel counts over the sequence.
  Ground-truth VOID and crowd pixels count in no track (neither in ``|p|`` nor in ``|g|``).
  No threshold: every overlap counts, weighted by its IoU. Over several sequences the inner sums
  add up and ``|G|`` counts the tracks of all sequences.

STEP's reference code counts predicted thing pixels on ground-truth VOID in ``|p|``; here they
are ignored, as everywhere else in panoptic evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from panoptic_ros.evaluation.sequence import SequenceCounts


@dataclass
class STQStat:
    """Mergeable STQ counts (``stat += other``).

    Attributes:
        confusion: ground-truth category id -> predicted category id (0 = VOID) -> pixels.
        aq_sum: ``sum_g 1/|g| sum_p TPA * IoU_id`` over the ground-truth tracks so far.
        tracks: ``|G|``, the ground-truth thing tracks so far.
    """

    confusion: dict[int, dict[int, int]] = field(default_factory=dict)
    aq_sum: float = 0.0
    tracks: int = 0

    def __iadd__(self, other: STQStat) -> STQStat:
        for g, row in other.confusion.items():
            mine = self.confusion.setdefault(g, {})
            for p, n in row.items():
                mine[p] = mine.get(p, 0) + n
        self.aq_sum += other.aq_sum
        self.tracks += other.tracks
        return self

    def class_iou(self) -> dict[int, float]:
        """Category id -> IoU over all pixels, for the classes with a pixel on either side."""
        cats = sorted({c for c in self.confusion} | {p for row in self.confusion.values()
                                                   for p in row} - {0})
        inter = {c: self.confusion.get(c, {}).get(c, 0) for c in cats}
        gt_area = {c: sum(self.confusion.get(c, {}).values()) for c in cats}
        pred_area = dict.fromkeys(cats, 0)
        for row in self.confusion.values():
            for p, n in row.items():
                if p:
                    pred_area[p] += n
        out = {}
        for c in cats:
            union = gt_area[c] + pred_area[c] - inter[c]
            if union > 0:
                out[c] = inter[c] / union
        return out

    def results(self) -> dict:
        """``{"stq", "aq", "sq", "tracks", "per_class_iou"}``, fractions.

        AQ is 0 without ground-truth tracks, SQ 0 without labelled pixels.
        """
        ious = self.class_iou()
        sq = float(np.mean(list(ious.values()))) if ious else 0.0
        aq = self.aq_sum / self.tracks if self.tracks else 0.0
        return {"stq": float(np.sqrt(aq * sq)), "aq": aq, "sq": sq, "tracks": self.tracks,
                "per_class_iou": ious}


def stq_sequence(counts: SequenceCounts) -> STQStat:
    """STQ counts of one sequence from its per-frame pixel counts."""
    return stq_from_total(counts, counts.total())


def stq_from_total(counts: SequenceCounts, total: np.ndarray) -> STQStat:
    """STQ counts from the pixel counts summed over a sequence.

    Args:
        counts: gives the track tables (``total``'s rows and columns).
        total: ndarray[len(counts.gt), len(counts.pred)] pixels per track pair, all frames.
    """
    g_cat, g_crowd, g_thing = counts.gt.arrays()
    p_cat, _, p_thing = counts.pred.arrays()
    total = np.asarray(total)
    ng, npred = total.shape
    g_cat, g_crowd, g_thing = g_cat[:ng], g_crowd[:ng], g_thing[:ng]
    p_cat, p_thing = p_cat[:npred], p_thing[:npred]
    stat = STQStat()

    # SQ: the semantic confusion (rows: labelled ground truth; columns: predicted class or VOID).
    labelled = np.arange(ng) > 0
    g_values, g_index = np.unique(g_cat[labelled], return_inverse=True)
    p_values, p_index = np.unique(p_cat, return_inverse=True)
    confusion = np.zeros((len(g_values), len(p_values)), np.int64)
    np.add.at(confusion, (g_index[:, None], p_index[None, :]), total[labelled])
    for i, j in zip(*np.nonzero(confusion)):
        stat.confusion.setdefault(int(g_values[i]), {})[int(p_values[j])] = int(confusion[i, j])

    # AQ: thing tracks; ground-truth VOID and crowd pixels belong to no track.
    g_track = labelled & g_thing & ~g_crowd
    p_track = p_thing & (np.arange(npred) > 0)
    tpa = total[g_track][:, p_track].astype(np.float64)
    g_size = total[g_track].sum(axis=1).astype(np.float64)
    p_size = total[labelled & ~g_crowd][:, p_track].sum(axis=0).astype(np.float64)
    union = g_size[:, None] + p_size[None, :] - tpa  # TPA + FPA + FNA
    # tpa > 0 implies union > 0 and |g| > 0.
    weighted = np.divide(tpa * tpa, union, out=np.zeros_like(tpa), where=tpa > 0)
    per_track = np.divide(weighted.sum(axis=1), g_size, out=np.zeros_like(g_size),
                          where=g_size > 0)
    stat.aq_sum = float(per_track.sum())
    stat.tracks = int((g_size > 0).sum())
    return stat

