"""The bundled demo model (``panoptic_ros/models/weights/demo.pt``) as users get it.

It ships inside the package and is the default model, so its quality is part of the product:
on synthetic scenes from a seed never used in its training (1000) or validation (7) it keeps
the figures the README quotes (PQ >= 0.70, Things >= 0.60 on 200 images of seed 4242; here the
first 40 of them, which keeps the test to seconds on a CPU).
"""

from __future__ import annotations

import pytest

from panoptic_ros import models
from panoptic_ros.categories import synthetic
from panoptic_ros.data.synthetic import SceneConfig, generate_scene, scene_rng
from panoptic_ros.evaluation.pq import PQStat, pq_results
from panoptic_ros.models.checkpoint import load_checkpoint_file

UNSEEN_SEED = 4242
SIZE = (256, 320)


def test_bundled_checkpoint_is_small_and_self_describing():
    assert models.DEMO_WEIGHTS.is_file(), "the bundled demo model is part of the package"
    assert models.DEMO_WEIGHTS.stat().st_size <= 20 * 2**20
    data = load_checkpoint_file(models.DEMO_WEIGHTS)  # weights_only=True inside
    assert data["backend"] == "efficientps"
    assert data["label_set"] == synthetic().to_dict()
    assert data["meta"]["train_config"]["train"]["seed"] == 1000  # the unseen seed differs


@pytest.fixture(scope="module")
def predictor():
    from panoptic_ros.inference import Predictor

    return Predictor(device="cpu")  # no weights named: the bundled model


def test_default_model_is_the_bundled_one(predictor):
    assert predictor.label_set.name == "synthetic"
    assert [c.name for c in predictor.label_set.things] == ["person", "car", "box", "ball"]


def test_unseen_scenes_reach_the_quoted_quality(predictor):
    stat = PQStat()
    config = SceneConfig(height=SIZE[0], width=SIZE[1])
    for image_id in range(40):
        scene = generate_scene(scene_rng(UNSEEN_SEED, image_id), config)
        pred = predictor(scene.image)
        assert pred.ids.shape == SIZE
        stat += pq_results(scene.result, pred)
    res = stat.results(predictor.label_set)
    assert res["All"]["n"] == 9
    assert res["All"]["pq"] >= 0.70, res
    assert res["Things"]["pq"] >= 0.60, res
