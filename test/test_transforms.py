"""Augmentations keep image, masks, boxes and semantics consistent (data.transforms)."""

from __future__ import annotations

import numpy as np
import pytest

from panoptic_ros.categories import synthetic
from panoptic_ros.data.dataset import panoptic_targets, result_segments_info
from panoptic_ros.data.synthetic import SceneConfig, generate_scene, scene_rng
from panoptic_ros.data.transforms import (
    DEFAULT_FILL,
    Compose,
    PanopticSample,
    PhotometricJitter,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    as_rng,
    crop_sample,
    training_transforms,
)

LABELS = synthetic()


def _scene_sample(seed: int) -> PanopticSample:
    scene = generate_scene(scene_rng(seed, 0), SceneConfig(height=96, width=128, min_things=4))
    return PanopticSample(scene.image, scene.result.ids, result_segments_info(scene.result), seed)


def _mask_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def _check_consistent(sample: PanopticSample) -> dict:
    t = panoptic_targets(sample.segment_ids, sample.segments_info, LABELS)
    masks, boxes, labels = t["masks"].numpy(), t["boxes"].numpy(), t["labels"].numpy()
    semantic = t["semantic"].numpy()
    assert masks.shape[1:] == semantic.shape == sample.image.shape[:2]
    assert len(masks) == len(boxes) == len(labels)
    if len(masks):
        assert masks.sum(axis=0).max() <= 1  # instances never overlap
    for mask, box, label in zip(masks, boxes, labels):
        assert mask.any()
        assert box.tolist() == _mask_box(mask)
        assert (semantic[mask.astype(bool)] == LABELS.num_stuff + label - 1).all()
    thing_pixels = (semantic >= LABELS.num_stuff) & (semantic != 255)
    np.testing.assert_array_equal(thing_pixels, masks.any(axis=0) if len(masks) else False)
    return t


@pytest.mark.parametrize("seed", range(6))
def test_random_scale_crop_flip_consistent(seed):
    sample = _scene_sample(seed)
    before = {int(v) for v in np.unique(sample.segment_ids)}
    aug = training_transforms(crop=(64, 80), scale=(0.5, 2.0))
    out = aug(sample, np.random.default_rng(seed))
    assert out.image.shape == (64, 80, 3) and out.segment_ids.shape == (64, 80)
    # Nearest-neighbour on ids: no blended values, only originals and void padding.
    assert {int(v) for v in np.unique(out.segment_ids)} <= before | {0}
    _check_consistent(out)
    # Same generator state, same result.
    again = aug(sample, np.random.default_rng(seed))
    np.testing.assert_array_equal(out.image, again.image)
    np.testing.assert_array_equal(out.segment_ids, again.segment_ids)


