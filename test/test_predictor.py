"""Predictor and ``panoptic-ros infer`` on CPU with a tiny random narrow EfficientPS."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from panoptic_ros.categories import synthetic
from panoptic_ros.cli import main
from panoptic_ros.data.coco_panoptic import CocoPanopticDataset, read_image, write_image
from panoptic_ros.errors import ModelLoadError
from panoptic_ros.inference import DEMO_WEIGHTS, Predictor, PredictorConfig, fit_size, parse_device
from panoptic_ros.models.checkpoint import save_checkpoint
from panoptic_ros.models.efficientps import EfficientPSConfig
from panoptic_ros.models.registry import build_model
from panoptic_ros.result import PanopticResult

LS = synthetic()
# Every detection passes, so that thing segments appear with random weights.
DETECT = {"variant": "narrow", "rpn_pre_nms_test": 200, "rpn_post_nms_test": 50,
          "detection_score_threshold": 0.0, "detections_per_image": 6,
          "fusion": {"score_threshold": 0.0}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(7)
    model = build_model("efficientps", EfficientPSConfig.from_dict(DETECT), LS)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "narrow.pt", model,
                           meta={"input_size": [96, 128]})


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return Predictor(weights=str(checkpoint), device="cpu")


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (90, 140, 220)
    img[h // 2:] = (110, 90, 70)
    img[h // 3: h // 3 + h // 4, w // 4: w // 2] = (220, 40, 40)
    return np.clip(img + rng.integers(0, 30, img.shape), 0, 255).astype(np.uint8)


def check(result: PanopticResult, shape) -> None:
    assert isinstance(result, PanopticResult)
    assert result.ids.shape == shape and result.ids.dtype == np.int32
    cats, insts = result.semantic(), result.instances()
    assert set(np.unique(cats).tolist()) <= {0, *LS.ids.tolist()}
    stuff = np.isin(cats, [c.id for c in LS.stuff])
    assert (insts[stuff] == 0).all()
    assert (insts[np.isin(cats, [c.id for c in LS.things])] >= 1).all()
    ref = PanopticResult.from_ids(result.ids, LS, result.label_divisor,
                                  scores={s.id: s.score for s in result.segments})
    assert result.segments == ref.segments


def test_output_at_exact_input_size_with_things(predictor):
    assert predictor.input_size == (96, 128)  # from the checkpoint's meta
    result = predictor(rgb(200, 249))
    check(result, (200, 249))
    assert any(s.is_thing for s in result.segments)
    assert sum(s.area for s in result.segments) == int((result.ids != 0).sum())


def test_batches_list_array_and_tensor(predictor):
    a, b = rgb(120, 90, 1), rgb(64, 200, 2)
    results = predictor([a, b])
    assert [r.ids.shape for r in results] == [(120, 90), (64, 200)]
    for r in results:
        check(r, r.ids.shape)
    # Same padded batch size -> same output (padding differs between a and [a, b]).
    single = predictor(a)
    stacked = predictor(np.stack([a, a]))
    assert isinstance(stacked, list) and len(stacked) == 2
    np.testing.assert_array_equal(stacked[0].ids, single.ids)
    np.testing.assert_array_equal(stacked[1].ids, single.ids)
    from_tensor = predictor(torch.from_numpy(a))
    np.testing.assert_array_equal(from_tensor.ids, single.ids)


def test_native_size_matches_the_model_itself(checkpoint):
    predictor = Predictor(weights=str(checkpoint), device="cpu", input_size=(75, 101))
    image = rgb(75, 101, 3)
    with torch.inference_mode():
        direct = predictor.model([torch.from_numpy(image).permute(2, 0, 1)])[0]
    result = predictor(image)
    np.testing.assert_array_equal(result.ids, direct.ids)
    assert result.segments == direct.segments


@pytest.mark.parametrize(
    ("bad", "got"),
    [
        ("image.png", "got str"),
        (np.zeros((10, 10, 3), np.float32), "got ndarray float32 of shape (10, 10, 3)"),
        (np.zeros((10, 10), np.uint8), "got ndarray uint8 of shape (10, 10)"),
        (np.zeros((10, 10, 4), np.uint8), "got ndarray uint8 of shape (10, 10, 4)"),
        (np.zeros((0, 10, 3), np.uint8), "got ndarray uint8 of shape (0, 10, 3)"),
        ([], "got an empty list"),
        ([np.zeros((8, 8, 3), np.uint8), None], "got NoneType (item 1)"),
        (torch.zeros((3, 8, 8), dtype=torch.uint8), "got Tensor torch.uint8 of shape (3, 8, 8)"),
    ],
)
def test_bad_inputs_raise_value_error_naming_both_sides(predictor, bad, got):
    with pytest.raises(ValueError) as err:
        predictor(bad)
    assert "expected a uint8 RGB image [H, W, 3]" in str(err.value)
    assert got in str(err.value)


def test_demo_weights_loaded():
    assert DEMO_WEIGHTS.is_file()  # shipped in the package
    assert Predictor(device="cpu").label_set.name == "synthetic"


def test_demo_weights_missing_fail_with_the_path(tmp_path, monkeypatch):
    import panoptic_ros.models

    missing = tmp_path / "gone" / "demo.pt"
    monkeypatch.setattr(panoptic_ros.models, "DEMO_WEIGHTS", missing)
    with pytest.raises(ModelLoadError, match=f"bundled demo model not found at {missing}"):
        Predictor(device="cpu")


def test_bad_weights_raise_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="checkpoint not found"):
        Predictor(weights=str(tmp_path / "none.pt"), device="cpu")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        Predictor(weights=str(bad), device="cpu")


def test_random_init_settings():
    torch.manual_seed(0)
    p = Predictor(weights=None, variant="narrow", label_set="cityscapes", device="cpu",
                  input_size=64, inference={"stuff_area": 0}, label_divisor=10000)
    assert p.label_set.name == "cityscapes" and p.input_size == 64
    result = p(rgb(80, 120))
    assert result.ids.shape == (80, 120) and result.label_divisor == 10000
    assert set(np.unique(result.ids // 10000)) <= {0, *p.label_set.ids.tolist()}
    with pytest.raises(ValueError, match="unknown inference parameter"):
        p.set_inference_params(threshold=0.1)
    p.release()
    with pytest.raises(RuntimeError, match="released"):
        p(rgb(8, 8))


def test_live_settings_change_the_output_and_reset(checkpoint):
    """A live change gives what a Predictor built with that setting gives; None / reset
    restore the model's own value (and its output)."""
    image = rgb(96, 128, 3)
    p = Predictor(weights=str(checkpoint), device="cpu")
    own = p(image)
    assert any(s.is_thing for s in own.segments)  # every detection passes (score 0)
    p.set_inference_params(score_threshold=1.0, strategy="panoptic_fpn")
    strict = p(image)
    assert not any(s.is_thing for s in strict.segments)
    fresh = Predictor(weights=str(checkpoint), device="cpu",
                      inference={"score_threshold": 1.0, "strategy": "panoptic_fpn"})
    np.testing.assert_array_equal(strict.ids, fresh(image).ids)
    p.set_inference_params(score_threshold=None)
    assert p.inference_params()["score_threshold"] == 0.0
    assert p.inference_params()["strategy"] == "panoptic_fpn"
    p.reset_inference_params()
    assert p.inference_params() == {p_.name: p_.default for p_ in p.live_params()}
    np.testing.assert_array_equal(p(image).ids, own.ids)
    with pytest.raises(ValueError, match=r"score_threshold must lie in \[0, 1\]"):
        p.set_inference_params(score_threshold=1.5)
    assert p.inference_params()["score_threshold"] == 0.0  # nothing changed


