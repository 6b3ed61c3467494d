"""What the demo reports and writes: its output folder, status line and summary (ROS-free).

One owner for the names in the output folder (the evaluator, the monitor, the launcher and
``panoptic-ros demo`` all write or clear them) and for the text of the running status line and
of the final summary.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from panoptic_ros.data.coco_panoptic import load_json
from panoptic_ros.errors import UserError
from panoptic_ros.evaluation.centroid import centroid_compute_files
from panoptic_ros.evaluation.pq import format_results, pq_compute_files
from panoptic_ros.evaluation.video import video_compute_files

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


def centroid_section(results: Mapping[str, Any], truth_things: int) -> dict[str, Any]:
    """The summary's ``centroid_error_m`` from :meth:`CentroidStat.results`.

    Returns:
        ``median``, ``p90`` (metres; ``None`` when ``count`` is 0) and ``count`` of the matched
        things within ``max_range_m`` of the camera (the headline); ``all``: the same over
        every matched thing with 3D; ``matched``: ground-truth things matched (IoU > 0.5, same
        category); ``truth_things``: ground-truth things with 3D in the scored frames.
    """
    def part(p: Mapping[str, Any]) -> dict[str, Any]:
        empty = not p["count"]
        return {"median": None if empty else p["median_m"],
                "p90": None if empty else p["p90_m"], "count": p["count"]}

    return {**part(results["within"]), "max_range_m": results["max_range_m"],
            "all": part(results["all"]), "matched": results["matched"],
            "truth_things": truth_things}


def format_status(snap: LiveSnapshot) -> str:
    """One status line: frames in/out/dropped, output FPS, median latency, running PQ.

    On video also the running STQ (pooled over the videos) and the ID switches; with 3D ground
    truth the running median centroid error of matched things within 15 m.
    """
    pq = "-" if snap.pq is None else f"{100 * snap.pq:.1f}"
    lat = f"{snap.latency_ms_p50:.0f} ms" if snap.frames_out else "-"
    line = (f"in {snap.frames_in} out {snap.frames_out} dropped {snap.frames_dropped} | "
            f"{snap.fps:.1f} FPS | latency p50 {lat} | PQ {pq}")
    if snap.stq is not None:
        line += f" | STQ {100 * snap.stq:.1f} | ID switches {snap.id_switches}"
    if snap.centroid_error_p50_m is not None:
        line += f" | 3D err p50 {snap.centroid_error_p50_m:.2f} m"
    return line


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
    video = summary.get("video")
    if video is not None:
        per_video = "  ".join(f"{v['video']} {100 * v['stq']:.1f}" for v in video["per_video"])
        lines += [
            f"video    {video['videos']} videos, {video['frames']} paired frames, "
            f"{video['gt_tracks']} ground-truth thing tracks",
            f"STQ      {100 * video['stq']:.1f}  (AQ {100 * video['aq']:.1f}, SQ "
            f"{100 * video['sq']:.1f})  ID switches {video['id_switches']} "
            f"({video['id_switches_per_100_tracks']:.1f} per 100 GT tracks)",
            f"STQ per video: {per_video}",
        ]
    c3d = summary.get("centroid_error_m")
    if c3d is not None:
        def part(p: Mapping[str, Any]) -> str:
            if not p["count"]:
                return "none"
            return f"median {p['median']:.3f} m  p90 {p['p90']:.3f} m  ({p['count']} things)"

        lines += [f"3D       centroid error of matched things within {c3d['max_range_m']:g} m: "
                  f"{part(c3d)}; all: {part(c3d['all'])}; {c3d['matched']} of "
                  f"{c3d['truth_things']} ground-truth things matched"]
    out3d = summary.get("outputs_3d")
    if out3d:
        lines.append(f"3D out   {out3d['point_clouds']} point clouds (last "
                     f"{out3d['last_cloud_points']} points), {out3d['marker_arrays']} marker "
                     f"arrays (last {out3d['last_markers']} markers)")
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

    On video also the live pooled STQ, AQ, SQ (to 1e-9) and ID switches (exactly); with 3D
    ground truth also the live centroid error (matches, counts, median and p90 exactly).
    ``None`` when there is nothing to compare (not scored, or no files written).
    """
    files = summary["files"]
    if summary.get("pq") is None or "ground_truth_json" not in files:
        return None
    gt, pred = files["ground_truth_json"], files["predictions_json"]
    if pq_compute_files(gt, None, pred, None) != summary["pq"]:
        return False
    live_3d = summary.get("centroid_error_m")
    if live_3d is not None:
        gt_json = load_json(gt, "ground-truth JSON")
        offline_3d = centroid_compute_files(
            gt_json, Path(gt).with_suffix(""), load_json(pred, "prediction JSON"),
            Path(pred).with_suffix("")).results(live_3d["max_range_m"])
        with_3d = sum("position_m" in s for a in gt_json["annotations"]
                      for s in a["segments_info"])
        if centroid_section(offline_3d, with_3d) != live_3d:
            return False
    live = summary.get("video")
    if live is None:
        return True
    offline = video_compute_files(gt, Path(gt).with_suffix(""), pred,
                                  Path(pred).with_suffix(""))
    return (all(math.isclose(offline["stq"][k], live[k], rel_tol=1e-9, abs_tol=1e-12)
                for k in ("stq", "aq", "sq"))
            and offline["tracking"]["id_switches"] == live["id_switches"]
            and offline["stq"]["tracks"] == live["gt_tracks"])
