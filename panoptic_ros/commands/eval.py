"""``panoptic-ros eval``: PQ / SQ / RQ of COCO panoptic predictions against ground truth.

Video ground truth (every ``images[]`` entry has ``video_id`` and ``frame_index``, PNGs named
``<video>/<frame:06d>.png``, thing ids persistent across a video's frames) adds the video
metrics: STQ (AQ, SQ), VPQ (k = 1, 5, 10, 15 and their mean), IDF1, ID switches, MOTA and HOTA
(:mod:`panoptic_ros.evaluation.video`). Ground truth whose thing segments carry ``position_m``
(``synth --sequences``) scored against predictions with ``centroid_m`` (``infer --depth``) adds
the 3D centroid error of matched things (:mod:`panoptic_ros.evaluation.centroid`; results under
"centroid"). Prediction frames are then paired with ground-truth
frames by ``file_name``, and predicted thing segment ids that persist across frames are tracks.

PNG folders follow the COCO panoptic convention (panopticapi's): a JSON's PNGs lie in the folder
named after it without ``.json`` (``out/predictions.json`` -> ``out/predictions/``, as
``panoptic-ros infer`` writes them); ``--gt-dir`` / ``--pred-dir`` name another folder.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from panoptic_ros.data.coco_panoptic import load_json
from panoptic_ros.errors import UserError
from panoptic_ros.evaluation.centroid import (
    centroid_compute_files,
    format_centroid_results,
    has_positions,
)
from panoptic_ros.evaluation.pq import format_results, pq_compute_files
from panoptic_ros.evaluation.video import format_video_results, is_video, video_compute_files

HELP = ("evaluate COCO panoptic predictions (PQ/SQ/RQ, panopticapi rules; on video ground "
        "truth also STQ, VPQ, IDF1, ID switches, HOTA)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``eval``."""
    parser.add_argument("--gt-json", required=True, type=Path, help="ground-truth JSON")
    parser.add_argument("--gt-dir", type=Path, help="ground-truth PNG folder "
                        "(default: the --gt-json path without .json)")
    parser.add_argument("--pred-json", required=True, type=Path, help="prediction JSON")
    parser.add_argument("--pred-dir", type=Path, help="prediction PNG folder "
                        "(default: the --pred-json path without .json, where infer writes "
                        "them)")
    parser.add_argument("--out", type=Path, help="write the results dict here as JSON")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="threads reading and scoring images (default: the CPU count, "
                        "at most 8)")


def png_dir(json_path: Path, given: Path | None, what: str, flag: str) -> Path:
    """The PNG folder of a JSON: ``given``, else the JSON path without ``.json``.

    Raises:
        UserError: the folder is missing, naming it and how it was chosen.
    """
    folder = given if given is not None else json_path.with_suffix("")
    how = (f"given by {flag}" if given is not None
           else f"the {flag.replace('-dir', '-json')} path without .json, as COCO panoptic "
                f"names it; give {flag} if the PNGs are elsewhere")
    if not folder.is_dir():
        raise UserError(f"{what} PNG folder not found: {folder} ({how})")
    return folder


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the tables, optionally write the JSON (video metrics under "video")."""
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    start = time.perf_counter()
    for path, what in ((args.gt_json, "ground-truth JSON"), (args.pred_json, "prediction JSON")):
        if not path.is_file():
            raise UserError(f"{what} not found: {path}")
    gt_dir = png_dir(args.gt_json, args.gt_dir, "ground-truth", "--gt-dir")
    pred_dir = png_dir(args.pred_json, args.pred_dir, "prediction", "--pred-dir")
    gt = load_json(args.gt_json, "ground-truth JSON")
    video = is_video(gt)
    results = pq_compute_files(args.gt_json, gt_dir, args.pred_json, pred_dir,
                               workers=args.workers, by_file_name=video)
    print(format_results(results))
    if video:
        results["video"] = video_compute_files(args.gt_json, gt_dir, args.pred_json, pred_dir,
                                               workers=args.workers)
        print(format_video_results(results["video"]))
    pred = load_json(args.pred_json, "prediction JSON")
    if has_positions(gt) and any("centroid_m" in s or "position_m" in s
                                 for a in pred.get("annotations", [])
                                 for s in a.get("segments_info", [])):
        results["centroid"] = centroid_compute_files(
            gt, gt_dir, pred, pred_dir, workers=args.workers).results()
        print(format_centroid_results(results["centroid"]))
    print(f"Time elapsed: {time.perf_counter() - start:0.2f} seconds")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0