def test_flip_known_pattern():
    image = np.zeros((3, 4, 3), np.uint8)
    image[..., 0] = np.arange(12).reshape(3, 4)
    ids = np.array([[1, 1, 2, 0], [1, 1, 2, 2], [3, 3, 3, 3]], np.int32)
    info = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 4},
            {"id": 3, "category_id": 12}]
    sample = PanopticSample(image, ids, info)
    out = RandomHorizontalFlip(p=1.0)(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(out.image[..., 0], [[3, 2, 1, 0], [7, 6, 5, 4],
                                                      [11, 10, 9, 8]])
    np.testing.assert_array_equal(out.segment_ids, [[0, 2, 1, 1], [2, 2, 1, 1], [3, 3, 3, 3]])
    t = _check_consistent(out)
    assert t["boxes"].tolist() == [[2, 0, 4, 2], [0, 0, 2, 2]]  # person, ball
    assert t["labels"].tolist() == [1, 4]
    assert t["semantic"].tolist() == [[255, 8, 5, 5], [8, 8, 5, 5], [1, 1, 1, 1]]
    same = RandomHorizontalFlip(p=0.0)(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(same.segment_ids, ids)
    np.testing.assert_array_equal(sample.segment_ids, ids)  # input untouched


def test_crop_drops_vanished_instances_and_recomputes_boxes():
    image = np.full((10, 10, 3), 90, np.uint8)
    ids = np.full((10, 10), 5, np.int32)
    ids[1:4, 1:4] = 1  # a box in the top-left corner
    ids[5:9, 4:9] = 2  # a car, partly inside the crop below
    info = [{"id": 5, "category_id": 12}, {"id": 1, "category_id": 3},
            {"id": 2, "category_id": 2}]
    out = crop_sample(PanopticSample(image, ids, info), top=6, left=3, height=4, width=5)
    t = _check_consistent(out)
    assert t["labels"].tolist() == [2]
    assert t["boxes"].tolist() == [[1, 0, 5, 3]]


def test_crop_pads_small_images_with_fill_and_void():
    image = np.full((3, 4, 3), 10, np.uint8)
    ids = np.ones((3, 4), np.int32)
    info = [{"id": 1, "category_id": 4}]
    out = RandomCrop(5, 6)(PanopticSample(image, ids, info), np.random.default_rng(0))
    assert out.image.shape == (5, 6, 3)
    assert (out.image[3:] == DEFAULT_FILL).all() and (out.image[:, 4:] == DEFAULT_FILL).all()
    assert (out.image[:3, :4] == 10).all()
    t = _check_consistent(out)
    assert (t["semantic"][3:] == 255).all() and t["boxes"].tolist() == [[0, 0, 4, 3]]


def test_scale_and_resize_nearest_labels():
    ids = np.array([[1, 2], [3, 4]], np.int32)
    image = np.zeros((2, 2, 3), np.uint8)
    info = [{"id": i, "category_id": c} for i, c in ((1, 11), (2, 1), (3, 12), (4, 3))]
    out = Resize(4, 6)(PanopticSample(image, ids, info), np.random.default_rng(0))
    np.testing.assert_array_equal(out.segment_ids, [[1, 1, 1, 2, 2, 2]] * 2
                                  + [[3, 3, 3, 4, 4, 4]] * 2)
    t = _check_consistent(out)
    assert t["boxes"].tolist() == [[3, 0, 6, 2], [3, 2, 6, 4]]
    scaled = RandomScale(2.0, 2.0)(PanopticSample(image, ids, info), np.random.default_rng(0))
    np.testing.assert_array_equal(scaled.segment_ids, np.kron(ids, np.ones((2, 2), np.int32)))


def test_photometric_jitter_changes_image_only():
    sample = _scene_sample(3)
    jitter = PhotometricJitter(0.3, 0.3, 0.3, 0.05)
    out = jitter(sample, np.random.default_rng(1))
    np.testing.assert_array_equal(out.segment_ids, sample.segment_ids)
    assert out.segments_info == sample.segments_info
    assert out.image.dtype == np.uint8 and not np.array_equal(out.image, sample.image)
    np.testing.assert_array_equal(out.image, jitter(sample, np.random.default_rng(1)).image)
    identity = PhotometricJitter(0, 0, 0, 0)(sample, np.random.default_rng(1))
    assert np.abs(identity.image.astype(int) - sample.image).max() <= 1


def test_validation_and_rng_helpers():
    with pytest.raises(ValueError, match="min_scale"):
        RandomScale(2.0, 1.0)
    with pytest.raises(ValueError, match="crop size"):
        RandomCrop(0, 4)
    with pytest.raises(ValueError, match="hue"):
        PhotometricJitter(hue=0.7)
    with pytest.raises(ValueError, match="segment_ids shape"):
        PanopticSample(np.zeros((2, 2, 3), np.uint8), np.zeros((3, 2), np.int32))
    rng = np.random.default_rng(0)
    assert as_rng(rng) is rng
    assert as_rng(5).integers(1000) == np.random.default_rng(5).integers(1000)
    import torch

    a = as_rng(torch_generator=torch.Generator().manual_seed(3)).integers(1 << 30)
    b = as_rng(torch_generator=torch.Generator().manual_seed(3)).integers(1 << 30)
    assert a == b
    assert Compose(()).transforms == ()

