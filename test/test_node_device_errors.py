"""A sticky accelerator error deactivates the node with its reason (GPU readiness 9).

On a GPU, a device-side assert or an illegal memory access leaves the CUDA context unusable:
every later call fails the same way. The node must not keep logging one error per frame; it
deactivates and refuses activation until the process restarts. Shown on the CPU with a
registered backend whose inference raises that error (the node, rclpy and the Predictor are
real; only what the backend's network raises is staged).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn

from panoptic_ros.categories import synthetic
from panoptic_ros.devices import is_sticky_device_error
from panoptic_ros.models.efficientps.config import FUSION_LIVE_PARAMS, FusionConfig
from panoptic_ros.models.registry import register_backend
from panoptic_ros.ros.conversions import array_to_image
from panoptic_ros.ros.node import PanopticSegmentationNode

pytestmark = pytest.mark.ros


class FailingBackend(torch.nn.Module):
    """The backend interface, with a network that fails as a broken GPU does."""

    LIVE_PARAMS = FUSION_LIVE_PARAMS
    label_set = synthetic()
    label_divisor = 1000
    checkpoint_meta: dict = {}

    def __init__(self, message: str) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.message = message
        self.calls = 0
        self.fusion = FusionConfig()

    @property
    def device(self) -> torch.device:
        return self.weight.device

    def preprocess_spec(self) -> dict:
        return {"pixel_mean": (0.0, 0.0, 0.0), "pixel_std": (1.0, 1.0, 1.0),
                "size_divisibility": 32}

    def inference_params(self) -> dict:
        return {p.name: getattr(self.fusion, p.name) for p in self.LIVE_PARAMS}

    def set_inference_params(self, **kwargs) -> None:
        import dataclasses

        self.fusion = dataclasses.replace(self.fusion, **kwargs)

    def predict(self, images, image_sizes, output_sizes=None):
        self.calls += 1
        raise RuntimeError(self.message)


BUILT: list[FailingBackend] = []


def _build(config, label_set):
    BUILT.append(FailingBackend(config["weights"]))
    return BUILT[-1]


register_backend("test_failing_gpu", _build)


def test_sticky_errors_are_told_apart_from_ordinary_ones():
    assert is_sticky_device_error(RuntimeError("CUDA error: device-side assert triggered"))
    assert is_sticky_device_error(RuntimeError("CUDA error: an illegal memory access was "
                                               "encountered"))
    assert not is_sticky_device_error(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert not is_sticky_device_error(ValueError("expected a uint8 RGB image"))


@pytest.mark.parametrize(("message", "sticky"), [
    ("CUDA error: device-side assert triggered", True),
    ("some ordinary failure", False),
])
def test_node_deactivates_on_a_sticky_device_error(message, sticky):
    context = rclpy.Context()
    rclpy.init(context=context)
    # A namespace of its own: no other test's graph ever meets this in-process node.
    node = PanopticSegmentationNode(context=context, namespace="/device_error_test",
                                    parameter_overrides=[
        rclpy.parameter.Parameter("backend", value="test_failing_gpu"),
        rclpy.parameter.Parameter("weights", value=message),
        rclpy.parameter.Parameter("device", value="cpu"),
    ])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        backend = BUILT[-1]
        msg = array_to_image(np.zeros((8, 8, 3), np.uint8), "rgb8")
        for _ in range(3):
            node._on_image(msg)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and node._slot.pending():
                executor.spin_once(timeout_sec=0.05)
            for _ in range(10):
                executor.spin_once(timeout_sec=0.05)
        if sticky:
            assert backend.calls == 1  # nothing ran after the error
            assert node._state == "inactive"
            assert node.trigger_activate() != TransitionCallbackReturn.SUCCESS
            assert "device-side assert" in node._fatal
        else:
            assert backend.calls == 3  # an ordinary error: the next frames are still served
            assert node._state == "active" and not node._fatal
        assert node._cameras[''].stats.snapshot().errors_total == backend.calls
    finally:
        node.stop_pipeline(timeout=10)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
