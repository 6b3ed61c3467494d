"""The live demo on a real graph: command line, launch file, then `make demo` in short.

Its pairing and scoring logic (no graph) is tested in test_demo_scoring.py. The end-to-end test
runs ``panoptic-ros demo`` as a subprocess (loopback only, this run's domain id) with a tiny
random-weights checkpoint: camera process (short video sequences) -> real ``panoptic_node``
process -> monitor, then checks the summary, the contact sheet and that the written COCO video
files re-score to exactly the live PQ, STQ and ID switches.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import cv2
import pytest
from conftest import REPO, ros_env

from panoptic_ros.categories import synthetic
from panoptic_ros.data.coco_panoptic import CocoPanopticDataset, read_image
from panoptic_ros.data.sequences import SequenceConfig, generate_sequence, video_name
from panoptic_ros.errors import UserError
from panoptic_ros.evaluation.pq import pq_compute_files

LS = synthetic()


# -- command line ----------------------------------------------------------------------------
def test_missing_weights_is_one_line_and_exit_2(tmp_path, monkeypatch):
    from panoptic_ros import models
    from panoptic_ros.commands.demo import parse_size, resolve_weights

    monkeypatch.setattr(models, "DEMO_WEIGHTS", tmp_path / "no_demo.pt")
    with pytest.raises(UserError, match="bundled demo model is missing"):
        resolve_weights("demo")
    assert resolve_weights("random") == ""
    assert parse_size("128x160") == (128, 160)
    for bad in ("128", "16x16", "axb"):
        with pytest.raises(UserError, match="--size"):
            parse_size(bad)
    proc = subprocess.run(
        [sys.executable, "-m", "panoptic_ros.cli", "demo", "--weights", str(tmp_path / "x.pt"),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, env=ros_env(PYTHONPATH=str(REPO)), timeout=120,
        cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"panoptic-ros demo: error: weights not found: {tmp_path / 'x.pt'}"]


# -- launch file ----------------------------------------------------------------------------
LAUNCH = REPO / "launch" / "demo.launch.py"


def launch_nodes() -> dict[str, tuple[str, set[str], list[tuple[str, str]]]]:
    """executable -> (node name, literal parameter keys, remappings) from the launch file."""
    out = {}
    for call in ast.walk(ast.parse(LAUNCH.read_text())):
        if not isinstance(call, ast.Call):
            continue
        kw = {k.arg: k.value for k in call.keywords}
        if "executable" not in kw:
            continue
        keys = {k.value for d in ast.walk(kw["parameters"]) if isinstance(d, ast.Dict)
                for k in d.keys}
        remaps = [tuple(e.value for e in t.elts) for t in kw["remappings"].elts] \
            if "remappings" in kw else []
        out[kw["executable"].value] = (kw["name"].value, keys, remaps)
    return out


def test_demo_launch_file_matches_the_executables_and_their_parameters():
    import rclpy

    from panoptic_ros.ros.demo.camera import DemoCamera
    from panoptic_ros.ros.demo.monitor import PanopticMonitor
    from panoptic_ros.ros.node import NODE_NAME
    from panoptic_ros.ros.node_params import SPECS

    nodes = launch_nodes()
    assert set(nodes) == {"panoptic_demo_camera", "panoptic_node", "panoptic_monitor"}
    for exe in nodes:
        assert os.access(REPO / "scripts" / exe, os.X_OK), exe
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        camera = DemoCamera(context=context)
        camera.stop()
        monitor = PanopticMonitor(context=context)
        monitor.finish()
        for exe, node in (("panoptic_demo_camera", camera), ("panoptic_monitor", monitor)):
            name, keys, _ = nodes[exe]
            assert name == node.get_name()
            assert all(node.has_parameter(k) for k in keys), (exe, keys)
        name, keys, remaps = nodes["panoptic_node"]
        assert name == NODE_NAME and keys <= set(SPECS)
        # The node's inputs are the camera's outputs (depth and camera info too: the node
        # uses them on sequences); the monitor listens to that node's name.
        assert remaps == [("image", "camera/image_raw"), ("depth", "camera/depth"),
                          ("camera_info", "camera/camera_info")]
        assert "use_depth" in keys
        assert camera._image_pub.topic_name == "/camera/image_raw"
        assert monitor.panoptic_topic == f"/{NODE_NAME}/panoptic"
        # It subscribes the lazy 3D outputs, so that the node computes them.
        topics = {sub.topic_name for sub in monitor._subs}
        assert {f"/{NODE_NAME}/points", f"/{NODE_NAME}/markers"} <= topics
        camera.destroy_node()
        monitor.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


# -- `make demo`, shortened ------------------------------------------------------------------
@pytest.mark.ros
@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    from panoptic_ros.models.checkpoint import save_checkpoint
    from panoptic_ros.models.efficientps import EfficientPSConfig
    from panoptic_ros.models.registry import build_model

    weights = save_checkpoint(tmp_path / "tiny.pt",
                              build_model("efficientps", EfficientPSConfig.preset("narrow"), LS))
    out = tmp_path / "demo"
    h, w, rows, per_video = 128, 160, 3, 15
    cmd = [sys.executable, "-m", "panoptic_ros.cli", "demo", "--duration", "8", "--rate", "5",
           "--frames-per-sequence", str(per_video),
           "--size", f"{h}x{w}", "--weights", str(weights), "--output", str(out),
           "--rows", str(rows), "--device", "cpu", "--threads", "1",
           "--domain-id", os.environ["ROS_DOMAIN_ID"]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=ros_env(PYTHONPATH=os.pathsep.join(
                              [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])))
    log = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, log
    assert "latency  p50" in proc.stdout and "PQ over" in proc.stdout, log
    assert "reproduces the live PQ, STQ, ID switches and 3D centroid error" in proc.stdout, log

    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] > 0 and summary["frames_out"] > 0
    assert summary["frames_paired"] + summary["frames_dropped"] == summary["frames_in"]
    assert summary["frames_out"] == summary["frames_paired"] + \
        summary["predictions_without_truth"]
    assert summary["frames_out"] <= summary["node"]["frames_processed"]
    assert summary["node"]["frames_received"] <= summary["frames_in"]
    # The live PQ's values are checked by the offline evaluation agreeing with them (below,
    # offline_eval_matches); here: every class of the label set is scored, in its part.
    assert (summary["pq"]["All"]["n"], summary["pq"]["Things"]["n"],
            summary["pq"]["Stuff"]["n"]) == (len(LS), len(LS.things), len(LS) - len(LS.things))
    assert set(summary["pq"]["per_class"]) == {str(c.id) for c in LS}
    lat = summary["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["max"] and lat["count"] == summary["frames_out"]
    assert set(summary["instance_counts_mean"]) == {c.name for c in LS.things}
    assert summary["exit_codes"] == {"camera": 0, "node": 0}
    assert summary["offline_eval_matches"] is True and summary["interrupted"] is False

    # Contact sheet: rows x (input | overlay | ground truth).
    n = summary["contact_sheet_rows"]
    assert 1 <= n <= rows, log
    assert read_image(out / "contact_sheet.png").shape == (n * h, 3 * w, 3)

    # COCO panoptic files: readable, one entry per scored frame, re-scored to the same PQ.
    preds = CocoPanopticDataset(out / "predictions.json")
    truth = CocoPanopticDataset(out / "ground_truth.json")
    assert len(preds) == len(truth) == summary["frames_paired"]
    assert preds.load_segment_ids(preds.image_ids[0]).shape == (h, w)
    offline = pq_compute_files(out / "ground_truth.json", None, out / "predictions.json", None)
    assert json.loads(json.dumps(offline)) == summary["pq"]

    # Video: live STQ and ID switches over the videos played (equal to `panoptic-ros eval` on
    # the files: offline_eval_matches above), each video of its own header frame_id.
    video = summary["video"]
    n_videos = -(-summary["frames_in"] // per_video)
    names = [video_name(2026, v) for v in range(n_videos)]
    assert [v["video"] for v in video["per_video"]] == names[:len(video["per_video"])]
    assert video["frames"] == summary["frames_paired"] and video["gt_tracks"] > 0
    assert 0.0 <= video["stq"] <= 1.0 and video["id_switches"] >= 0
    assert "STQ" in proc.stdout and "ID switches" in proc.stdout, log

    # The ground truth written is the camera's: sequences of seed 2026, images and persistent
    # ids exact, files named <video>/<frame:06d>.png in pairing order.
    config = SequenceConfig(height=h, width=w, rate=5.0)
    frames = {f.image.tobytes(): f for v in range(n_videos)
              for f in generate_sequence(2026, v, per_video, config)}
    for image_id in truth.image_ids[:3] + truth.image_ids[-3:]:
        frame = frames[truth.load_image(image_id).tobytes()]
        assert (truth.load_segment_ids(image_id) == frame.result.ids).all()
        assert truth.annotation(image_id)["file_name"].startswith(frame.video_id + "/")
    params = (out / "panoptic_params.yaml").read_text()
    assert str(weights) in params and "cpu_threads: 1" in params
    assert summary["config"]["threads"] == 1
    assert cv2.imread(str(out / "predictions" / names[0] / "000000.png")) is not None
    assert summary["config"]["source"] == "sequences"

    # 3D: the node ran with the camera's depth (its parameters), the ground truth carried every
    # visible thing's position (the written files too), and the monitor scored the centroid
    # error (its values are checked in test_demo_scoring.py; a random model may match no
    # thing: here the structure and counters) and received the lazy point clouds and markers.
    assert "use_depth: true" in params
    c3d = summary["centroid_error_m"]
    assert c3d["truth_things"] > 0 and c3d["max_range_m"] == 15.0
    assert 0 <= c3d["count"] <= c3d["all"]["count"] <= c3d["matched"] <= c3d["truth_things"]
    assert (c3d["median"] is None) == (c3d["count"] == 0)
    gt_things = [s for a in truth.annotations.values() for s in a["segments_info"]
                 if LS.is_thing(s["category_id"])]
    assert gt_things and all(len(s["position_m"]) == 3 for s in gt_things)
    assert len(gt_things) == c3d["truth_things"]
    out3d = summary["outputs_3d"]
    assert out3d["point_clouds"] > 0 and out3d["last_cloud_points"] > 0, out3d
    assert out3d["marker_arrays"] >= 0
    assert "3D       centroid error" in proc.stdout and "3D out" in proc.stdout, log
