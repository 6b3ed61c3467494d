"""Training targets from COCO panoptic files, and batching (panoptic_ros.data.dataset)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from panoptic_ros.categories import synthetic
from panoptic_ros.data.coco_panoptic import write_image, write_panoptic_png
from panoptic_ros.data.dataset import (
    PanopticDataset,
    SyntheticPanopticDataset,
    collate_lists,
    panoptic_targets,
)
from panoptic_ros.data.synthetic import SceneConfig, generate_scene, scene_rng
from panoptic_ros.data.transforms import Compose, RandomCrop, RandomHorizontalFlip, RandomScale

# Synthetic label set training indices: sky 0, ground 1, wall 2, grass 3, water 4,
# person 5, car 6, box 7, ball 8; thing labels person 1, car 2, box 3, ball 4.
SKY, GROUND, PERSON, CAR, UNKNOWN = 11, 12, 1, 2, 99

# Segment ids deliberately unrelated to categories, as in real COCO files.
SEG = {"sky": 7, "ground": 300, "person_a": 70000, "person_b": 12345, "car": 5,
       "crowd": 66, "unknown": 900, "unlisted": 4242}


def _hand_built() -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """An 6x8 scene: sky/ground, two persons, a car, a crowd, void and unknown pixels."""
    s = SEG
    ids = np.array([
        [s["sky"]] * 8,
        [s["sky"], s["sky"], s["person_a"], s["sky"], s["sky"], s["car"], s["car"], s["car"]],
        [0, s["person_a"], s["person_a"], s["person_b"], s["sky"], s["car"], s["car"], 0],
        [s["ground"], s["ground"], s["person_a"], s["person_b"], s["crowd"], s["crowd"],
         s["ground"], s["ground"]],
        [s["ground"], s["unknown"], s["unknown"], s["ground"], s["crowd"], s["ground"],
         s["ground"], s["unlisted"]],
        [s["ground"]] * 8,
    ], dtype=np.int32)
    info = [
        {"id": s["sky"], "category_id": SKY, "iscrowd": 0},
        {"id": s["person_a"], "category_id": PERSON, "iscrowd": 0},
        {"id": s["ground"], "category_id": GROUND, "iscrowd": 0},
        {"id": s["car"], "category_id": CAR, "iscrowd": 0},
        {"id": s["crowd"], "category_id": PERSON, "iscrowd": 1},
        {"id": s["person_b"], "category_id": PERSON, "iscrowd": 0},
        {"id": s["unknown"], "category_id": UNKNOWN, "iscrowd": 0},
        {"id": 31337, "category_id": CAR, "iscrowd": 0},  # listed but absent from the PNG
    ]
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3) * 5
    return image, ids, info


EXPECTED_SEMANTIC = np.array([
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 5, 0, 0, 6, 6, 6],
    [255, 5, 5, 5, 0, 6, 6, 255],
    [1, 1, 5, 5, 255, 255, 1, 1],
    [1, 255, 255, 1, 255, 1, 1, 255],
    [1, 1, 1, 1, 1, 1, 1, 1],
])


@pytest.fixture
def hand_dataset(tmp_path):
    image, ids, info = _hand_built()
    write_image(tmp_path / "images" / "000000000042.png", image)
    write_panoptic_png(tmp_path / "panoptic" / "000000000042.png", ids)
    cats = synthetic().to_coco() + [{"id": UNKNOWN, "name": "mystery", "isthing": 1,
                                     "color": [1, 2, 3]}]
    data = {
        "images": [{"id": 42, "file_name": "000000000042.png", "height": 6, "width": 8}],
        "annotations": [{"image_id": 42, "file_name": "000000000042.png",
                         "segments_info": info}],
        "categories": cats,
    }
    (tmp_path / "panoptic.json").write_text(json.dumps(data))
    return tmp_path / "panoptic.json", image


def test_targets_from_files_exact(hand_dataset):
    json_path, image = hand_dataset
    ds = PanopticDataset(json_path, label_set=synthetic())
    assert len(ds) == 1
    img, target = ds[0]
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 6, 8)
    assert torch.equal(img, torch.from_numpy(image.transpose(2, 0, 1).copy()))
    assert target["image_id"] == 42
    assert target["semantic"].dtype == torch.int64
    np.testing.assert_array_equal(target["semantic"].numpy(), EXPECTED_SEMANTIC)
    # Instances in segments_info order: person_a, car, person_b; no crowd, unknown or absent.
    assert target["labels"].tolist() == [1, 2, 1]
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[1, 1, 3, 4], [5, 1, 8, 3], [3, 2, 4, 4]]
    masks = target["masks"]
    assert masks.dtype == torch.uint8 and tuple(masks.shape) == (3, 6, 8)
    _, ids, _ = _hand_built()
    for k, sid in enumerate((SEG["person_a"], SEG["car"], SEG["person_b"])):
        np.testing.assert_array_equal(masks[k].numpy(), (ids == sid).astype(np.uint8))
    crowd = ids == SEG["crowd"]
    assert (target["semantic"].numpy()[crowd] == 255).all()
    assert not masks.numpy()[:, crowd].any()


def test_targets_without_instances():
    ids = np.full((4, 5), 9, np.int32)
    target = panoptic_targets(ids, [{"id": 9, "category_id": SKY}], synthetic(), "img")
    assert target["image_id"] == "img"
    assert target["semantic"].unique().tolist() == [0]
    assert tuple(target["boxes"].shape) == (0, 4)
    assert tuple(target["masks"].shape) == (0, 4, 5)
    assert target["labels"].tolist() == []


def test_collate_lists_through_a_dataloader(hand_dataset):
    json_path, image = hand_dataset
    ds = PanopticDataset(json_path, label_set=synthetic())
    big = (torch.full((3, 40, 33), 200, dtype=torch.uint8),
           panoptic_targets(np.full((40, 33), 3, np.int32),
                            [{"id": 3, "category_id": PERSON}], synthetic(), 7))
    images, targets = collate_lists([ds[0], big])
    assert [tuple(im.shape) for im in images] == [(3, 6, 8), (3, 40, 33)]
    assert images[0].dtype == torch.uint8
    np.testing.assert_array_equal(images[0].permute(1, 2, 0).numpy(), image)
    np.testing.assert_array_equal(targets[0]["semantic"].numpy(), EXPECTED_SEMANTIC)
    assert targets[1]["boxes"].tolist() == [[0, 0, 33, 40]]
    loader = torch.utils.data.DataLoader(ds, batch_size=1, collate_fn=collate_lists)
    images, targets = next(iter(loader))
    assert len(images) == 1 and targets[0]["image_id"] == ds[0][1]["image_id"]
    with pytest.raises(ValueError, match="empty"):
        collate_lists([])


def test_seeded_augmentation_is_reproducible_per_epoch(hand_dataset):
    json_path, _ = hand_dataset
    aug = Compose((RandomScale(0.5, 3.0), RandomCrop(5, 7), RandomHorizontalFlip()))
    a = PanopticDataset(json_path, transforms=aug, seed=11, label_set=synthetic())
    b = PanopticDataset(json_path, transforms=aug, seed=11, label_set=synthetic())
    img_a, tgt_a = a[0]
    img_b, tgt_b = b[0]
    assert torch.equal(img_a, img_b) and torch.equal(tgt_a["semantic"], tgt_b["semantic"])
    outputs = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        outputs.add(a[0][0].numpy().tobytes())
    assert len(outputs) > 1


def test_synthetic_dataset_matches_generator():
    cfg = SceneConfig(height=64, width=80)
    ds = SyntheticPanopticDataset(3, seed=4, config=cfg, start_id=10)
    img, target = ds[1]
    scene = generate_scene(scene_rng(4, 11), cfg)
    assert target["image_id"] == 11
    np.testing.assert_array_equal(img.numpy().transpose(1, 2, 0), scene.image)
    things = [s for s in scene.result.segments if s.is_thing]
    assert len(target["labels"]) == len(things)
    label_set = synthetic()
    expected_sem = label_set.index_map(scene.result.semantic())
    np.testing.assert_array_equal(target["semantic"].numpy(), expected_sem)
    with pytest.raises(IndexError):
        ds[3]


def test_synthetic_dataset_fresh_scenes_per_epoch():
    cfg = SceneConfig(height=48, width=64)
    ds = SyntheticPanopticDataset(2, seed=4, config=cfg, start_id=10, fresh_scenes=True)
    assert ds[1][1]["image_id"] == 11
    ds.set_epoch(3)
    img, target = ds[1]
    assert target["image_id"] == 17
    np.testing.assert_array_equal(img.numpy().transpose(1, 2, 0),
                                  generate_scene(scene_rng(4, 17), cfg).image)
