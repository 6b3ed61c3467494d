"""The Predictor on the CPU with a tiny random narrow EfficientPS: sizes, batches, weights,
settings, pretrained-backend options, release (``infer`` is in test_infer_cli.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import check, rgb, save_tiny_efficientps

from panoptic_ros.errors import ModelLoadError
from panoptic_ros.inference import DEMO_WEIGHTS, Predictor, PredictorConfig, fit_size, parse_device


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_efficientps(tmp_path_factory.mktemp("ckpt") / "narrow.pt", seed=7,
                                 meta={"input_size": [96, 128]})


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return Predictor(weights=str(checkpoint), device="cpu")




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


# -- pretrained-backend options ----------------------------------------------------------
def test_pretrained_options_are_mapped_in_one_place():
    config = PredictorConfig(backend="mask2former", weights="org/model", allow_download=True,
                             cache_dir="/cache", pretrained_label_set="cityscapes",
                             inference={"rules": "transformers", "score_threshold": 0.5})
    assert config.model_spec() == {"backend": "mask2former", "weights": "org/model",
                                   "allow_download": True, "cache_dir": "/cache",
                                   "label_set": "cityscapes"}
    assert config.inference_overrides() == {"score_threshold": 0.5, "rules": "transformers"}
    # Defaults are left out, so a registered backend that does not know them still builds.
    assert PredictorConfig(backend="other", weights="w").model_spec() == {
        "backend": "other", "weights": "w"}
    with pytest.raises(ValueError, match=r"\['allow_download'\] apply to pretrained"):
        PredictorConfig(allow_download=True)


def test_predictor_passes_pretrained_options(tiny_dir, tmp_path, monkeypatch):
    predictor = Predictor(backend="mask2former", weights=str(tiny_dir), device="cpu",
                          pretrained_label_set="custom",
                          inference={"rules": "transformers", "score_threshold": 0.0})
    assert predictor.label_set.name.startswith("custom")  # not the COCO table
    assert predictor.inference_params()["rules"] == "transformers"
    assert predictor.inference_params()["score_threshold"] == 0.0
    result = predictor(rgb(50, 70, 14))
    assert result.ids.shape == (50, 70)
    assert {s.category_id for s in result.segments} <= set(predictor.label_set.ids.tolist())
    # cache_dir reaches the loader: a hub id missing from that cache fails offline, naming it.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        Predictor(backend="mask2former", weights="nonexistent-org/nonexistent-model",
                  device="cpu", cache_dir=str(tmp_path))
    assert str(tmp_path) in str(err.value) and "allow_download" in str(err.value)