def test_bf16_precision_on_cpu(checkpoint):
    result = Predictor(weights=str(checkpoint), device="cpu", precision="bf16")(rgb(60, 70))
    check(result, (60, 70))


def test_config_checks_and_sizes():
    with pytest.raises(ValueError, match="precision"):
        PredictorConfig(precision="int8")
    with pytest.raises(ValueError, match="input_size"):
        PredictorConfig(input_size=(0, 3))
    with pytest.raises(ValueError, match="device must be"):
        PredictorConfig(device="gpu")
    assert PredictorConfig(input_size=[256, 320]).input_size == (256, 320)
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            parse_device("cuda:0")
    assert fit_size(480, 640, 256) == (256, 341)
    assert fit_size(480, 640, (256, 320)) == (240, 320)
    assert fit_size(480, 640, None) == (480, 640)


# -- CLI -------------------------------------------------------------------------------
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


def test_release_frees_the_model_without_outside_help():
    """GPU readiness 1: after release() nothing keeps the model alive (on a GPU its memory
    would otherwise stay allocated when the cache is emptied)."""
    import gc
    import weakref

    p = Predictor(weights=None, variant="narrow", label_set="synthetic", device="cpu",
                  input_size=64)
    p(rgb(48, 64))
    ref = weakref.ref(p.model)
    gc.disable()  # the proof must not depend on a collection that happens to run
    try:
        p.release()
        assert ref() is None
    finally:
        gc.enable()
    with pytest.raises(RuntimeError, match="released"):
        p(rgb(48, 64))
