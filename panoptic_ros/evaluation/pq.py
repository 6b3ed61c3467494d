"""Panoptic Quality (PQ, SQ, RQ) with exactly panopticapi's rules, as a mergeable accumulator.

Rules (panopticapi ``pq_compute``, the standard):

* VOID is segment id 0 in the ground truth. Ground-truth areas come from the JSON ``area``;
  prediction areas from the PNG.
* A (ground truth, prediction) pair matches when both have the same category, the ground truth
  is not crowd and IoU > 0.5 (strict), with
  ``union = pred_area + gt_area - intersection - |pred ∩ VOID|``.
* Unmatched non-crowd ground truth is a false negative; crowd is never matched and never FN.
* An unmatched prediction is a false positive unless more than half of it lies on VOID or on
  the (last listed) crowd region of its own category.
* Per class ``PQ = ΣIoU / (TP + FP/2 + FN/2)``, ``SQ = ΣIoU / TP``, ``RQ = TP / (TP + FP/2 +
  FN/2)``; classes with ``TP + FP + FN = 0`` are left out of the averages.

:func:`pq_image` is the pure per-image function; :class:`PQStat` accumulates (``stat +=
pq_image(...)``); :meth:`PQStat.results` gives the dict shaped like panopticapi's
``pq_compute`` return value. File reading lives in :func:`pq_compute_files`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from panoptic_ros.categories import VOID, LabelSet
from panoptic_ros.data.id_runs import IdRuns, joint_histogram_runs, read_panoptic_runs
from panoptic_ros.errors import UserError
from panoptic_ros.result import PanopticResult


class PQError(ValueError):
    """The inputs break panopticapi's consistency rules (PNG and JSON disagree, ...)."""


@dataclass
class PQStatCat:
    """Counts of one category: summed IoU of matches, true/false positives, false negatives."""

    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: PQStatCat) -> PQStatCat:
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self


class PQStat:
    """Mergeable PQ accumulator: per-category :class:`PQStatCat`, summed over images."""

    def __init__(self) -> None:
        self.per_cat: dict[int, PQStatCat] = {}

    def __getitem__(self, category_id: int) -> PQStatCat:
        return self.per_cat.setdefault(int(category_id), PQStatCat())

    def __iadd__(self, other: PQStat) -> PQStat:
        for cat, stat in other.per_cat.items():
            mine = self[cat]
            mine += stat
        return self

    def __add__(self, other: PQStat) -> PQStat:
        out = PQStat()
        out += self
        out += other
        return out

    def pq_average(
        self, categories: Mapping[int, Mapping] | LabelSet, isthing: bool | None
    ) -> tuple[dict, dict]:
        """Average over the categories (all, things only or stuff only).

        Args:
            categories: category id -> dict with ``isthing``, or a :class:`LabelSet`.
            isthing: ``None`` for all categories, ``True`` things, ``False`` stuff.

        Returns:
            ``({"pq", "sq", "rq", "n"}, {category_id: {"pq", "sq", "rq"}})``; scores are
            fractions; a class with no segment on either side reports zeros and is not
            averaged (``n`` counts the averaged classes).
        """
        cats = category_things(categories)
        pq = sq = rq = 0.0
        n = 0
        per_class = {}
        for cat, cat_isthing in cats.items():
            if isthing is not None and isthing != cat_isthing:
                continue
            s = self.per_cat.get(cat, PQStatCat())
            if s.tp + s.fp + s.fn == 0:
                per_class[cat] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
            pq_c = s.iou / denom
            sq_c = s.iou / s.tp if s.tp else 0.0
            rq_c = s.tp / denom
            per_class[cat] = {"pq": pq_c, "sq": sq_c, "rq": rq_c}
            pq += pq_c
            sq += sq_c
            rq += rq_c
        if n == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class

    def results(self, categories: Mapping[int, Mapping] | LabelSet) -> dict:
        """The dict of panopticapi's ``pq_compute``: All/Things/Stuff and per_class."""
        out: dict = {}
        for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            out[name], per_class = self.pq_average(categories, isthing)
            if name == "All":
                out["per_class"] = per_class
        return out


