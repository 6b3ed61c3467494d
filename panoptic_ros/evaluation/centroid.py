"""3D centroid error of matched things: predicted ``centroid_m`` vs ground-truth ``position_m``.

A ground-truth thing segment (not crowd) and a predicted segment *match* in a frame when they
have the same category and their mask IoU exceeds 0.5 (each segment has at most one match, as in
PQ). The error of a match is the Euclidean distance (metres, camera optical frame) between the
prediction's ``centroid_m`` (``position_m`` is read when a prediction file carries that instead,
e.g. ground truth scored against itself) and the ground truth's ``position_m``; matches where
either is missing are counted but have no error. :class:`CentroidStat` is mergeable
(``stat += frame_stat``); results give the median and the 90th percentile (numpy's linear
definition), over all matches and over those whose ground truth lies within ``max_range_m``.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from panoptic_ros.data.id_runs import IdRuns, read_panoptic_runs
from panoptic_ros.errors import UserError
from panoptic_ros.evaluation.pq import joint_histogram

MATCH_IOU = 0.5
"""A ground-truth and a predicted thing match when their IoU exceeds this."""
MAX_RANGE_M = 15.0
"""The issue's range limit for the headline figures (ground-truth distance, metres)."""


@dataclass
class CentroidStat:
    """Errors of matched things (mergeable).

    Attributes:
        errors: metres, one per match that has both positions.
        ranges: the ground truth's distance ``|position_m|`` of each error, metres.
        matched: matched things, with or without positions.
    """

    errors: list[float] = field(default_factory=list)
    ranges: list[float] = field(default_factory=list)
    matched: int = 0

    def __iadd__(self, other: CentroidStat) -> CentroidStat:
        self.errors += other.errors
        self.ranges += other.ranges
        self.matched += other.matched
        return self

    def results(self, max_range_m: float = MAX_RANGE_M) -> dict:
        """``{"matched", "with_3d", "median_m", "p90_m", "within": {...}}`` (NaN when empty)."""
        def summary(errors: np.ndarray) -> dict:
            if len(errors) == 0:
                return {"count": 0, "median_m": float("nan"), "p90_m": float("nan")}
            return {"count": len(errors), "median_m": float(np.median(errors)),
                    "p90_m": float(np.percentile(errors, 90))}

        errors, ranges = np.asarray(self.errors, float), np.asarray(self.ranges, float)
        return {"matched": self.matched, "all": summary(errors),
                "max_range_m": max_range_m, "within": summary(errors[ranges <= max_range_m])}


def centroid_frame(
    gt_ids: np.ndarray | IdRuns,
    gt_segments: Sequence[Mapping],
    pred_ids: np.ndarray | IdRuns,
    pred_segments: Sequence[Mapping],
    things: Container[int],
) -> CentroidStat:
    """The matches of one frame and their centroid errors.

    Args:
        gt_ids, pred_ids: ndarray[H, W] integer segment ids (0 = void) of the same size, or
            their :class:`IdRuns`.
        gt_segments: ``segments_info`` with ``id``, ``category_id``, ``iscrowd`` and, for things,
            ``position_m`` ``[x, y, z]``.
        pred_segments: ``segments_info`` with ``id``, ``category_id`` and ``centroid_m`` (or
            ``position_m``).
        things: the thing category ids.
    """
    gvals, pvals, joint = joint_histogram(gt_ids, pred_ids)
    g_area, p_area = joint.sum(axis=1), joint.sum(axis=0)
    g_pos = {int(v): i for i, v in enumerate(gvals.tolist())}
    p_pos = {int(v): i for i, v in enumerate(pvals.tolist())}
    preds = {int(s["id"]): s for s in pred_segments if int(s["id"]) in p_pos}
    stat = CentroidStat()
    for g in gt_segments:
        gi = g_pos.get(int(g["id"]))
        if gi is None or g.get("iscrowd", 0) or int(g["category_id"]) not in things:
            continue
        for pid, p in preds.items():
            if int(p["category_id"]) != int(g["category_id"]):
                continue
            pi = p_pos[pid]
            inter = joint[gi, pi]
            if inter and inter / (g_area[gi] + p_area[pi] - inter) > MATCH_IOU:
                stat.matched += 1
                truth = g.get("position_m")
                guess = p.get("centroid_m", p.get("position_m"))
                if truth is not None and guess is not None:
                    t = np.asarray(truth, float)
                    stat.errors.append(float(np.linalg.norm(np.asarray(guess, float) - t)))
                    stat.ranges.append(float(np.linalg.norm(t)))
                break
    return stat


def has_positions(gt: Mapping) -> bool:
    """Whether a COCO panoptic JSON dict's segments carry ``position_m`` (video ground truth)."""
    return any("position_m" in s for a in gt.get("annotations", [])
               for s in a.get("segments_info", []))


def centroid_compute_files(gt: Mapping, gt_dir: str | Path, pred: Mapping,
                           pred_dir: str | Path, workers: int = 1) -> CentroidStat:
    """Score a prediction set's ``centroid_m`` against ground-truth ``position_m``.

    Frames are paired by ``file_name`` (as the video metrics pair them); a ground-truth frame
    without prediction raises :class:`UserError`.
    """
    things = {int(c["id"]) for c in gt["categories"] if c.get("isthing")}
    by_name = {a.get("file_name"): a for a in pred["annotations"]}

    def frame(gt_ann: Mapping) -> CentroidStat:
        pred_ann = by_name.get(gt_ann.get("file_name"))
        if pred_ann is None:
            raise UserError(f"no prediction for the frame {gt_ann.get('file_name')!r}")
        return centroid_frame(read_panoptic_runs(Path(gt_dir) / gt_ann["file_name"]),
                              gt_ann["segments_info"],
                              read_panoptic_runs(Path(pred_dir) / pred_ann["file_name"]),
                              pred_ann["segments_info"], things)

    stat = CentroidStat()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for part in pool.map(frame, gt["annotations"]):
            stat += part
    return stat


def format_centroid_results(results: Mapping) -> str:
    """One line: matched things and the centroid error (all, and within the range limit)."""
    a, w = results["all"], results["within"]
    return (f"3D centroid error of {results['matched']} matched things ({a['count']} with 3D): "
            f"median {a['median_m']:.3f} m, p90 {a['p90_m']:.3f} m; within "
            f"{results['max_range_m']:g} m ({w['count']}): median {w['median_m']:.3f} m, "
            f"p90 {w['p90_m']:.3f} m")
