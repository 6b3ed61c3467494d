"""Large camera frames reach the node with Fast DDS's default transports (hardening item 9).

Fresh processes each time (the loss depends on what shared memory each start gets): the node
with no Fast DDS profile, a camera process publishing 640x480 rgb8 (921,600 bytes, more than
Fast DDS's default 512 KiB shared-memory segment). A reliable camera is matched by the node's
``qos_reliability: auto`` with a reliable subscription, which repairs lost fragments; a
best-effort camera needs the package's profile in the camera's own process (what the README's
robot quick start and the launch files set); a matched camera that sends nothing makes the
node WARN in its diagnostics, naming the cause. Measured causes: bench/bench_transport.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, ros_env
from ros_harness import running_node

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PROFILE = REPO / "panoptic_ros" / "ros" / "fastdds_loopback.xml"
CAMERA_TOPIC = "/test_camera/image"
STARTS = 3


def start_camera(tmp: Path, reliability: str, profile: bool, frames: int = 60):
    env = ros_env(PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if profile:  # the camera's own process carries the large-segment profile
        env.update(FASTDDS_DEFAULT_PROFILES_FILE=str(PROFILE),
                   ROS_AUTOMATIC_DISCOVERY_RANGE="SYSTEM_DEFAULT")
    log = open(tmp / f"camera_{reliability}.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "test" / "ros_camera.py"), "--reliability", reliability,
         "--frames", str(frames), "--rate", "2", "--topic", CAMERA_TOPIC],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(("reliability", "camera_profile"),
                         [("reliable", False), ("best_effort", True)])
def test_large_frames_arrive_in_every_fresh_start(graph, tmp_path, reliability, camera_profile):
    delivered = []
    for start in range(STARTS):
        tmp = tmp_path / f"start{start}"
        tmp.mkdir()
        since = time.monotonic()
        with running_node(graph, tmp, input_size=32):
            camera, log = start_camera(tmp, reliability, camera_profile)
            try:
                out = graph.wait_for(
                    lambda s=since: [m for t, m in graph.inbox["panoptic"] if t >= s],
                    timeout=30, what=f"a 640x480 frame through ({reliability}, start {start})")
                delivered.append(out[0])
                report = graph.diagnostics(lambda d: d.get("input_reliability"))
                assert report["input_reliability"] == reliability
            finally:
                stop(camera)
                log.close()
    assert len(delivered) == STARTS
    for out in delivered:
        assert (out.ids.height, out.ids.width) == (480, 640)
        assert out.header.frame_id == "camera_optical" and out.header.stamp.sec >= 1


def test_silent_matched_camera_makes_the_node_warn(graph, tmp_path):
    with running_node(graph, tmp_path, input_size=32, input_timeout=2.0):
        camera, log = start_camera(tmp_path, "best_effort", False, frames=0)
        try:
            # Until the node has discovered both publishers (the camera and the test graph's),
            # its warning names one; wait for the report that counts both.
            report = graph.diagnostics(
                lambda d: d["_level"] == b"\x01" and "no frame on" in d["_message"]
                and "publishers on it" in d["_message"], what="the silence warning")
            message = report["_message"]
            assert CAMERA_TOPIC in message and "publishers on it" in message  # camera + test graph
            assert "fastdds_loopback.xml" in message and "camera" in message
        finally:
            stop(camera)
            log.close()
