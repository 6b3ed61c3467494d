"""Every backend through the node's whole lifecycle; pretrained-weight options; shutdown.

Each test starts its own node process (the hardening issue's items 3, 7 and clean shutdown),
so this module holds no long-lived node of the same name.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ros_harness import (
    ACTIVATE,
    CLEANUP,
    CONFIGURE,
    DEACTIVATE,
    image_msg,
    running_node,
    scene_rgb,
)

from panoptic_ros.inference import Predictor
from panoptic_ros.models.checkpoint import save_checkpoint
from panoptic_ros.models.efficientps import EfficientPSConfig
from panoptic_ros.models.registry import build_model
from panoptic_ros.ros.conversions import image_to_array

pytestmark = pytest.mark.ros



# -- 3. every backend through the whole lifecycle ---------------------------------------------
BACKENDS = ["efficientps", "mask2former", "oneformer", "detr"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    from helpers import TINY_SAVERS

    out = {}
    tmp = tmp_path_factory.mktemp("weights")
    torch.manual_seed(3)
    cfg = EfficientPSConfig.from_dict({"variant": "narrow", "detection_score_threshold": 0.0,
                                       "detections_per_image": 6})
    model = build_model("efficientps", cfg, "synthetic")
    out["efficientps"] = save_checkpoint(tmp / "narrow.pt", model, meta={"input_size": 64})
    for family, save in TINY_SAVERS.items():
        (tmp / family).mkdir()
        out[family] = save(tmp / family)
    return out


def expected_ids(predictor: Predictor, rgb: np.ndarray, live: dict) -> np.ndarray:
    predictor.reset_inference_params()
    predictor.set_inference_params(**live)
    return predictor(rgb).ids


@pytest.mark.slow
@pytest.mark.parametrize("family", BACKENDS)
def test_every_backend_survives_the_lifecycle(graph, tmp_path, weights, family):
    backend = "efficientps" if family == "efficientps" else "mask2former"
    reference = Predictor(backend=backend, weights=str(weights[family]), device="cpu")
    live_specs = {p.name: p for p in reference.live_params()}
    own = {name: spec.default for name, spec in live_specs.items()}
    first = "score_threshold"
    changed = {first: 0.0 if own[first] > 0 else 0.9}
    rgb = scene_rgb(64, 80, seed=5)
    current: dict = {}  # live settings changed so far (they persist through transitions)
    # Tracking off: the node's ids are compared with the Predictor's pixel for pixel.
    with running_node(graph, tmp_path, autostart=False, backend=backend,
                      weights=str(weights[family]), input_size=0, tracking=False):
        steps = [CONFIGURE, ACTIVATE, DEACTIVATE, ACTIVATE, DEACTIVATE, CLEANUP, CONFIGURE,
                 ACTIVATE]
        for k, step in enumerate(steps):
            assert graph.transition(step), (family, k, step)
            if step == CONFIGURE:
                # The backend declared its own live settings, with its own meanings.
                names = graph.list_params()
                assert set(live_specs) <= names
                others = {"stuff_area", "strategy"} if backend != "efficientps" else {
                    "mask_threshold", "rules"}
                assert not others & names
                (desc,) = graph.describe("overlap_threshold")
                assert live_specs["overlap_threshold"].description in desc.description
            if graph.state() != "active":
                continue
            # Correct outputs with the settings so far (the model's own, then the changed
            # value, which persists through every later transition), then reset.
            sent = image_msg(graph, rgb)
            ids = image_to_array(graph.send(sent).ids)
            np.testing.assert_array_equal(ids, expected_ids(reference, rgb, current))
            if not current:
                assert graph.set_params(**changed)[0].successful
                current = changed
                sent = image_msg(graph, rgb)
                ids = image_to_array(graph.send(sent).ids)
                np.testing.assert_array_equal(ids, expected_ids(reference, rgb, current))
            if k < len(steps) - 1:
                continue
            unset = {first: -1.0}
            assert graph.set_params(**unset)[0].successful
            sent = image_msg(graph, rgb)
            ids = image_to_array(graph.send(sent).ids)
            np.testing.assert_array_equal(ids, expected_ids(reference, rgb, {}))
            key = f"inference.{first}"
            graph.diagnostics(lambda d, k=key: k in d and float(d[k]) == own[first],
                              what="the model's own value reported")


# -- 7. fetching and caching pretrained weights ------------------------------------------------
def test_download_and_cache_parameters_reach_the_loader(graph, tmp_path, weights):
    """A hub id resolved from a given offline cache; a missing one fails, naming the cache."""
    cache = tmp_path / "hf_cache"
    repo = cache / "models--example-org--tiny-m2f"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for f in weights["mask2former"].iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    with running_node(graph, tmp_path, autostart=False, backend="mask2former",
                      weights="example-org/tiny-m2f", input_size=0) as (_, log):
        assert not graph.transition(CONFIGURE)  # default cache: not there, offline
        graph.wait_for(lambda: "example-org/tiny-m2f" in log.read_text(), what="the reason")
        assert "not in the local Hugging Face cache" in log.read_text()
        assert graph.set_params(cache_dir=str(cache), revision="main")[0].successful
        assert graph.transition(CONFIGURE) and graph.transition(ACTIVATE)
        sent = image_msg(graph, scene_rgb(64, 80))
        check_shape = graph.send(sent)
        assert check_shape.header == sent.header
        assert graph.get_params("allow_download") == [False]


# -- shutdown ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_node_quickly_with_a_frame_in_flight(graph, tmp_path, sig):
    """A frame that takes seconds is in the network when the signal comes: exit within 2 s."""
    with running_node(graph, tmp_path, variant="b0", input_size=0,
                      max_image_pixels=4096 * 4096) as (proc, log):
        graph.wait_for(lambda: graph.image_pub.get_subscription_count() > 0)
        since = time.monotonic()
        graph.image_pub.publish(image_msg(graph, scene_rgb(1080, 1920)))
        graph.wait_for(lambda: [d for d in graph.reports(since=since)
                                if d["frames_received"] == "1" and d["frames_processed"] == "0"],
                       what="the frame in flight")
        sent = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=30)
        took = time.monotonic() - sent
        text = log.read_text()
        assert proc.returncode == 0, text[-3000:]
        assert took <= 2.0, took
        assert "Traceback" not in text, text[-3000:]
