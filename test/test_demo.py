"""The live demo: pairing and scoring logic (no graph), then `make demo` in short on a real graph.

The end-to-end test runs ``panoptic-ros demo`` as a subprocess (loopback only, this run's
domain id) with a tiny random-weights checkpoint: camera process -> real ``panoptic_node``
process -> monitor, then checks the summary, the contact sheet and that the written COCO files
re-score to exactly the live PQ.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO, ros_env

from panoptic_ros.categories import synthetic
from panoptic_ros.data.coco_panoptic import CocoPanopticDataset, read_image
from panoptic_ros.data.synthetic import SceneConfig, generate_scene, scene_rng
from panoptic_ros.errors import UserError
from panoptic_ros.evaluation.live import (
    LiveEvaluator,
    SheetRow,
    SheetSampler,
    StampPairer,
    contact_sheet,
    latency_summary,
)
from panoptic_ros.evaluation.pq import PQStat, pq_compute_files, pq_results
from panoptic_ros.result import PanopticResult

LS = synthetic()
SKY, GROUND, PERSON, CAR = 11, 12, 1, 2


def key(i: int, frame: str = "cam") -> tuple[int, int, str]:
    return (100 + i // 10, (i % 10) * 100_000_000, frame)


# -- StampPairer ------------------------------------------------------------------------------
def test_pairer_pairs_by_header_and_counts_frames_without_output():
    pairer = StampPairer(max_pending=10)
    for i in range(5):
        assert pairer.add_truth(key(i), f"gt{i}") is None
    assert pairer.add_prediction(key(1), "p1") == ("gt1", "p1")
    assert pairer.truth_without_prediction == 1  # frame 0 is older than an answered frame
    assert pairer.add_prediction(key(4), "p4") == ("gt4", "p4")
    assert pairer.truth_without_prediction == 3  # frames 2 and 3 too
    assert pairer.pending_truth == 0
    pairer.add_truth(key(5), "gt5")
    pairer.flush()
    assert (pairer.truth_without_prediction, pairer.prediction_without_truth) == (4, 0)


def test_pairer_waits_for_late_truth_and_matches_frame_id():
    pairer = StampPairer()
    assert pairer.add_prediction(key(3), "p3") is None
    assert pairer.add_truth(key(3, "other_frame"), "gt3-other") is None
    assert pairer.add_truth(key(3), "gt3") == ("gt3", "p3")
    assert pairer.pending_predictions == 0
    pairer.flush()
    assert (pairer.truth_without_prediction, pairer.prediction_without_truth) == (1, 0)


def test_pairer_memory_is_bounded():
    pairer = StampPairer(max_pending=3)
    for i in range(10):
        pairer.add_truth(key(i), i)
    assert pairer.pending_truth == 3 and pairer.truth_without_prediction == 7
    for i in range(20, 25):
        pairer.add_prediction(key(i, "x"), i)
    assert pairer.pending_predictions == 3 and pairer.prediction_without_truth == 2
    with pytest.raises(ValueError, match="max_pending"):
        StampPairer(max_pending=0)


# -- LiveEvaluator ----------------------------------------------------------------------------
def gt_and_pred(i: int) -> tuple[PanopticResult, PanopticResult]:
    """A 12x16 frame: sky over ground, a person and a car; the prediction shifts the car by
    ``i % 4`` columns and misses the person on odd frames."""
    ids = np.full((12, 16), SKY * 1000, np.int32)
    ids[6:] = GROUND * 1000
    ids[3:10, 2:5] = PERSON * 1000 + 1
    ids[7:11, 8:14] = CAR * 1000 + 1
    pred = ids.copy()
    pred[pred == CAR * 1000 + 1] = GROUND * 1000
    shift = i % 4
    pred[7:11, 8 + shift:14 + shift] = CAR * 1000 + 1
    if i % 2:
        pred[pred == PERSON * 1000 + 1] = 0
    return PanopticResult.from_ids(ids, LS), PanopticResult.from_ids(pred, LS)


def test_live_evaluator_accumulates_pq_and_writes_files_that_rescore_the_same(tmp_path):
    ev = LiveEvaluator(LS, output_dir=tmp_path, sheet_rows=2)
    expected = PQStat()
    for i in range(6):
        gt, pred = gt_and_pred(i)
        image = np.full((12, 16, 3), 10 * i, np.uint8)
        if i == 4:  # topics interleave: prediction, then ground truth, then the image
            ev.add_prediction(key(i), pred, latency_s=0.1 * (i + 1), received=float(i))
            ev.add_truth(key(i), gt)
            ev.add_image(key(i), image)
        else:
            ev.add_truth(key(i), gt)
            ev.add_image(key(i), image)
            if i == 2:
                continue  # the node dropped this frame
            ev.add_prediction(key(i), pred, latency_s=0.1 * (i + 1), received=float(i))
        expected += pq_results(gt, pred)
        ev.add_overlay(key(i), image + 1)
        ev.add_counts({"person": 1 - i % 2, "car": 1})
    snap = ev.snapshot()
    assert (snap.frames_in, snap.frames_out, snap.frames_dropped) == (6, 5, 1)
    summary = ev.close()
    assert summary["pq"] == expected.results(LS)
    assert 0.0 < summary["pq"]["All"]["pq"] < 1.0
    assert (summary["frames_paired"], summary["frames_dropped"]) == (5, 1)
    assert summary["latency_ms"]["p50"] == pytest.approx(400.0)
    assert summary["latency_ms"]["max"] == pytest.approx(600.0)
    assert summary["output_rate_hz"] == pytest.approx(4 / 5)
    assert summary["instance_counts_mean"] == {"person": 0.4, "car": 1.0}
    # The offline evaluation of the written files gives the very same numbers.
    offline = pq_compute_files(tmp_path / "ground_truth.json", None,
                               tmp_path / "predictions.json", None)
    assert offline == summary["pq"]
    gt_set = CocoPanopticDataset(tmp_path / "ground_truth.json")
    assert gt_set.image_ids == [1, 2, 3, 4, 5]
    assert (gt_set.load_image(3) == 30).all()  # image id 3 is frame 3 (frame 2 was dropped)
    assert (gt_set.load_image(4) == 40).all()  # written when it came, after the pair
    assert (gt_set.load_segment_ids(3) == gt_and_pred(3)[0].ids).all()
    sheet = read_image(summary["files"]["contact_sheet"])
    assert sheet.shape == (2 * 12, 3 * 16, 3)
    assert summary["contact_sheet_rows"] == 2


def test_live_evaluator_does_not_score_foreign_categories(tmp_path):
    from panoptic_ros.categories import cityscapes

    ev = LiveEvaluator(LS, sheet_rows=0)
    ev.set_model_labels(cityscapes())
    gt, pred = gt_and_pred(0)
    ev.add_truth(key(0), gt)
    ev.add_prediction(key(0), pred, 0.2)
    summary = ev.close()
    assert summary["pq"] is None and "not scored" in summary["pq_note"]
    assert summary["frames_paired"] == 1


def test_sheet_sampler_keeps_evenly_spaced_frames_in_bounded_memory():
    sampler = SheetSampler(rows=4, capacity=8)
    img = np.zeros((4, 4, 3), np.uint8)
    gt = PanopticResult.from_ids(np.full((4, 4), SKY * 1000), LS)
    made = []
    for i in range(100):
        sampler.offer(key(i), lambda i=i: made.append(i) or SheetRow(key(i), gt, None, img))
        if i != 96:
            sampler.add_overlay(key(i), img)
    assert len(sampler._held) <= 8
    kept = [r.key for r in sampler._held]
    steps = {b[1] - a[1] + 1_000_000_000 * (b[0] - a[0]) for a, b in zip(kept, kept[1:])}
    assert len(steps) == 1  # evenly spaced
    picked = sampler.pick()
    assert len(picked) == 4 and all(r.overlay is not None for r in picked)
    assert picked[0].key == key(0)
    assert len(made) < 30  # rows are only built for frames that are kept


def test_contact_sheet_panels_and_errors():
    gt = PanopticResult.from_ids(np.kron(gt_and_pred(0)[0].ids, np.ones((4, 4), np.int32)), LS)
    rgb = np.zeros((48, 64, 3), np.uint8)
    rows = [SheetRow(key(i), gt, 0.5, rgb, overlay=rgb + 7) for i in range(3)]
    sheet = contact_sheet(rows, LS)
    assert sheet.shape == (3 * 48, 3 * 64, 3) and sheet.dtype == np.uint8
    bottom = sheet[-1]  # last line of the last row: input | overlay | ground truth
    assert (bottom[:64] == 0).all() and (bottom[64:128] == 7).all()
    assert tuple(bottom[-1]) == tuple(LS.by_id(GROUND).color)
    with pytest.raises(ValueError, match="no overlay"):
        contact_sheet([SheetRow(key(0), gt, None, rgb)], LS)
    with pytest.raises(ValueError, match="at least one"):
        contact_sheet([], LS)


def test_latency_summary():
    s = latency_summary([0.1, 0.2, 0.3, 0.4])
    assert s["count"] == 4 and s["p50"] == pytest.approx(250.0)
    assert s["p95"] == pytest.approx(385.0) and s["min"] == pytest.approx(100.0)
    assert latency_summary([])["count"] == 0


# -- messages --------------------------------------------------------------------------------
def test_result_from_msg_inverts_panoptic_msg():
    from std_msgs.msg import Header

    from panoptic_ros.ros.messages import panoptic_msg
    from panoptic_ros.ros.monitor import frame_key, result_from_msg

    gt, _ = gt_and_pred(1)
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 7, 42
    back = result_from_msg(panoptic_msg(gt, header, LS))
    assert (back.ids == gt.ids).all() and back.ids.dtype == np.int32
    assert back.segments == gt.segments
    assert frame_key(header) == (7, 42, "cam")


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

    from panoptic_ros.ros.demo_camera import DemoCamera
    from panoptic_ros.ros.monitor import PanopticMonitor
    from panoptic_ros.ros.node import NODE_NAME, SPECS

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
        # The node's input is the camera's output; the monitor listens to that node's name.
        assert remaps == [("image", "camera/image_raw")]
        assert camera._image_pub.topic_name == "/camera/image_raw"
        assert monitor.panoptic_topic == f"/{NODE_NAME}/panoptic"
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
    h, w, rows = 128, 160, 3
    cmd = [sys.executable, "-m", "panoptic_ros.cli", "demo", "--duration", "8", "--rate", "5",
           "--size", f"{h}x{w}", "--weights", str(weights), "--output", str(out),
           "--rows", str(rows), "--device", "cpu", "--threads", "1",
           "--domain-id", os.environ["ROS_DOMAIN_ID"]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=ros_env(PYTHONPATH=os.pathsep.join(
                              [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])))
    log = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, log
    assert "latency  p50" in proc.stdout and "PQ over" in proc.stdout, log
    assert "reproduces the live PQ" in proc.stdout, log

    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] > 0 and summary["frames_out"] > 0
    assert summary["frames_paired"] + summary["frames_dropped"] == summary["frames_in"]
    assert summary["frames_out"] == summary["frames_paired"] + \
        summary["predictions_without_truth"]
    assert summary["frames_out"] <= summary["node"]["frames_processed"]
    assert summary["node"]["frames_received"] <= summary["frames_in"]
    for part in ("All", "Things", "Stuff"):
        for metric in ("pq", "sq", "rq"):
            assert 0.0 <= summary["pq"][part][metric] <= 1.0
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

    # The ground truth written is the camera's: scenes of seed 2026, image and labels exact.
    scenes = {}
    for k in range(summary["frames_in"]):
        scene = generate_scene(scene_rng(2026, k), SceneConfig(height=h, width=w))
        scenes[scene.image.tobytes()] = scene
    for image_id in truth.image_ids[:3]:
        scene = scenes[truth.load_image(image_id).tobytes()]
        assert (truth.load_segment_ids(image_id) == scene.result.ids).all()
    params = (out / "panoptic_params.yaml").read_text()
    assert str(weights) in params and "cpu_threads: 1" in params
    assert summary["config"]["threads"] == 1
    assert cv2.imread(str(out / "predictions" / "000000000001.png")) is not None
