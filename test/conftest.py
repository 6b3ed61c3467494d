"""Shared fixtures. Network safety first: every rclpy process of the suite stays on loopback.

``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a per-run ``ROS_DOMAIN_ID`` are set here, at
import time, before any test can start rclpy; subprocesses inherit them through
:func:`ros_env`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_STATIC_PEERS", None)
os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; conflicts with the range above
if "PANOPTIC_TEST_DOMAIN_ID" not in os.environ:
    # Distinct per pytest process, so concurrent runs on one machine do not see each other.
    os.environ["PANOPTIC_TEST_DOMAIN_ID"] = str(1 + os.getpid() % 100)
os.environ["ROS_DOMAIN_ID"] = os.environ["PANOPTIC_TEST_DOMAIN_ID"]

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PANOPTIC_SHARED_DIR", REPO.parent / "shared"))
COCO_SAMPLE = SHARED / "data" / "coco_panoptic_sample"


def ros_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess that starts rclpy: loopback only, this run's domain."""
    env = dict(os.environ)
    env.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=os.environ["ROS_DOMAIN_ID"],
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def coco_sample() -> Path:
    """The real COCO panoptic sample in ../shared; skips when it is absent."""
    if not (COCO_SAMPLE / "panoptic_examples.json").is_file():
        pytest.skip(f"COCO panoptic sample not found at {COCO_SAMPLE}")
    return COCO_SAMPLE


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny random Mask2Former and its image processor, saved with save_pretrained."""
    from helpers import save_tiny_mask2former

    return save_tiny_mask2former(tmp_path_factory.mktemp("tiny_m2f"))


@pytest.fixture(scope="module")
def graph():
    """A test-side ROS graph (:class:`ros_harness.Graph`) for one test module, closed after it."""
    from ros_harness import Graph

    g = Graph()
    yield g
    g.close()
