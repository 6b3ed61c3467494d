"""``panoptic-ros eval``: PQ / SQ / RQ of COCO panoptic predictions against ground truth."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from panoptic_ros.errors import UserError
from panoptic_ros.evaluation.pq import format_results, pq_compute_files

HELP = "evaluate COCO panoptic predictions (PQ/SQ/RQ, panopticapi rules)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``eval``."""
    parser.add_argument("--gt-json", required=True, type=Path, help="ground-truth JSON")
    parser.add_argument("--gt-dir", type=Path, help="ground-truth PNG folder "
                        "(default: the JSON path without .json)")
    parser.add_argument("--pred-json", required=True, type=Path, help="prediction JSON")
    parser.add_argument("--pred-dir", type=Path, help="prediction PNG folder "
                        "(default: the JSON path without .json)")
    parser.add_argument("--out", type=Path, help="write the results dict here as JSON")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="threads reading and scoring images (default: the CPU count, "
                        "at most 8)")


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table, optionally write the JSON."""
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    start = time.perf_counter()
    results = pq_compute_files(
        args.gt_json, args.gt_dir, args.pred_json, args.pred_dir, workers=args.workers
    )
    print(format_results(results))
    print(f"Time elapsed: {time.perf_counter() - start:0.2f} seconds")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0
