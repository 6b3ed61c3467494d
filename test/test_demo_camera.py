"""The demo camera playing sequences on a real ROS 2 graph (in-process, loopback, own domain).

Content, not arrival: the image, depth, camera info and ground truth of a frame share one
header, and equal the sequence generated in memory (pixels, millimetres, K, persistent ids,
each thing's 3D position).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

import rclpy  # noqa: E402
from panoptic_ros.msg import PanopticSegmentation  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from panoptic_ros.camera_model import depth_to_millimetres  # noqa: E402
from panoptic_ros.data.sequences import (  # noqa: E402
    SequenceConfig,
    generate_sequence,
    video_name,
)
from panoptic_ros.ros.conversions import image_to_array  # noqa: E402
from panoptic_ros.ros.demo.camera import DemoCamera  # noqa: E402
from panoptic_ros.ros.messages import result_from_msg  # noqa: E402

pytestmark = pytest.mark.ros


def test_camera_plays_sequences_with_depth_and_camera_info():
    context = rclpy.Context()
    rclpy.init(context=context)
    frames = 3
    got: dict[str, list] = {"image": [], "depth": [], "info": [], "truth": []}
    done = threading.Event()
    try:
        camera = DemoCamera(context=context, parameter_overrides=[
            Parameter("source", value="sequences"), Parameter("frames_per_sequence",
                                                              value=frames),
            Parameter("height", value=64), Parameter("width", value=80),
            Parameter("rate", value=20.0), Parameter("seed", value=3)])
        listener = rclpy.create_node("listener", context=context)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)

        def keep(key):
            def callback(msg):
                got[key].append(msg)
                if min(len(v) for v in got.values()) >= frames + 1:
                    done.set()
            return callback

        listener.create_subscription(Image, "camera/image_raw", keep("image"), qos)
        listener.create_subscription(Image, "camera/depth", keep("depth"), qos)
        listener.create_subscription(CameraInfo, "camera/camera_info", keep("info"), qos)
        listener.create_subscription(PanopticSegmentation, "camera/ground_truth",
                                     keep("truth"), qos)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(camera)
        executor.add_node(listener)
        deadline = time.monotonic() + 30.0
        while not done.is_set() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        camera.stop()
        assert done.is_set(), {k: len(v) for k, v in got.items()}
    finally:
        rclpy.try_shutdown(context=context)
    config = SequenceConfig(height=64, width=80, rate=20.0)
    want = list(generate_sequence(3, 0, frames, config)) + \
        list(generate_sequence(3, 1, 1, config))
    # The camera streams from the first frame on, reliably: messages k are frame k.
    for k, frame in enumerate(want):
        image, depth, info, truth = (got[key][k] for key in ("image", "depth", "info", "truth"))
        assert image.header == depth.header == info.header == truth.header
        # Each video is a camera of its own: the tracker resets at the cut.
        assert image.header.frame_id == f"camera_optical_frame_{video_name(3, k // frames)}"
        assert depth.encoding == "16UC1"
        np.testing.assert_array_equal(image_to_array(image), frame.image)
        np.testing.assert_array_equal(image_to_array(depth), depth_to_millimetres(frame.depth))
        np.testing.assert_allclose(np.reshape(info.k, (3, 3)), frame.camera.K)
        np.testing.assert_allclose(np.reshape(info.p, (3, 4)), frame.camera.P)
        assert (info.width, info.height, info.distortion_model) == (80, 64, "plumb_bob")
        # Persistent ids: the ground truth is the data set's own, not renumbered.
        result = result_from_msg(truth)
        np.testing.assert_array_equal(result.ids, frame.result.ids)
        # Exact 3D of every visible thing: its centroid is its position_m (float32 message).
        centroids = {s.id: s.geometry.centroid for s in result.segments if s.geometry}
        for obj in frame.objects:
            if obj.visible:
                np.testing.assert_allclose(centroids[obj.id], obj.position_m, rtol=1e-6)
