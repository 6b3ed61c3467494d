"""``panoptic-ros infer`` then ``panoptic-ros eval`` on its output, with no folder flags: the two
commands share the COCO panoptic rule (a JSON's PNGs lie in the folder named after it without
``.json``), and eval's PQ is the package's own on the same files."""

from __future__ import annotations

import json
import shutil

import pytest

from panoptic_ros.cli import main
from panoptic_ros.data.synthetic import write_synthetic_dataset
from panoptic_ros.evaluation.pq import format_results, pq_compute_files


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Three synthetic scenes (unseen seed), segmented by the bundled demo model."""
    root = tmp_path_factory.mktemp("roundtrip")
    gt_json = write_synthetic_dataset(root / "gt", 3, seed=4242, image_suffix=".png")
    out = root / "pred"
    rc = main(["infer", "--weights", "demo", "--input", str(root / "gt" / "images"),
               "--output", str(out), "--device", "cpu"])
    assert rc == 0
    return gt_json, out


def test_eval_reads_infer_output_with_no_folder_flags(round_trip, tmp_path, capsys):
    gt_json, out = round_trip
    capsys.readouterr()
    results_json = tmp_path / "results.json"
    rc = main(["eval", "--gt-json", str(gt_json), "--pred-json", str(out / "predictions.json"),
               "--out", str(results_json), "--workers", "1"])
    printed, err = capsys.readouterr()
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["predictions", "predictions.json"]
    # The package's evaluation on the same files, folders named explicitly.
    expected = pq_compute_files(gt_json, gt_json.parent / "panoptic",
                                out / "predictions.json", out / "predictions")
    assert expected["All"]["n"] >= 5  # categories scored
    assert expected["All"]["pq"] > 0.5  # real predictions of the demo model, not an empty set
    written = json.loads(results_json.read_text())
    for group in ("All", "Things", "Stuff"):
        assert written[group] == pytest.approx(expected[group], abs=1e-12)
    per_class = {int(k): v for k, v in written["per_class"].items()}
    assert per_class.keys() == expected["per_class"].keys()
    for category, scores in expected["per_class"].items():
        assert per_class[category] == pytest.approx(scores, abs=1e-12)
    assert format_results(expected) in printed  # the table printed is the same PQ


def test_eval_names_the_folder_it_tried_when_the_pngs_are_missing(round_trip, tmp_path,
                                                                   capsys):
    gt_json, out = round_trip
    moved = tmp_path / "pred"
    shutil.copytree(out, moved)
    shutil.move(moved / "predictions", moved / "elsewhere")
    rc = main(["eval", "--gt-json", str(gt_json), "--pred-json",
               str(moved / "predictions.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"prediction PNG folder not found: {moved / 'predictions'} (the --pred-json path " \
           f"without .json" in err and "give --pred-dir" in err
    rc = main(["eval", "--gt-json", str(gt_json), "--pred-json",
               str(moved / "predictions.json"), "--pred-dir", str(moved / "missing")])
    err = capsys.readouterr().err
    assert rc == 2 and f"prediction PNG folder not found: {moved / 'missing'} (given by " \
                       f"--pred-dir)" in err
    # With the folder named, the same files evaluate.
    rc = main(["eval", "--gt-json", str(gt_json), "--pred-json",
               str(moved / "predictions.json"), "--pred-dir", str(moved / "elsewhere")])
    assert rc == 0
