"""Every message builds, serialises and round-trips through a real publisher/subscriber pair
in two processes (rclpy + Fast DDS from pip, loopback only)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy  # noqa: E402
from conftest import ros_env  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import Image, RegionOfInterest  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from panoptic_ros import msg  # noqa: E402

pytestmark = pytest.mark.ros


def header(frame: str = "camera_optical", sec: int = 1700000000, nsec: int = 123456789):
    h = Header()
    h.frame_id = frame
    h.stamp.sec, h.stamp.nanosec = sec, nsec
    return h


def samples() -> dict[str, object]:
    seg = msg.SegmentInfo(id=26003, category_id=26, label="car", is_thing=True, instance_id=3,
                          score=0.875, area=1234,
                          bbox=RegionOfInterest(x_offset=5, y_offset=7, height=40, width=60))
    ids = np.array([[0, 7000], [26003, 26003]], dtype=np.int32)
    img = Image(header=header(), height=2, width=2, encoding="32SC1", is_bigendian=0, step=8)
    img.data = ids.tobytes()
    pan = msg.PanopticSegmentation(header=header(), label_divisor=1000, ids=img,
                                   segments=[seg, msg.SegmentInfo(id=7000, category_id=7,
                                                                  label="road", area=1)])
    cc = msg.ClassCount(category_id=24, label="person", count=0)
    counts = msg.InstanceCounts(header=header(), counts=[cc, msg.ClassCount(
        category_id=26, label="car", count=2)])
    cat = msg.Category(id=200, name="rug-merged", is_thing=False, color=[250, 141, 255])
    cats = msg.CategoryArray(header=header("map"), label_divisor=1000, categories=[
        cat, msg.Category(id=1, name="person", is_thing=True, color=[220, 20, 60])])
    return {"SegmentInfo": seg, "PanopticSegmentation": pan, "ClassCount": cc,
            "InstanceCounts": counts, "Category": cat, "CategoryArray": cats}


@pytest.mark.parametrize("name", list(samples()))
def test_serialisation_round_trip(name):
    m = samples()[name]
    back = deserialize_message(serialize_message(m), type(m))
    assert back == m


def test_content_details():
    s = samples()
    assert s["Category"].color.dtype == np.uint8 and s["Category"].color.tolist() == [250, 141,
                                                                                        255]
    pan = s["PanopticSegmentation"]
    ids = np.frombuffer(pan.ids.data, dtype=np.int32).reshape(2, 2)
    assert ids.tolist() == [[0, 7000], [26003, 26003]]


def test_two_process_round_trip():
    sent = samples()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("ros_echo.py")), "--timeout", "90"],
        env=ros_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rclpy.init()
    node = rclpy.create_node("panoptic_msg_roundtrip_test")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    received: dict[str, object] = {}
    done = threading.Event()

    def keep(name):
        def cb(m):
            received.setdefault(name, m)
            if len(received) == len(sent):
                done.set()
        return cb

    pubs = {n: node.create_publisher(type(m), f"in/{n}", qos) for n, m in sent.items()}
    subs = [node.create_subscription(type(m), f"out/{n}", keep(n), qos)  # noqa: F841
            for n, m in sent.items()]
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not done.is_set():
            assert proc.poll() is None, proc.stdout.read()
            for n, m in sent.items():
                # Publish until the echo process has matched both directions.
                if n not in received and pubs[n].get_subscription_count() > 0:
                    pubs[n].publish(m)
            executor.spin_once(timeout_sec=0.1)
        assert done.is_set(), f"received only {sorted(received)}"
        for n, m in sent.items():
            assert received[n] == m, n
        pan = received["PanopticSegmentation"]
        assert pan.header.stamp.nanosec == 123456789 and pan.header.frame_id == "camera_optical"
        assert pan.segments[0].bbox.width == 60 and pan.segments[0].score == pytest.approx(0.875)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
        proc.terminate()
        proc.wait(timeout=20)
