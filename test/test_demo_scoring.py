"""The live demo's ROS-free half: pairing by header, live scoring, contact sheet, report."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import REPO

from panoptic_ros.categories import synthetic
from panoptic_ros.data.coco_panoptic import CocoPanopticDataset, read_image
from panoptic_ros.data.sequences import SequenceConfig, generate_sequence
from panoptic_ros.evaluation.centroid import centroid_compute_files
from panoptic_ros.evaluation.live import LiveVideoMetrics
from panoptic_ros.evaluation.pq import PQStat, pq_compute_files, pq_results
from panoptic_ros.evaluation.sequence import Frame
from panoptic_ros.evaluation.video import evaluate_video, video_compute_files
from panoptic_ros.geometry import intrinsics_from_calibration, segment_geometry
from panoptic_ros.result import PanopticResult, SegmentGeometry
from panoptic_ros.ros.demo.pairing import (
    KeyedBuffer,
    StampPairer,
    sequence_frame_id,
    video_of_frame_id,
)
from panoptic_ros.ros.demo.report import (
    OUTPUT_ENTRIES,
    format_status,
    format_summary,
    offline_check,
    prepare_output,
)
from panoptic_ros.ros.demo.scoring import LiveEvaluator, latency_summary, segments_info
from panoptic_ros.ros.demo.sheet import SheetRow, SheetSampler, sheet_image
from panoptic_ros.ros.demo.truth import truth_with_geometry

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


def video_pair(t: int, person: int, car: int) -> tuple[PanopticResult, PanopticResult]:
    """Frame ``t`` of a video: a walking person (gt id 1001) and a car (gt id 2001) over sky
    and ground; the prediction has the person as ``1000 + person`` (one column short) and the
    car as ``2000 + car`` one column to the right (missed when ``car`` is 0)."""
    ids = np.full((12, 16), SKY * 1000, np.int32)
    ids[6:] = GROUND * 1000
    pred = ids.copy()
    ids[3:10, 1 + t:5 + t] = PERSON * 1000 + 1
    pred[3:10, 1 + t:4 + t] = PERSON * 1000 + person
    ids[7:11, 8:13] = CAR * 1000 + 1
    if car:
        pred[7:11, 9:14] = CAR * 1000 + car
    return PanopticResult.from_ids(ids, LS), PanopticResult.from_ids(pred, LS)


def test_live_evaluator_scores_videos_like_the_batch_metrics_and_writes_a_video_set(tmp_path):
    # Two videos, each a camera of its own frame id; the same gt ids in both are other objects.
    # Video 0: 4 frames, the node drops frame 2; video 1: the person's track id changes once.
    videos = {
        sequence_frame_id("cam", "7_0000"): [(5, 3), (5, 3), (5, 3), (5, 0)],
        sequence_frame_id("cam", "7_0001"): [(7, 4), (7, 4), (9, 4)],
    }
    ev = LiveEvaluator(LS, output_dir=tmp_path, sheet_rows=0, video=True)
    assert ev.snapshot().stq is None
    paired: dict[str, list[tuple[PanopticResult, PanopticResult]]] = {}
    i = 0
    for frame_id, tracks in videos.items():
        for t, (person, car) in enumerate(tracks):
            gt, pred = video_pair(t, person, car)
            ev.add_truth(key(i, frame_id), gt)
            if (frame_id, t) != (sequence_frame_id("cam", "7_0000"), 2):
                ev.add_prediction(key(i, frame_id), pred, 0.1)
                paired.setdefault(video_of_frame_id(frame_id), []).append((gt, pred))
            i += 1
    snap = ev.snapshot()
    summary = ev.close()
    video = summary["video"]
    assert (video["videos"], video["frames"], summary["frames_dropped"]) == (2, 6, 1)

    # Per video: a fresh LiveVideoMetrics over its paired frames.
    per_video = []
    for name, pairs in paired.items():
        metrics = LiveVideoMetrics(LS)
        for gt, pred in pairs:
            last = metrics.update(gt.ids, segments_info(gt), pred.ids, segments_info(pred))
        per_video.append({"video": name, "frames": last.frames, "stq": last.stq,
                          "aq": last.aq, "sq": last.sq, "id_switches": last.id_switches,
                          "gt_tracks": last.gt_tracks})
    assert video["per_video"] == per_video
    assert [v["id_switches"] for v in per_video] == [0, 1]
    # Pooled: the batch metrics over both sequences.
    batch = evaluate_video(
        [[(Frame.from_label_image(g.ids, LS), Frame.from_label_image(p.ids, LS))
          for g, p in pairs] for pairs in paired.values()], LS)
    assert video["stq"] == pytest.approx(batch["stq"]["stq"], rel=1e-12)
    assert (video["aq"], video["sq"]) == pytest.approx((batch["stq"]["aq"], batch["stq"]["sq"]))
    assert video["gt_tracks"] == batch["stq"]["tracks"] == 4
    assert video["id_switches"] == batch["tracking"]["id_switches"] == 1
    assert video["id_switches_per_100_tracks"] == pytest.approx(25.0)
    assert 0.0 < video["stq"] < 1.0
    assert (snap.stq, snap.id_switches) == (video["stq"], 1)
    assert "| STQ " in format_status(snap) and "ID switches 1" in format_status(snap)
    assert "ID switches 1 (25.0 per 100 GT tracks)" in format_summary(summary)

    # The files are a video data set that `panoptic-ros eval` scores to the same figures.
    gt_json = CocoPanopticDataset(tmp_path / "ground_truth.json")
    images = json.loads((tmp_path / "predictions.json").read_text())["images"]
    assert [(im["video_id"], im["frame_index"], im["file_name"]) for im in images] == [
        ("7_0000", 0, "7_0000/000000.png"), ("7_0000", 1, "7_0000/000001.png"),
        ("7_0000", 2, "7_0000/000002.png"), ("7_0001", 0, "7_0001/000000.png"),
        ("7_0001", 1, "7_0001/000001.png"), ("7_0001", 2, "7_0001/000002.png")]
    assert gt_json.annotation(4)["file_name"] == "7_0001/000000.png"
    assert (gt_json.load_segment_ids(3) == video_pair(3, 5, 0)[0].ids).all()
    pred_ids = CocoPanopticDataset(tmp_path / "predictions.json").load_segment_ids(6)
    assert set(np.unique(pred_ids)) >= {PERSON * 1000 + 9, CAR * 1000 + 4}  # ids kept
    offline = video_compute_files(tmp_path / "ground_truth.json", tmp_path / "ground_truth",
                                  tmp_path / "predictions.json", tmp_path / "predictions")
    assert offline["stq"]["stq"] == pytest.approx(video["stq"], rel=1e-12)
    assert offline["tracking"]["id_switches"] == 1
    assert offline_check(summary) is True
    assert offline_check({**summary, "video": {**video, "id_switches": 2}}) is False


# -- 3D ---------------------------------------------------------------------------------------
def test_camera_ground_truth_carries_the_exact_3d_of_every_thing():
    """The ground truth's centroid is the object's position_m (the node's definition of a
    centroid applied to the ground-truth mask and the exact depth gives it to 1 mm)."""
    config = SequenceConfig(height=64, width=80, rate=10.0)
    things = 0
    for frame in generate_sequence(5, 0, 4, config):
        truth = truth_with_geometry(frame)
        assert (truth.ids == frame.result.ids).all()
        assert [s.id for s in truth.segments] == [s.id for s in frame.result.segments]
        by_def = {s.id: s.geometry for s in segment_geometry(
            frame.result, frame.depth, intrinsics_from_calibration(frame.camera)).segments}
        geometry = {s.id: s.geometry for s in truth.segments}
        for obj in frame.objects:
            if not obj.visible:
                assert obj.id not in geometry
                continue
            things += 1
            g = geometry[obj.id]
            assert g.centroid == tuple(obj.position_m)
            np.testing.assert_allclose(by_def[obj.id].centroid, obj.position_m, atol=1e-3)
            assert g.valid_fraction == 1.0  # a thing is a billboard at one depth
            assert 0 < g.distance <= np.linalg.norm(obj.position_m) + 1e-3
            assert all(lo <= c <= hi for lo, c, hi in zip(g.extent_min, g.centroid,
                                                          g.extent_max))
        sky = [s for s in truth.segments if s.category_id == SKY]
        assert all(s.geometry is None for s in sky)  # no depth in the sky
    assert things > 0


def with_3d(result: PanopticResult, centroids: dict[int, tuple[float, float, float]]) -> (
    PanopticResult
):
    """``result`` whose segments in ``centroids`` have that centroid (fully valid depth)."""
    def geometry(c: tuple[float, float, float]) -> SegmentGeometry:
        return SegmentGeometry(1.0, c, float(np.linalg.norm(c)), c, c)

    return replace(result, segments=[
        replace(s, geometry=geometry(centroids[s.id])) if s.id in centroids else s
        for s in result.segments])


def test_live_evaluator_scores_the_3d_centroid_error_like_eval_does(tmp_path):
    # One video, 5 frames: a person at 5 m (the prediction 0.1, 0.2, ... m too far; no 3D in
    # the last frame: matched, no error) and a car at 20 m, beyond the 15 m headline range
    # (1 m too far: only in "all").
    person, car = PERSON * 1000 + 1, CAR * 1000 + 1
    frame_id = sequence_frame_id("cam", "7_0000")
    ev = LiveEvaluator(LS, output_dir=tmp_path, sheet_rows=0, video=True)
    for i in range(5):
        gt, pred = video_pair(0, 5, 3)
        gt = with_3d(gt, {person: (1.0, 0.0, 5.0), car: (-2.0, 1.0, 20.0)})
        guess = {CAR * 1000 + 3: (-2.0, 1.0, 21.0)}
        if i < 4:
            guess[PERSON * 1000 + 5] = (1.0, 0.0, 5.0 + 0.1 * (i + 1))
        ev.add_truth(key(i, frame_id), gt)
        ev.add_prediction(key(i, frame_id), with_3d(pred, guess), 0.1)
        if i == 1:
            snap = ev.snapshot()
            assert snap.centroid_error_p50_m == pytest.approx(0.15)
            assert format_status(snap).endswith("| 3D err p50 0.15 m")
    summary = ev.close()
    errors = [0.1, 0.2, 0.3, 0.4]
    c3d = summary["centroid_error_m"]
    assert c3d["median"] == pytest.approx(0.25) and c3d["count"] == 4
    assert c3d["p90"] == pytest.approx(np.percentile(errors, 90))
    assert c3d["max_range_m"] == 15.0
    assert c3d["all"]["count"] == 9
    assert c3d["all"]["median"] == pytest.approx(np.median(errors + [1.0] * 5))
    assert (c3d["matched"], c3d["truth_things"]) == (10, 10)
    assert "3D       centroid error of matched things within 15 m: median 0.250 m" in \
        format_summary(summary)

    # The files carry the 3D (ground truth position_m, predictions centroid_m ...) and
    # `panoptic-ros eval` reports the very same error.
    gt_json = json.loads((tmp_path / "ground_truth.json").read_text())
    pred_json = json.loads((tmp_path / "predictions.json").read_text())
    gt_seg = {s["id"]: s for s in gt_json["annotations"][0]["segments_info"]}
    pred_seg = {s["id"]: s for s in pred_json["annotations"][0]["segments_info"]}
    assert gt_seg[car]["position_m"] == [-2.0, 1.0, 20.0]
    assert "position_m" not in gt_seg[SKY * 1000]  # things only
    assert pred_seg[PERSON * 1000 + 5].items() >= {
        "centroid_m": [1.0, 0.0, 5.1], "distance_m": round(np.hypot(1.0, 5.1), 4),
        "valid_depth_fraction": 1.0}.items()
    offline = centroid_compute_files(gt_json, tmp_path / "ground_truth", pred_json,
                                     tmp_path / "predictions").results()
    assert offline["within"]["median_m"] == c3d["median"]
    assert offline["within"]["p90_m"] == c3d["p90"]
    assert offline["all"]["count"] == 9 and offline["matched"] == 10
    assert offline_check(summary) is True
    assert offline_check({**summary, "centroid_error_m": {**c3d, "median": 0.3}}) is False


def test_report_shows_the_3d_outputs_and_no_3d_without_it(tmp_path):
    ev = LiveEvaluator(LS, sheet_rows=0)
    gt, pred = gt_and_pred(0)
    ev.add_truth(key(0), gt)
    ev.add_prediction(key(0), pred, 0.2)
    assert ev.snapshot().centroid_error_p50_m is None
    assert "3D" not in format_status(ev.snapshot())
    summary = ev.close()
    assert summary["centroid_error_m"] is None and "3D" not in format_summary(summary)
    text = format_summary({**summary, "outputs_3d": {
        "point_clouds": 12, "last_cloud_points": 20480, "marker_arrays": 11,
        "last_markers": 8}})
    assert "3D out   12 point clouds (last 20480 points), 11 marker arrays (last 8 " in text


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


def test_sheet_image_panels_and_errors():
    gt = PanopticResult.from_ids(np.kron(gt_and_pred(0)[0].ids, np.ones((4, 4), np.int32)), LS)
    rgb = np.zeros((48, 64, 3), np.uint8)
    rows = [SheetRow(key(i), gt, 0.5, rgb, overlay=rgb + 7) for i in range(3)]
    sheet = sheet_image(rows, LS)
    assert sheet.shape == (3 * 48, 3 * 64, 3) and sheet.dtype == np.uint8
    bottom = sheet[-1]  # last line of the last row: input | overlay | ground truth
    assert (bottom[:64] == 0).all() and (bottom[64:128] == 7).all()
    assert tuple(bottom[-1]) == tuple(LS.by_id(GROUND).color)
    assert (rgb == 0).all()  # the captions are drawn on copies
    with pytest.raises(ValueError, match="no overlay"):
        sheet_image([SheetRow(key(0), gt, None, rgb)], LS)
    with pytest.raises(ValueError, match="at least one"):
        sheet_image([], LS)


def test_latency_summary():
    s = latency_summary([0.1, 0.2, 0.3, 0.4])
    assert s["count"] == 4 and s["p50"] == pytest.approx(250.0)
    assert s["p95"] == pytest.approx(385.0) and s["min"] == pytest.approx(100.0)
    assert latency_summary([])["count"] == 0


# -- KeyedBuffer -----------------------------------------------------------------------------
def test_keyed_buffer_is_bounded_and_keeps_arrival_order():
    buf: KeyedBuffer[str] = KeyedBuffer(2)
    assert buf.put(key(0), "a") == 0 and buf.put(key(1), "b") == 0
    assert buf.put(key(0), "a2") == 0  # replaced in its place, nothing falls out
    assert buf.put(key(2), "c") == 1  # the oldest (key 0) falls out
    assert key(0) not in buf and list(buf) == [key(1), key(2)]
    assert buf.get(key(1)) == "b" and len(buf) == 2
    assert buf.pop(key(1)) == "b" and buf.pop(key(1), "none") == "none"
    assert buf.clear() == 1 and len(buf) == 0
    with pytest.raises(ValueError, match="capacity"):
        KeyedBuffer(0)


# -- report ----------------------------------------------------------------------------------
def test_report_texts_and_output_folder(tmp_path):
    ev = LiveEvaluator(LS, output_dir=tmp_path / "out", sheet_rows=1)
    gt, pred = gt_and_pred(1)
    ev.add_truth(key(0), gt)
    ev.add_prediction(key(0), pred, 0.25)
    snap = ev.snapshot()
    line = format_status(snap)
    assert line.startswith("in 1 out 1 dropped 0 |") and "latency p50 250 ms" in line
    assert "STQ" not in line and snap.stq is None  # single images: no video figures
    summary = ev.close()
    text = format_summary(summary)
    assert "latency  p50 250 ms" in text and "PQ over 1 frames:" in text
    assert summary["video"] is None and "STQ" not in text
    assert offline_check(summary) is True
    assert offline_check({**summary, "pq": None}) is None
    out = tmp_path / "out"
    (out / "keep.txt").write_text("not the demo's")
    prepare_output(out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert {"summary.json", "logs", "predictions"} <= set(OUTPUT_ENTRIES)


def test_the_ros_free_half_does_not_load_rclpy():
    code = ("import sys\n"
            "import panoptic_ros.ros.demo.scoring, panoptic_ros.ros.demo.report\n"
            "import panoptic_ros.ros.demo.truth\n"
            "assert not [m for m in sys.modules if m.startswith(('rclpy', 'rcl_interfaces'))]")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