def category_things(categories: Mapping[int, Mapping] | LabelSet) -> dict[int, bool]:
    """Category id -> is it a thing, from a COCO ``categories`` dict or a :class:`LabelSet`."""
    if isinstance(categories, LabelSet):
        return {c.id: c.is_thing for c in categories}
    return {int(k): v["isthing"] == 1 for k, v in categories.items()}


class _Segments(NamedTuple):
    """One side's ``segments_info`` as arrays, in listed order (later duplicate ids win)."""

    ids: np.ndarray  # [K] int64 segment ids
    cats: np.ndarray  # [K] int64 category ids
    crowd: np.ndarray  # [K] bool iscrowd
    area: np.ndarray  # [K] float64 JSON area (-1: none given)
    pos: np.ndarray  # [K] int64 position in the PNG's sorted distinct ids (-1: not in it)


def _segment_arrays(
    segments: Sequence[Mapping], values: np.ndarray, what: str, image_id
) -> _Segments:
    """ids, categories, iscrowd, json area and position in ``values`` (-1: not in PNG)."""
    # Later duplicates of an id replace earlier ones, as a dict built from the list would.
    by_id = {}
    for s in segments:
        try:
            by_id[int(s["id"])] = s
        except (KeyError, TypeError, ValueError):
            raise PQError(f"image {image_id}: a {what} segment has no integer 'id'") from None
    ids = np.fromiter(by_id, dtype=np.int64, count=len(by_id))
    try:
        cats = np.array([int(s["category_id"]) for s in by_id.values()], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        raise PQError(f"image {image_id}: a {what} segment has no 'category_id'") from None
    crowd = np.array([int(s.get("iscrowd", 0)) == 1 for s in by_id.values()], dtype=bool)
    area = np.array([float(s.get("area", -1)) for s in by_id.values()], dtype=np.float64)
    pos = np.searchsorted(values, ids)
    pos = np.clip(pos, 0, max(len(values) - 1, 0))
    found = (len(values) > 0) & (values[pos] == ids) if len(values) else np.zeros(len(ids), bool)
    pos = np.where(found, pos, -1)
    return _Segments(ids, cats, crowd, area, pos)


def joint_histogram(
    gt_ids: np.ndarray | IdRuns, pred_ids: np.ndarray | IdRuns
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of every (ground truth id, predicted id) pair of two same-size maps.

    Args:
        gt_ids, pred_ids: ndarray[H, W] non-negative integer segment ids, or their
            :class:`~panoptic_ros.data.id_runs.IdRuns`.

    Returns:
        ``gt_values`` ndarray[Kg] and ``pred_values`` ndarray[Kp], the sorted distinct ids, and
        ``counts`` ndarray[Kg, Kp] int64 of pixels per pair.
    """
    if not isinstance(gt_ids, IdRuns) and gt_ids.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros((0, 0), np.int64)
    # Panoptic maps are piecewise constant: counting over runs of equal ids along the rows is
    # several times faster than one key per pixel and a sort.
    gt_runs, pred_runs = (
        m if isinstance(m, IdRuns) else IdRuns.from_dense(m) for m in (gt_ids, pred_ids)
    )
    return joint_histogram_runs(gt_runs, pred_runs)


def pq_image(
    gt_ids: np.ndarray | IdRuns,
    gt_segments: Sequence[Mapping],
    pred_ids: np.ndarray | IdRuns,
    pred_segments: Sequence[Mapping],
    categories: Iterable[int] | None = None,
    image_id: object = None,
) -> PQStat:
    """PQ counts of one image, vectorised (one joint histogram, no per-pixel Python).

    Validate, then match, then count false negatives and false positives (the module
    docstring's rules, one step each).

    Args:
        gt_ids: ndarray[H, W] integer ground-truth segment ids (0 = VOID), or their
            :class:`~panoptic_ros.data.id_runs.IdRuns`.
        gt_segments: ground truth ``segments_info`` (``id``, ``category_id``, ``iscrowd``,
            ``area``; the JSON area is used, as in panopticapi).
        pred_ids: ndarray[H, W] integer predicted segment ids (0 = void / unassigned), or
            their :class:`~panoptic_ros.data.id_runs.IdRuns`.
        pred_segments: prediction ``segments_info`` (``id``, ``category_id``).
        categories: known category ids; a predicted segment of another category raises.
        image_id: used in error messages only.

    Raises:
        PQError: sizes differ, a PNG id is missing from the JSON or the other way round, an
            unknown predicted category, or a ground-truth segment without ``area``.
    """
    gt_ids, pred_ids = _same_size(gt_ids, pred_ids, image_id)
    gvals, pvals, joint = joint_histogram(gt_ids, pred_ids)
    pred = _segment_arrays(pred_segments, pvals, "predicted", image_id)
    gt = _segment_arrays(gt_segments, gvals, "ground-truth", image_id)
    _check_segments(gt, pred, pvals, categories, image_id)
    return _score(gt, pred, _Overlap.measure(joint, gvals, gt, pred))


def pq_counts(
    inter: np.ndarray,
    gt_cats: np.ndarray,
    gt_crowd: np.ndarray,
    gt_area: np.ndarray,
    pred_cats: np.ndarray,
    pred_area: np.ndarray,
    pred_void: np.ndarray,
) -> PQStat:
    """PQ counts from pixel counts between segments already measured (the matching rules only).

    The same rules as :func:`pq_image` for any kind of segment, e.g. the tubes of a video
    window (:mod:`panoptic_ros.evaluation.vpq`).

    Args:
        inter: ndarray[Kg, Kp] pixels shared by each ground-truth and predicted segment.
        gt_cats, gt_crowd, gt_area: ndarray[Kg] category ids, iscrowd flags and areas.
        pred_cats, pred_area: ndarray[Kp] category ids and areas.
        pred_void: ndarray[Kp] predicted pixels on ground-truth VOID.
    """
    kg, kp = len(gt_cats), len(pred_cats)
    gt = _Segments(np.arange(kg), np.asarray(gt_cats, np.int64), np.asarray(gt_crowd, bool),
                   np.asarray(gt_area, np.float64), np.arange(kg))
    pred = _Segments(np.arange(kp), np.asarray(pred_cats, np.int64), np.zeros(kp, bool),
                     np.asarray(pred_area, np.float64), np.arange(kp))
    overlap = _Overlap(np.asarray(inter, np.float64), pred.area, np.asarray(pred_void, np.float64))
    return _score(gt, pred, overlap)


def _score(gt: _Segments, pred: _Segments, overlap: _Overlap) -> PQStat:
    """Match, then count false negatives and false positives (the module docstring's rules)."""
    stat = PQStat()
    matched = _true_positives(stat, gt, pred, overlap)
    crowd_of_cat = _false_negatives(stat, gt, matched.any(axis=1))
    _false_positives(stat, pred, overlap, matched.any(axis=0), crowd_of_cat)
    return stat


def _same_size(gt_ids: np.ndarray | IdRuns, pred_ids: np.ndarray | IdRuns, image_id
               ) -> tuple[np.ndarray | IdRuns, np.ndarray | IdRuns]:
    """Both maps as arrays (or runs); :class:`PQError` when their sizes differ."""
    if not isinstance(gt_ids, IdRuns):
        gt_ids = np.asarray(gt_ids)
    if not isinstance(pred_ids, IdRuns):
        pred_ids = np.asarray(pred_ids)
    if tuple(gt_ids.shape) != tuple(pred_ids.shape):
        raise PQError(
            f"image {image_id}: ground truth is {tuple(gt_ids.shape)} but prediction is "
            f"{tuple(pred_ids.shape)}"
        )
    return gt_ids, pred_ids


def _check_segments(gt: _Segments, pred: _Segments, pvals: np.ndarray,
                    categories: Iterable[int] | None, image_id) -> None:
    """Raise unless the prediction passes panopticapi's checks and ground-truth areas exist."""
    listed = set(pred.ids.tolist())
    extra = [int(v) for v in pvals if v != VOID and int(v) not in listed]
    if extra:
        raise PQError(
            f"In the image with ID {image_id} segment with ID {extra[0]} is presented in PNG "
            "and not presented in JSON."
        )
    if categories is not None:
        known = set(int(c) for c in categories)
        unknown = [(int(i), int(c)) for i, c in zip(pred.ids, pred.cats) if int(c) not in known]
        if unknown:
            raise PQError(
                f"In the image with ID {image_id} segment with ID {unknown[0][0]} has unknown "
                f"category_id {unknown[0][1]}."
            )
    missing = pred.ids[pred.pos < 0].tolist()
    if missing:
        raise PQError(
            f"In the image with ID {image_id} the following segment IDs {missing} are "
            "presented in JSON and not presented in PNG."
        )
    if np.any(gt.area < 0):
        raise PQError(f"image {image_id}: a ground-truth segment has no 'area'")


class _Overlap(NamedTuple):
    """Pixel counts between the listed segments of one image (float64)."""

    inter: np.ndarray  # [Kg, Kp] intersections; a segment absent from its PNG meets nothing
    p_area: np.ndarray  # [Kp] predicted areas from the PNG
    p_void: np.ndarray  # [Kp] predicted pixels on ground-truth VOID

    @classmethod
    def measure(cls, joint: np.ndarray, gvals: np.ndarray, gt: _Segments,
                pred: _Segments) -> _Overlap:
        """From the joint histogram (rows ``gvals``, columns the PNG's predicted ids)."""
        p_area = joint.sum(axis=0)[pred.pos].astype(np.float64)
        g_rows = np.where(gt.pos >= 0, gt.pos, 0)
        inter = joint[g_rows][:, pred.pos].astype(np.float64)
        inter[gt.pos < 0] = 0.0
        kg = len(gvals)
        void_pos = np.searchsorted(gvals, VOID)
        has_void = kg > 0 and void_pos < kg and gvals[void_pos] == VOID
        p_void = (joint[void_pos, pred.pos].astype(np.float64) if has_void
                  else np.zeros(len(pred.ids)))
        return cls(inter, p_area, p_void)


def _true_positives(stat: PQStat, gt: _Segments, pred: _Segments,
                    overlap: _Overlap) -> np.ndarray:
    """Count matches (same category, non-crowd ground truth, IoU > 0.5) into ``stat``.

    Returns:
        ndarray[Kg, Kp] bool, the matched pairs (at most one per row and column).
    """
    inter = overlap.inter
    candidate = (inter > 0) & (gt.cats[:, None] == pred.cats[None, :]) & ~gt.crowd[:, None]
    union = overlap.p_area[None, :] + gt.area[:, None] - inter - overlap.p_void[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(candidate, inter / np.where(union > 0, union, 1.0), 0.0)
    matched = candidate & (iou > 0.5)
    gi, pi = np.nonzero(matched)
    for k in range(len(gi)):
        s = stat[gt.cats[gi[k]]]
        s.tp += 1
        s.iou += float(iou[gi[k], pi[k]])
    return matched


def _false_negatives(stat: PQStat, gt: _Segments, g_matched: np.ndarray) -> dict[int, int]:
    """Count unmatched non-crowd ground truth into ``stat``.

    Returns:
        category id -> row of its last listed crowd region (for the false-positive rule).
    """
    crowd_of_cat: dict[int, int] = {}
    for k in range(len(gt.ids)):
        if g_matched[k]:
            continue
        if gt.crowd[k]:
            crowd_of_cat[int(gt.cats[k])] = k
            continue
        stat[gt.cats[k]].fn += 1
    return crowd_of_cat


def _false_positives(stat: PQStat, pred: _Segments, overlap: _Overlap, p_matched: np.ndarray,
                     crowd_of_cat: Mapping[int, int]) -> None:
    """Count unmatched predictions into ``stat``, unless mostly on VOID or own-category crowd."""
    for k in range(len(pred.ids)):
        if p_matched[k]:
            continue
        ignored = overlap.p_void[k]
        crowd_k = crowd_of_cat.get(int(pred.cats[k]))
        if crowd_k is not None:
            ignored += overlap.inter[crowd_k, k]
        if ignored / overlap.p_area[k] > 0.5:
            continue
        stat[pred.cats[k]].fp += 1


def pq_results(gt: PanopticResult, pred: PanopticResult) -> PQStat:
    """PQ counts of one image from two in-memory :class:`PanopticResult` objects.

    Ground-truth areas are measured from its id map; crowd comes from ``Segment.iscrowd``.
    """
    def info(r: PanopticResult) -> list[dict]:
        return [
            {"id": s.id, "category_id": s.category_id, "iscrowd": int(s.iscrowd), "area": s.area}
            for s in r.segments
        ]

    return pq_image(gt.ids, info(gt), pred.ids, info(pred))


def _read_pair(args) -> PQStat:
    gt_ann, pred_ann, gt_dir, pred_dir, cats = args
    image_id = gt_ann["image_id"]
    gt = read_panoptic_runs(Path(gt_dir) / gt_ann["file_name"])
    pred = read_panoptic_runs(Path(pred_dir) / pred_ann["file_name"])
    return pq_image(gt, gt_ann["segments_info"], pred, pred_ann["segments_info"], cats, image_id)


def pq_compute_files(
    gt_json: str | Path,
    gt_dir: str | Path | None,
    pred_json: str | Path,
    pred_dir: str | Path | None,
    workers: int = 1,
    by_file_name: bool = False,
) -> dict:
    """Evaluate a COCO panoptic prediction set against ground truth, like panopticapi.

    Args:
        gt_json, pred_json: COCO panoptic JSON files; the ground truth's ``categories`` are
            the ones scored.
        gt_dir, pred_dir: PNG folders; ``None`` means the JSON path without ``.json``.
        workers: threads reading and scoring images (PNG decoding releases the GIL).
        by_file_name: pair annotations by their PNG ``file_name`` instead of ``image_id`` (video
            data sets, whose predictions are written one video at a time).

    Returns:
        panopticapi's results dict: ``{"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"},
        "per_class": {category_id: {"pq", "sq", "rq"}}}``, scores as fractions.

    Raises:
        UserError: a missing or malformed file, an image without a prediction, or a rule of
            :func:`pq_image` broken.
    """
    from panoptic_ros.data.coco_panoptic import load_json

    gt = load_json(gt_json, "ground-truth JSON")
    pred = load_json(pred_json, "prediction JSON")
    gt_dir = Path(gt_dir) if gt_dir is not None else Path(str(gt_json)).with_suffix("")
    pred_dir = Path(pred_dir) if pred_dir is not None else Path(str(pred_json)).with_suffix("")
    for folder, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise UserError(f"{what} PNG folder not found: {folder}")
    try:
        categories = {int(c["id"]): c for c in gt["categories"]}
        gt_anns = list(gt["annotations"])
        key = "file_name" if by_file_name else "image_id"
        pred_anns = {a[key]: a for a in pred["annotations"]}
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"malformed COCO panoptic JSON (missing {err})") from None
    jobs = []
    for ann in gt_anns:
        if ann.get(key) not in pred_anns:
            what = "file name" if by_file_name else "id"
            raise UserError(f"no prediction for the image with {what}: {ann.get(key)}")
        jobs.append((ann, pred_anns[ann[key]], gt_dir, pred_dir, categories))
    stat = PQStat()
    try:
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                for s in pool.map(_read_pair, jobs):
                    stat += s
        else:
            for job in jobs:
                stat += _read_pair(job)
    except PQError as err:
        raise UserError(str(err)) from None
    except KeyError as err:
        raise UserError(f"malformed annotation (missing {err})") from None
    return stat.results(categories)


def format_results(results: Mapping) -> str:
    """The All/Things/Stuff table as panopticapi prints it (scores in percent)."""
    lines = [f"{'':10s}| {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s} {'N':>5s}", "-" * 38]
    for name in ("All", "Things", "Stuff"):
        r = results[name]
        lines.append(
            f"{name:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f} "
            f"{r['n']:5d}"
        )
    return "\n".join(lines)
