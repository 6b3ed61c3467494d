"""``infer --depth --camera-info`` and ``eval``'s 3D centroid error, end to end on a tiny
``synth --sequences`` data set and a tiny random model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import save_tiny_efficientps

from panoptic_ros.camera_model import CameraCalibration
from panoptic_ros.cli import main
from panoptic_ros.data.coco_panoptic import read_panoptic_png
from panoptic_ros.data.sequences import read_depth_png
from panoptic_ros.evaluation.centroid import CentroidStat, centroid_frame
from panoptic_ros.geometry import backproject_image, intrinsics_from_calibration

VIDEO = "0_0000"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq")
    assert main(["synth", "--out", str(root), "--sequences", "1", "--frames", "3",
                 "--size", "96x128", "--image-format", "png"]) == 0
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_efficientps(tmp_path_factory.mktemp("ckpt") / "narrow.pt", seed=3,
                                 meta={"input_size": [96, 128]})


def test_infer_depth_adds_centroids_of_thing_segments(data, checkpoint, tmp_path):
    out = tmp_path / "out"
    assert main(["infer", "--weights", str(checkpoint), "--device", "cpu",
                 "--input", str(data / "images" / VIDEO), "--output", str(out),
                 "--depth", str(data / "depth" / VIDEO),
                 "--camera-info", str(data / "camera_info" / f"{VIDEO}.yaml")]) == 0
    pred = json.loads((out / "predictions.json").read_text())
    cam = intrinsics_from_calibration(
        CameraCalibration.read(data / "camera_info" / f"{VIDEO}.yaml"))
    things = {c["id"] for c in pred["categories"] if c["isthing"]}
    checked = 0
    for ann in pred["annotations"]:
        ids = read_panoptic_png(out / "predictions" / ann["file_name"])
        depth = read_depth_png(data / "depth" / VIDEO / f"{ann['image_id']:06d}.png")
        x, y = backproject_image(depth, cam)
        for seg in ann["segments_info"]:
            mask = (ids == seg["id"]) & np.isfinite(depth)
            if seg["category_id"] not in things or not mask.any():
                assert "centroid_m" not in seg
                continue
            want = [np.median(a[mask].astype(np.float64)) for a in (x, y, depth)]
            np.testing.assert_allclose(seg["centroid_m"], want, atol=1e-4)
            assert seg["valid_depth_fraction"] == pytest.approx(mask.sum() / seg["area"], abs=1e-6)
            assert 0 < seg["distance_m"] <= np.linalg.norm(want) + 1e-3
            checked += 1
    assert checked > 0


def test_infer_depth_needs_both_options_and_every_file(data, tmp_path, capsys):
    base = ["infer", "--input", str(data / "images" / VIDEO), "--output", str(tmp_path / "o")]
    assert main([*base, "--depth", str(data / "depth" / VIDEO)]) == 2
    assert "--depth and --camera-info go together" in capsys.readouterr().err
    assert main([*base, "--depth", str(data / "images"),
                 "--camera-info", str(data / "camera_info" / f"{VIDEO}.yaml")]) == 2
    assert "no depth PNG for 3 image(s)" in capsys.readouterr().err


def test_eval_centroid_error_of_ground_truth_against_itself_is_zero(data, capsys):
    gt = str(data / "panoptic.json")
    assert main(["eval", "--gt-json", gt, "--pred-json", gt, "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "3D centroid error of" in out and "median 0.000 m, p90 0.000 m" in out


def test_centroid_frame_matching_rules():
    gt_ids = np.zeros((4, 8), int)
    gt_ids[:, :4] = 1001
    gt_ids[:, 4:] = 1002
    pred_ids = np.zeros((4, 8), int)
    pred_ids[:, :3] = 7  # IoU 0.75 with 1001
    pred_ids[:, 4:6] = 8  # IoU 0.5 with 1002: not > 0.5
    gt = [{"id": 1001, "category_id": 1, "position_m": [0, 0, 2]},
          {"id": 1002, "category_id": 1, "position_m": [0, 0, 3]}]
    pred = [{"id": 7, "category_id": 1, "centroid_m": [0.3, 0, 2.4]},
            {"id": 8, "category_id": 1, "centroid_m": [0, 0, 3]}]
    stat = centroid_frame(gt_ids, gt, pred_ids, pred, {1})
    assert stat.matched == 1 and stat.errors == [pytest.approx(0.5)]
    assert centroid_frame(gt_ids, gt, pred_ids, [{**pred[0], "category_id": 2}, pred[1]],
                          {1, 2}).matched == 0
    total = CentroidStat()
    total += stat
    total += CentroidStat([20.0], [30.0], 1)
    res = total.results(max_range_m=15.0)
    assert res["matched"] == 2 and res["all"]["count"] == 2
    assert res["within"] == {"count": 1, "median_m": pytest.approx(0.5),
                             "p90_m": pytest.approx(0.5)}
