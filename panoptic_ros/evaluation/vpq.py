"""VPQ, Video Panoptic Quality (Kim et al., "Video Panoptic Segmentation", CVPR 2020).

For a window of ``k`` consecutive frames, a segment becomes the *tube* of its pixels over the
window (its track, :mod:`panoptic_ros.evaluation.sequence`), and PQ's rules apply to the tubes
unchanged (:func:`~panoptic_ros.evaluation.pq.pq_counts`: same category, IoU > 0.5 with
ground-truth VOID removed from the union, crowd never matched and exempting predictions, ...).
A tube whose identity breaks inside the window (an id switch) covers too little of the
ground-truth tube to match. As in the Cityscapes-VPS evaluation, the windows slide by one frame
(``t .. t+k-1`` for every ``t``), their TP/FP/FN and IoU sums add up over all windows of all
sequences, and ``VPQ^k`` is the class mean of PQ on those sums; a sequence shorter than ``k``
has no window. ``VPQ`` is the mean of ``VPQ^k`` over ``k`` in :data:`K_VALUES`.

Ground-truth areas are pixel counts (the JSON ``area`` of valid data), so ``VPQ^1`` equals image
PQ of the same frames.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from panoptic_ros.evaluation.pq import PQStat, pq_counts
from panoptic_ros.evaluation.sequence import Categories, SequenceCounts

K_VALUES = (1, 5, 10, 15)
"""Window lengths of Cityscapes-VPS."""


def vpq_sequence(counts: SequenceCounts, k: int) -> PQStat:
    """PQ counts of every window of ``k`` consecutive frames of one sequence, summed.

    The window's pixel counts slide with it: add the entering frame, subtract the leaving one.
    """
    if k < 1:
        raise ValueError(f"window length k must be at least 1, got {k}")
    g_cat, g_crowd, _ = counts.gt.arrays()
    p_cat, _, _ = counts.pred.arrays()
    window = np.zeros((len(g_cat), len(p_cat)), np.int64)
    stat = PQStat()
    for t, frame in enumerate(counts.frames):
        window[frame.gt, frame.pred] += frame.count
        if t >= k:
            old = counts.frames[t - k]
            window[old.gt, old.pred] -= old.count
        if t >= k - 1:
            stat += _window_pq(window, g_cat, g_crowd, p_cat)
    return stat


def _window_pq(window: np.ndarray, g_cat: np.ndarray, g_crowd: np.ndarray,
               p_cat: np.ndarray) -> PQStat:
    """PQ counts of the tubes present in a window (``window``: ndarray[Ng, Np] pixels)."""
    g_area = window.sum(axis=1)
    p_area = window.sum(axis=0)
    rows = g_area > 0
    cols = p_area > 0
    rows[0] = cols[0] = False  # VOID is not a segment
    return pq_counts(window[rows][:, cols], g_cat[rows], g_crowd[rows], g_area[rows],
                     p_cat[cols], p_area[cols], window[0, cols])


def vpq_results(stats: Mapping[int, PQStat], categories: Categories) -> dict:
    """VPQ per window length and their mean.

    Args:
        stats: ``k`` -> PQ counts summed over all windows of that length (all sequences).
        categories: the scored categories (for All / Things / Stuff).

    Returns:
        ``{"k": {k: pq_compute-like dict}, "All"|"Things"|"Stuff": {"vpq", "k"}}`` with
        ``vpq`` the mean of ``VPQ^k`` over the window lengths that had a scored class (listed
        in ``k``); fractions.
    """
    per_k = {int(k): stat.results(categories) for k, stat in sorted(stats.items())}
    out: dict = {"k": per_k}
    for name in ("All", "Things", "Stuff"):
        ks = [k for k, r in per_k.items() if r[name]["n"] > 0]
        vpq = float(np.mean([per_k[k][name]["pq"] for k in ks])) if ks else 0.0
        out[name] = {"vpq": vpq, "k": ks}
    return out
