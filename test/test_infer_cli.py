"""``panoptic-ros infer``: files the COCO reader reads back, network input size, the
pretrained backends' options, and one-line errors for bad arguments."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from helpers import LS, rgb, save_tiny_efficientps

from panoptic_ros.categories import coco_panoptic
from panoptic_ros.cli import main
from panoptic_ros.data.coco_panoptic import CocoPanopticDataset, read_image, write_image
from panoptic_ros.inference import Predictor


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_efficientps(tmp_path_factory.mktemp("ckpt") / "narrow.pt", seed=7,
                                 meta={"input_size": [96, 128]})


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return Predictor(weights=str(checkpoint), device="cpu")


def test_infer_cli_writes_files_the_coco_reader_reads_back(checkpoint, predictor, tmp_path):
    images = {"7": rgb(90, 110, 4), "frame_a": rgb(70, 100, 5)}
    src = tmp_path / "in"
    for stem, img in images.items():
        write_image(src / f"{stem}.png", img)
    out = tmp_path / "out"
    rc = main(["infer", "--weights", str(checkpoint), "--input", str(src), "--output", str(out),
               "--device", "cpu"])
    assert rc == 0
    data = json.loads((out / "predictions.json").read_text())
    assert sorted((a["image_id"] for a in data["annotations"]), key=str) == [7, "frame_a"]
    assert {c["id"] for c in data["categories"]} == set(LS.ids.tolist())
    assert sorted(p.name for p in (out / "predictions").iterdir()) == \
        ["000000000007.png", "frame_a.png"]  # PNGs in the JSON's folder, as COCO names it
    dataset = CocoPanopticDataset(out / "predictions.json", png_dir=out / "predictions",
                                  label_set=LS)
    for image_id, stem in ((7, "7"), ("frame_a", "frame_a")):
        expected = predictor(images[stem])
        back = dataset.load_result(image_id)
        np.testing.assert_array_equal(back.ids, expected.ids)
        assert [(s.id, s.area, s.bbox) for s in back.segments] == \
            [(s.id, s.area, s.bbox) for s in expected.segments]


def test_infer_cli_single_image_and_input_size(checkpoint, tmp_path):
    write_image(tmp_path / "cam.jpg", rgb(48, 64, 6))
    rc = main(["infer", "--weights", str(checkpoint), "--input", str(tmp_path / "cam.jpg"),
               "--output", str(tmp_path / "o"), "--device", "cpu", "--input-size", "32x48"])
    assert rc == 0
    data = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert data["images"][0] == {"id": "cam", "file_name": "cam.jpg", "height": 48, "width": 64}
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == \
        ["predictions", "predictions.json"]
    # The ids are what the Predictor gives at that network input size (not the model's own).
    png = cv2.cvtColor(cv2.imread(str(tmp_path / "o" / "predictions" / "cam.png")),
                       cv2.COLOR_BGR2RGB).astype(np.int64)
    ids = png[..., 0] + 256 * png[..., 1] + 65536 * png[..., 2]
    image = read_image(tmp_path / "cam.jpg")
    sized = Predictor(weights=str(checkpoint), device="cpu", input_size=(32, 48))(image)
    np.testing.assert_array_equal(ids, sized.ids)
    own = Predictor(weights=str(checkpoint), device="cpu")(image)
    assert not np.array_equal(own.ids, sized.ids)  # the flag made a difference


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "{tmp}/missing"], "input not found: {tmp}/missing"),
        (["--input", "{tmp}"], "no images"),
        (["--input", "{tmp}/a.png", "--input-size", "big"], "--input-size must be HxW"),
        (["--input", "{tmp}/a.png", "--weights", "{tmp}/none.pt"],
         "cannot load the model: checkpoint not found"),
    ],
)
def test_infer_cli_bad_paths_exit_2_with_one_line(tmp_path, capsys, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    write_image(empty / "a.png", rgb(8, 8))
    (empty / "a.png").rename(tmp_path / "a.png")
    args = [a.format(tmp=empty if a == "{tmp}" else tmp_path) for a in args]
    rc = main(["infer", "--output", str(tmp_path / "out"), "--device", "cpu", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("panoptic-ros infer: error: ")
    assert message.format(tmp=tmp_path) in err


def test_infer_cli_with_mask2former_backend(tiny_dir, tmp_path):
    images = {"11": rgb(60, 90, 15), "12": rgb(80, 64, 16)}
    src = tmp_path / "in"
    for stem, img in images.items():
        write_image(src / f"{stem}.png", img)
    out = tmp_path / "out"
    rc = main(["infer", "--backend", "mask2former", "--weights", str(tiny_dir),
               "--input", str(src), "--output", str(out), "--device", "cpu",
               "--label-set", "coco", "--rules", "mask2former", "--score-threshold", "0"])
    assert rc == 0
    data = json.loads((out / "predictions.json").read_text())
    coco = coco_panoptic()
    assert [c["id"] for c in data["categories"]] == coco.ids.tolist()
    assert sorted(a["image_id"] for a in data["annotations"]) == [11, 12]
    dataset = CocoPanopticDataset(out / "predictions.json", png_dir=out / "predictions",
                                  label_set=coco)
    predictor = Predictor(backend="mask2former", weights=str(tiny_dir), device="cpu",
                          pretrained_label_set="coco", inference={"score_threshold": 0.0})
    segments = 0
    for stem, image in images.items():
        expected = predictor(image)
        back = dataset.load_result(int(stem))
        assert back.ids.shape == image.shape[:2]
        np.testing.assert_array_equal(back.ids, expected.ids)
        assert [(s.id, s.area) for s in back.segments] == \
            [(s.id, s.area) for s in expected.segments]
        segments += len(back.segments)
    assert segments > 0  # the random model's queries passed the zero score threshold


def test_infer_cli_rejects_pretrained_options_for_efficientps(tmp_path, capsys):
    write_image(tmp_path / "a.png", rgb(8, 8))
    rc = main(["infer", "--input", str(tmp_path / "a.png"), "--output", str(tmp_path / "o"),
               "--device", "cpu", "--allow-download"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "['allow_download'] apply to pretrained backends (mask2former)" in err
