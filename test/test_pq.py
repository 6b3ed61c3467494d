"""PQ: hand-built cases with known answers, and parity with panopticapi and hotcoco."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from panoptic_ros.data.coco_panoptic import read_panoptic_png, write_panoptic_png
from panoptic_ros.evaluation.pq import PQError, PQStat, pq_compute_files, pq_image

CATS = {1: {"id": 1, "isthing": 1}, 2: {"id": 2, "isthing": 1}, 10: {"id": 10, "isthing": 0}}


def seg(i, c, area=None, crowd=0):
    return {"id": i, "category_id": c, "iscrowd": crowd, **({"area": area} if area else {})}


def gt_info(ids, segs):
    """Ground-truth segments with their areas measured from the map."""
    return [{**s, "area": int((ids == s["id"]).sum())} for s in segs]


# ---------------------------------------------------------------------------------------------
# Hand-built cases
# ---------------------------------------------------------------------------------------------
def test_perfect_match_and_strict_threshold():
    gt = np.zeros((4, 4), int)
    gt[:, :2] = 5
    gt[:, 2:] = 6
    g = gt_info(gt, [seg(5, 1), seg(6, 10)])
    stat = pq_image(gt, g, gt, [seg(5, 1), seg(6, 10)])
    assert stat[1].tp == 1 and stat[1].iou == 1.0 and stat[10].tp == 1
    # IoU exactly 0.5 does not match (strict >): 4 of 8 pixels.
    pred = np.zeros((4, 4), int)
    pred[:, 1:3] = 7
    pred[:, 0] = 8
    pred[:, 3] = 9
    stat = pq_image(gt, g, pred, [seg(7, 1), seg(8, 2), seg(9, 2)])
    assert (stat[1].tp, stat[1].fn, stat[1].fp) == (0, 1, 1)


def test_void_is_removed_from_union_and_exempts_false_positives():
    gt = np.zeros((4, 10), int)
    gt[:, :4] = 5  # 16 px person, the rest void
    g = gt_info(gt, [seg(5, 1)])
    pred = np.zeros((4, 10), int)
    pred[:, :8] = 7  # 16 px on the person, 16 px on void
    stat = pq_image(gt, g, pred, [seg(7, 1)])
    # union = 32 + 16 - 16 - 16 (void part) = 16 -> IoU 1.0
    assert stat[1].tp == 1 and stat[1].iou == pytest.approx(1.0)
    # A prediction mostly on void is not a false positive.
    pred2 = np.zeros((4, 10), int)
    pred2[:, 5:] = 8
    stat = pq_image(gt, g, pred2, [seg(8, 2)])
    assert stat[2].fp == 0 and stat[1].fn == 1


def test_crowd_never_matched_never_fn_and_exempts_same_category():
    gt = np.zeros((4, 8), int)
    gt[:, :4] = 5  # crowd of persons
    gt[:, 4:] = 6  # stuff
    g = gt_info(gt, [seg(5, 1, crowd=1), seg(6, 10)])
    pred = np.zeros((4, 8), int)
    pred[:, :4] = 7
    pred[:, 4:] = 8
    stat = pq_image(gt, g, pred, [seg(7, 1), seg(8, 10)])
    assert (stat[1].tp, stat[1].fn, stat[1].fp) == (0, 0, 0)  # exempt: on crowd of its class
    stat = pq_image(gt, g, pred, [seg(7, 2), seg(8, 10)])
    assert stat[2].fp == 1  # another class on the crowd region is a false positive


def test_gt_area_comes_from_json():
    gt = np.zeros((2, 4), int)
    gt[:, :2] = 5
    pred = gt.copy()
    # JSON says 8 px although the PNG has 4: IoU = 4 / (4 + 8 - 4) = 0.5 -> no match.
    stat = pq_image(gt, [seg(5, 1, area=8)], pred, [seg(5, 1)])
    assert stat[1].tp == 0 and stat[1].fn == 1 and stat[1].fp == 1


def test_png_json_disagreement_raises():
    gt = np.zeros((2, 2), int)
    pred = np.array([[0, 3], [4, 4]])
    with pytest.raises(PQError, match="presented in PNG and not presented in JSON"):
        pq_image(gt, [], pred, [seg(3, 1)])
    with pytest.raises(PQError, match="presented in JSON and not presented in PNG"):
        pq_image(gt, [], pred, [seg(3, 1), seg(4, 1), seg(9, 1)])
    with pytest.raises(PQError, match="unknown category_id 77"):
        pq_image(gt, [], pred, [seg(3, 1), seg(4, 77)], categories=CATS)
    with pytest.raises(PQError, match="prediction is"):
        pq_image(gt, [], np.zeros((3, 2), int), [])


def test_results_shape_and_averages():
    stat = PQStat()
    stat[1].tp, stat[1].iou, stat[1].fp = 2, 1.6, 1
    stat[10].fn = 1
    res = stat.results(CATS)
    assert set(res) == {"All", "Things", "Stuff", "per_class"}
    assert set(res["per_class"]) == {1, 2, 10}
    assert res["per_class"][1]["pq"] == pytest.approx(1.6 / 2.5)
    assert res["per_class"][1]["sq"] == pytest.approx(0.8)
    assert res["per_class"][2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert res["Things"]["n"] == 1 and res["Stuff"]["n"] == 1 and res["All"]["n"] == 2
    assert res["All"]["pq"] == pytest.approx((1.6 / 2.5 + 0.0) / 2)


def test_accumulator_merges():
    a, b = PQStat(), PQStat()
    a[1].tp, a[1].iou = 1, 0.9
    b[1].tp, b[1].iou, b[2].fn = 2, 1.5, 3
    c = a + b
    assert (c[1].tp, c[1].iou, c[2].fn) == (3, pytest.approx(2.4), 3)
    a += b
    assert a[1].tp == 3


# ---------------------------------------------------------------------------------------------
# Parity on the real COCO sample with perturbed predictions
# ---------------------------------------------------------------------------------------------
def perturb(kind: str, gt: np.ndarray, segs: list[dict], rng) -> tuple[np.ndarray, list[dict]]:
    """A prediction (segment id map, segments_info) derived from ground truth."""
    pred = gt.copy()
    info = [{"id": s["id"], "category_id": s["category_id"]} for s in segs]
    things = sorted({s["category_id"] for s in segs if s["category_id"] < 92})
    if kind == "shifted":
        pred = np.roll(gt, (5, 9), axis=(0, 1))
    elif kind == "eroded":
        edge = np.zeros_like(gt, bool)
        edge[1:] |= gt[1:] != gt[:-1]
        edge[:, 1:] |= gt[:, 1:] != gt[:, :-1]
        edge = np.maximum.reduce([np.roll(edge, s, a) for s in (-2, 0, 2) for a in (0, 1)])
        pred[edge] = 0
    elif kind == "relabel":
        for k, s in enumerate(info):
            if k % 3 == 0:
                s["category_id"] = things[(things.index(s["category_id"]) + 1) % len(things)] \
                    if s["category_id"] in things else 193
    elif kind == "merged":
        by_cat: dict[int, list[dict]] = {}
        for s in info:
            by_cat.setdefault(s["category_id"], []).append(s)
        for group in by_cat.values():
            for a, b in zip(group[0::2], group[1::2]):
                pred[pred == b["id"]] = a["id"]
                info.remove(b)
    elif kind == "dropped":
        for s in info[::2]:
            pred[pred == s["id"]] = 0
        info = info[1::2]
    elif kind == "spurious":
        void = np.argwhere(gt == 0)
        next_id = int(gt.max()) + 1
        for k in range(6):
            y, x = rng.integers(0, gt.shape[0] - 40), rng.integers(0, gt.shape[1] - 40)
            if k == 0 and len(void):  # a box centred on void
                y = int(np.clip(void[len(void) // 2][0] - 10, 0, gt.shape[0] - 20))
                x = int(np.clip(void[len(void) // 2][1] - 10, 0, gt.shape[1] - 20))
            h, w = rng.integers(8, 40, size=2)
            pred[y:y + h, x:x + w] = next_id
            info.append({"id": next_id, "category_id": int(rng.choice(things + [184]))})
            next_id += 1
        present = set(np.unique(pred).tolist())
        info = [s for s in info if s["id"] in present]
    elif kind == "coarse":  # boundaries at 1/12 resolution, small segments vanish
        h, w = gt.shape
        small = gt[6::12, 6::12]
        pred = np.repeat(np.repeat(small, 12, axis=0), 12, axis=1)[:h, :w]
        pred = np.pad(pred, ((0, h - pred.shape[0]), (0, w - pred.shape[1])), mode="edge")
        present = set(np.unique(pred).tolist())
        info = [s for s in info if s["id"] in present]
    elif kind != "identity":
        raise ValueError(kind)
    return pred, info


KINDS = ["identity", "shifted", "eroded", "relabel", "merged", "dropped", "spurious", "coarse"]


@pytest.fixture(scope="module")
def prediction_sets(coco_sample, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    gt_json = json.loads((coco_sample / "panoptic_examples.json").read_text())
    rng = np.random.default_rng(0)
    out = {}
    for kind in KINDS:
        folder = tmp_path_factory.mktemp(kind)
        anns = []
        for ann in gt_json["annotations"]:
            gt = read_panoptic_png(coco_sample / ann["file_name"])
            pred, info = perturb(kind, gt, ann["segments_info"], rng)
            write_panoptic_png(folder / "pred" / ann["file_name"], pred)
            anns.append({"image_id": ann["image_id"], "file_name": ann["file_name"],
                         "segments_info": info})
        (folder / "pred.json").write_text(json.dumps(
            {"annotations": anns, "categories": gt_json["categories"]}))
        out[kind] = (folder / "pred.json", folder / "pred")
    return out


def assert_same(ours: dict, ref: dict, skip_empty_classes: bool = False) -> None:
    for name in ("All", "Things", "Stuff"):
        for key in ("pq", "sq", "rq"):
            assert ours[name][key] == pytest.approx(ref[name][key], abs=1e-9), (name, key)
        assert ours[name]["n"] == ref[name]["n"], name
    ref_pc = {int(k): v for k, v in ref["per_class"].items()}
    for cat, vals in ours["per_class"].items():
        if skip_empty_classes and ref_pc[cat]["pq"] == -1.0:
            assert vals == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            continue
        for key in ("pq", "sq", "rq"):
            assert vals[key] == pytest.approx(ref_pc[cat][key], abs=1e-9), (cat, key)


@pytest.mark.parametrize("kind", KINDS)
def test_parity_with_panopticapi(kind, prediction_sets, coco_sample, capsys):
    from panopticapi import evaluation

    pred_json, pred_dir = prediction_sets[kind]
    gt_json = coco_sample / "panoptic_examples.json"
    ours = pq_compute_files(gt_json, coco_sample, pred_json, pred_dir)
    ref = evaluation.pq_compute(str(gt_json), str(pred_json), str(coco_sample), str(pred_dir))
    assert_same(ours, ref)
    if kind == "identity":
        assert ours["All"]["pq"] == 1.0
    else:
        assert ours["All"]["pq"] < 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_parity_with_hotcoco(kind, prediction_sets, coco_sample):
    from hotcoco import panoptic

    pred_json, pred_dir = prediction_sets[kind]
    gt_json = coco_sample / "panoptic_examples.json"
    ours = pq_compute_files(gt_json, coco_sample, pred_json, pred_dir, workers=2)
    ev = panoptic.PanopticEval(str(gt_json), str(pred_json), gt_folder=str(coco_sample),
                               pred_folder=str(pred_dir))
    ev.evaluate()
    assert_same(ours, ev.results(), skip_empty_classes=True)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "panoptic_ros.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_eval_cli_prints_table_and_writes_json(prediction_sets, coco_sample, tmp_path):
    pred_json, pred_dir = prediction_sets["shifted"]
    gt_json = coco_sample / "panoptic_examples.json"
    out = tmp_path / "res" / "results.json"
    p = cli("eval", "--gt-json", str(gt_json), "--gt-dir", str(coco_sample),
            "--pred-json", str(pred_json), "--pred-dir", str(pred_dir), "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "All" in p.stdout and "Things" in p.stdout and "Stuff" in p.stdout
    written = json.loads(out.read_text())
    expected = pq_compute_files(gt_json, coco_sample, pred_json, pred_dir)
    assert written["All"] == pytest.approx(expected["All"])
    assert {int(k) for k in written["per_class"]} == set(expected["per_class"])
    assert f"{100 * expected['All']['pq']:5.1f}" in p.stdout


def test_eval_cli_errors_are_one_line(tmp_path, coco_sample):
    gt_json = coco_sample / "panoptic_examples.json"
    p = cli("eval", "--gt-json", str(tmp_path / "missing.json"), "--pred-json", str(gt_json))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().count("\n") == 0 and "not found" in p.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    p = cli("eval", "--gt-json", str(gt_json), "--gt-dir", str(coco_sample),
            "--pred-json", str(bad), "--pred-dir", str(coco_sample))
    assert p.returncode == 2 and "not valid JSON" in p.stderr and "Traceback" not in p.stderr
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"annotations": []}))
    p = cli("eval", "--gt-json", str(gt_json), "--gt-dir", str(coco_sample),
            "--pred-json", str(empty), "--pred-dir", str(coco_sample))
    assert p.returncode == 2 and "no prediction for the image with id: 142238" in p.stderr
    p = cli("eval", "--gt-json", str(gt_json), "--gt-dir", str(coco_sample),
            "--pred-json", str(gt_json), "--pred-dir", str(coco_sample), "--workers", "0")
    assert p.returncode == 2 and "--workers must be at least 1" in p.stderr
