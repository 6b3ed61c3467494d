"""EfficientPS network smoke tests with random weights (CPU, tiny images)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from panoptic_ros.categories import IGNORE_INDEX, synthetic
from panoptic_ros.errors import ModelLoadError
from panoptic_ros.models.checkpoint import (
    checkpoint_dict,
    load_checkpoint_file,
    load_model,
    save_checkpoint,
)
from panoptic_ros.models.efficientps import (
    EfficientPS,
    EfficientPSConfig,
    FusionConfig,
    load_config,
    ohem_cross_entropy,
)
from panoptic_ros.models.efficientps.backbone import EfficientNetBackbone
from panoptic_ros.models.registry import backend_names, build_model
from panoptic_ros.result import PanopticResult

LS = synthetic()
LOSS_KEYS = {"loss_semantic", "loss_objectness", "loss_rpn_box_reg", "loss_classifier",
             "loss_box_reg", "loss_mask"}
# Cheaper inference for tests: fewer proposals; "detect" = every detection passes.
FAST = {"rpn_pre_nms_test": 200, "rpn_post_nms_test": 50}
DETECT = {**FAST, "detection_score_threshold": 0.0, "detections_per_image": 8,
          "fusion": {"score_threshold": 0.0}}


def make(variant: str, seed: int = 0, **overrides) -> EfficientPS:
    torch.manual_seed(seed)
    return build_model("efficientps", EfficientPSConfig.from_dict(
        {"variant": variant, **overrides}), LS).eval()


def image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)


def check_result(res: PanopticResult, size) -> None:
    assert res.ids.shape == size and res.ids.dtype == np.int32
    cats = np.unique(res.semantic())
    assert set(cats.tolist()) <= {0, *LS.ids.tolist()}
    ref = PanopticResult.from_ids(res.ids, LS, res.label_divisor,
                                  scores={s.id: s.score for s in res.segments})
    assert res.segments == ref.segments
    for s in res.segments:
        assert s.is_thing == LS.is_thing(s.category_id)
        assert (s.instance_id >= 1) if s.is_thing else (s.instance_id == 0)
        assert 0.0 <= s.score <= 1.0


def toy_target(h: int, w: int, things: bool = True) -> dict[str, torch.Tensor]:
    """Sky over ground, a person and a car (training indices: stuff 0..4, things 5..8)."""
    sky, ground = LS.index_of(11), LS.index_of(12)
    semantic = torch.full((h, w), sky, dtype=torch.int64)
    semantic[h // 2:] = ground
    semantic[0, :] = IGNORE_INDEX
    boxes, labels, masks = [], [], []
    if things:
        for (x0, y0, x1, y1), cat in (((4, 10, 20, 40), 1), ((30, 30, 70, 50), 2)):
            m = torch.zeros((h, w), dtype=torch.uint8)
            m[y0:y1, x0:x1] = 1
            semantic[m.bool()] = LS.index_of(cat)
            boxes.append([x0, y0, x1, y1])
            labels.append(LS.index_of(cat) - LS.num_stuff + 1)
            masks.append(m)
    return {
        "semantic": semantic,
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.stack(masks) if masks else torch.zeros((0, h, w), dtype=torch.uint8),
    }


# -- inference -------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["narrow", "b0"])
def test_eval_odd_size_with_detections(variant):
    model = make(variant, **DETECT)
    with torch.inference_mode():
        res = model([image(200, 249)])
    assert len(res) == 1
    check_result(res[0], (200, 249))
    things = [s for s in res[0].segments if s.is_thing]
    assert things, "forced detections should produce thing segments"


def test_zero_detections_gives_stuff_only():
    model = make("narrow", **FAST)
    model.roi_heads.score_thresh = 1.0  # no softmax score exceeds 1
    with torch.inference_mode():
        _, detections = model.network(*model.preprocess([image(64, 80)]))
        res = model([image(64, 80)])[0]
    assert detections[0]["boxes"].shape == (0, 4)  # the fusion sees no instance at all
    check_result(res, (64, 80))
    assert all(not s.is_thing for s in res.segments)


def test_batch_of_two_sizes_and_output_sizes():
    model = make("narrow", **DETECT)
    with torch.inference_mode():
        res = model([image(200, 249, 1), image(96, 70, 2)], output_sizes=[(400, 498), (96, 70)])
    check_result(res[0], (400, 498))
    check_result(res[1], (96, 70))


def test_batch_tensor_with_image_sizes_equals_list_input():
    model = make("narrow", **DETECT)
    a, b = image(64, 96, 3), image(50, 70, 4)
    padded = torch.zeros((2, 3, 64, 96), dtype=torch.uint8)
    padded[0], padded[1, :, :50, :70] = a, b
    with torch.inference_mode():
        from_list = model([a, b])
        from_tensor = model(padded, image_sizes=[(64, 96), (50, 70)])
    for x, y in zip(from_list, from_tensor):
        np.testing.assert_array_equal(x.ids, y.ids)


def test_backbone_taps_have_strides_4_to_32_and_published_widths():
    net = EfficientNetBackbone("b0", 1.0, 1.0)
    feats = net(torch.zeros((1, 3, 64, 96)))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert net.out_channels == (24, 40, 112, 1280)
    assert [f.shape[1] for f in feats] == list(net.out_channels)
    assert EfficientNetBackbone("b5", 1.6, 2.2).out_channels == (40, 64, 176, 2048)


# -- training --------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["narrow", "b0"])
def test_training_step_finite_losses_and_backbone_gradients(variant):
    model = make(variant, roi_batch_size=64, rpn_batch_size=64).train()
    images = [image(64, 96, 5), image(72, 80, 6)]
    targets = [toy_target(64, 96), toy_target(72, 80, things=False)]
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert losses["loss_semantic"] > 0 and losses["loss_mask"] > 0
    sum(losses.values()).backward()
    stem = model.backbone.features[0][0].weight.grad
    assert stem is not None and torch.isfinite(stem).all() and stem.abs().sum() > 0
    mask_head = model.roi_heads.mask_head[-1].weight.grad
    assert mask_head is not None and mask_head.abs().sum() > 0


def test_training_targets_are_checked():
    model = make("narrow").train()
    bad = toy_target(64, 96)
    bad["labels"] = bad["labels"] + 10
    with pytest.raises(ValueError, match="labels must lie in 1..4"):
        model([image(64, 96)], [bad])
    with pytest.raises(ValueError, match="semantic must be Tensor"):
        model([image(64, 96)], [toy_target(32, 32)])
    with pytest.raises(ValueError, match="needs targets"):
        model([image(64, 96)])


def test_ohem_keeps_the_hardest_quarter_of_valid_pixels():
    logits = torch.zeros((1, 2, 1, 10))
    target = torch.zeros((1, 1, 10), dtype=torch.int64)
    logits[0, 1, 0, :8] = torch.arange(8.0)  # class-1 logit rises: loss on class 0 rises
    target[0, 0, 8:] = IGNORE_INDEX  # 8 valid pixels -> the top 2 count
    per_pixel = torch.nn.functional.cross_entropy(logits, target, reduction="none",
                                                  ignore_index=IGNORE_INDEX)[0, 0]
    expected = per_pixel[6:8].mean()
    assert torch.isclose(ohem_cross_entropy(logits, target, 0.25), expected)
    assert ohem_cross_entropy(logits, torch.full_like(target, IGNORE_INDEX), 0.25) == 0


# -- checkpoints, config, registry -----------------------------------------------------
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = make("narrow", seed=3, **DETECT)
    path = save_checkpoint(tmp_path / "m.pt", model, meta={"input_size": [64, 80]})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["backend"] == "efficientps" and raw["label_set"]["name"] == "synthetic"
    assert raw["meta"]["input_size"] == [64, 80]
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.label_set == LS
    assert loaded.checkpoint_meta["input_size"] == [64, 80]
    x = [image(70, 90, 9)]
    with torch.inference_mode():
        a, b = model(x)[0], loaded(x)[0]
    np.testing.assert_array_equal(a.ids, b.ids)
    assert a.segments == b.segments
    assert any(s.is_thing for s in a.segments)


def test_bad_checkpoints_raise_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="checkpoint not found"):
        load_model(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a zip file at all")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        load_checkpoint_file(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ModelLoadError, match="not a panoptic_ros checkpoint"):
        load_model(other)
    data = checkpoint_dict(make("narrow"))
    data["state_dict"].pop(next(iter(data["state_dict"])))
    torch.save(data, tmp_path / "partial.pt")
    with pytest.raises(ModelLoadError, match="weights do not fit"):
        load_model(tmp_path / "partial.pt")


def test_config_dict_and_yaml_round_trip(tmp_path):
    cfg = EfficientPSConfig.from_dict({"variant": "narrow", "head_norm": "bn",
                                       "fusion": {"strategy": "panoptic_fpn"}})
    assert cfg.fpn_channels == EfficientPSConfig.preset("narrow").fpn_channels
    assert cfg.fusion == FusionConfig(strategy="panoptic_fpn")
    assert EfficientPSConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"model": cfg.to_dict()}))
    assert load_config(path) == cfg
    with pytest.raises(ValueError, match=r"unknown model config keys \['fpn_width'\]"):
        EfficientPSConfig.from_dict({"fpn_width": 3})
    with pytest.raises(ValueError, match="variant must be one of"):
        EfficientPSConfig.from_dict({"variant": "b9"})
    with pytest.raises(ValueError, match="head_norm"):
        EfficientPSConfig(head_norm="ln")
    with pytest.raises(ValueError, match="fusion.strategy"):
        FusionConfig(strategy="x")


def test_norm_choices_build_and_run():
    for norm in ("bn", "gn", "frozen_bn"):
        model = make("narrow", backbone_norm=norm, head_norm=norm, **FAST)
        with torch.inference_mode():
            check_result(model([image(40, 52)])[0], (40, 52))


def test_imagenet_weights_from_a_torchvision_state_dict(tmp_path):
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.efficientnet_b0(weights=None)  # random, nothing fetched
    path = tmp_path / "b0.pth"
    torch.save(reference.state_dict(), path)
    net = EfficientNetBackbone("b0", 1.0, 1.0)
    assert net.load_imagenet(path) == path
    torch.testing.assert_close(net.features[3][0].block[0][0].weight,
                               reference.features[3][0].block[0][0].weight)
    with pytest.raises(ModelLoadError, match="not found"):
        net.load_imagenet(tmp_path / "none.pth")
    with pytest.raises(ModelLoadError, match="does not fit"):
        EfficientNetBackbone("b1", 1.0, 1.1).load_imagenet(path)


def test_torchvision_cache_is_only_read(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(ModelLoadError, match="not in torchvision's cache"):
            EfficientNetBackbone("b0", 1.0, 1.0).load_imagenet("torchvision")
        assert not any(tmp_path.iterdir())  # nothing was downloaded
    finally:
        torch.hub.set_dir(old)


def test_registry_and_live_fusion_settings():
    assert {"efficientps", "mask2former"} <= set(backend_names())
    model = build_model({"backend": "efficientps", "variant": "narrow", "label_set": "synthetic"})
    assert isinstance(model, EfficientPS) and model.label_set == LS
    with pytest.raises(ValueError, match="unknown model backend"):
        build_model("yolo")
    with pytest.raises(ValueError, match="needs a label_set"):
        build_model("efficientps", EfficientPSConfig.preset("narrow"))
    model.set_inference_params(score_threshold=0.7, strategy="panoptic_fpn")
    assert model.inference_params()["score_threshold"] == 0.7
    assert model.fusion_config.strategy == "panoptic_fpn"
    with pytest.raises(ValueError, match="unknown inference parameter"):
        model.set_inference_params(mask_threshold=0.3)
    before = model.fusion_config
    with pytest.raises(ValueError):
        model.set_inference_params(score_threshold=2.0)
    assert model.fusion_config == before
    model.label_divisor = 10000
    assert model.config.label_divisor == 10000
    assert dataclasses.asdict(model.fusion_config)["strategy"] == "panoptic_fpn"
