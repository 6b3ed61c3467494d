"""What the demo reports and writes: its output folder, status line and summary (ROS-free).

One owner for the names in the output folder (the evaluator, the monitor, the launcher and
``panoptic-ros demo`` all write or clear them) and for the text of the running status line and
of the final summary.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from panoptic_ros.errors import UserError
from panoptic_ros.evaluation.pq import format_results, pq_compute_files

if TYPE_CHECKING:
    from panoptic_ros.ros.demo.scoring import LiveSnapshot

PRED_JSON, PRED_DIR = "predictions.json", "predictions"
GT_JSON, GT_DIR, IMAGE_DIR = "ground_truth.json", "ground_truth", "images"
SHEET_NAME = "contact_sheet.png"
SUMMARY_NAME = "summary.json"
PARAMS_NAME = "panoptic_params.yaml"
LOGS_DIR = "logs"

OUTPUT_ENTRIES = (SUMMARY_NAME, SHEET_NAME, PRED_JSON, PRED_DIR, GT_JSON, GT_DIR, IMAGE_DIR,
                  PARAMS_NAME, LOGS_DIR)
"""What the demo writes into its output folder (a previous run's are replaced)."""


def prepare_output(out: Path) -> None:
    """Create the output folder and remove a previous demo's results from it."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_ENTRIES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def format_status(snap: LiveSnapshot) -> str:
    """One status line: frames in/out/dropped, output FPS, median latency, running PQ."""
    pq = "-" if snap.pq is None else f"{100 * snap.pq:.1f}"
    lat = f"{snap.latency_ms_p50:.0f} ms" if snap.frames_out else "-"
    return (f"in {snap.frames_in} out {snap.frames_out} dropped {snap.frames_dropped} | "
            f"{snap.fps:.1f} FPS | latency p50 {lat} | PQ {pq}")


def format_summary(summary: Mapping[str, Any]) -> str:
    """The human-readable report of a :meth:`LiveEvaluator.close` summary (plus node figures)."""
    lat = summary["latency_ms"]
    lines = [
        f"frames   in {summary['frames_in']}  out {summary['frames_out']}  "
        f"dropped {summary['frames_dropped']} (camera frames without output)",
    ]
    node = summary.get("node") or {}
    if "frames_received" in node:
        # The node may also have received frames the monitor counted before it started.
        unseen = max(0, summary["frames_in"] - int(node["frames_received"]))
        lines.append(
            f"node     received {node['frames_received']}  processed "
            f"{node.get('frames_processed', '?')}  dropped {node.get('frames_dropped', '?')} "
            f"(latest frame wins)  bad {node.get('bad_inputs', '?')}  errors "
            f"{node.get('processing_errors', '?')}; {unseen} camera frames never reached its "
            "image callback (lost in transport or replaced in its depth-1 queue)")
    lines += [
        f"rate     input {summary['input_rate_hz']:.1f} Hz  output {summary['output_rate_hz']:.2f}"
        f" FPS",
        f"latency  p50 {lat['p50']:.0f} ms  p95 {lat['p95']:.0f} ms  mean {lat['mean']:.0f} ms"
        f"  max {lat['max']:.0f} ms  (stamp -> received by the monitor, {lat['count']} frames)",
    ]
    if summary.get("pq") is not None:
        lines += [f"PQ over {summary['frames_paired']} frames:", format_results(summary["pq"])]
    else:
        lines.append(f"PQ       {summary.get('pq_note') or 'no frames paired'}")
    counts = summary.get("instance_counts_mean") or {}
    if counts:
        lines.append("instances per frame (mean): "
                     + "  ".join(f"{k} {v:.2f}" for k, v in counts.items()))
    return "\n".join(lines)


def write_summary(path: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write the summary as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1))
    return path


def offline_check(summary: Mapping[str, Any]) -> bool | None:
    """Re-score the written files as ``panoptic-ros eval`` does; whether it equals the live PQ.

    ``None`` when there is nothing to compare (not scored, or no files written).
    """
    files = summary["files"]
    if summary.get("pq") is None or "ground_truth_json" not in files:
        return None
    offline = pq_compute_files(files["ground_truth_json"], None, files["predictions_json"],
                               None)
    return offline == summary["pq"]
