"""A camera process for the transport tests: publishes 640x480 rgb8 frames with a given QoS.

Run by test_transport.py as a separate process (its own DDS participant, so a Fast DDS profile
given to it in the environment is the camera's own, as on a robot). Publishes ``--count``
frames at ``--rate`` Hz on ``--topic`` (stamps 1, 2, ...), then exits. ``--frames 0`` publishes
nothing: a matched but silent camera. The environment (loopback only, domain id) comes from
the test.
"""

import argparse
import os
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from panoptic_ros.ros.conversions import array_to_image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reliability", choices=("reliable", "best_effort"), required=True)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--size", default="480x640")
    parser.add_argument("--topic", default="image")
    args = parser.parse_args()
    assert os.environ.get("ROS_DOMAIN_ID"), "the test sets a domain id"
    h, w = (int(v) for v in args.size.split("x"))
    rclpy.init()
    node = rclpy.create_node("test_camera")
    reliability = (ReliabilityPolicy.RELIABLE if args.reliability == "reliable"
                   else ReliabilityPolicy.BEST_EFFORT)
    pub = node.create_publisher(Image, args.topic, QoSProfile(depth=1, reliability=reliability))
    rgb = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    if args.frames == 0:
        time.sleep(3600 / args.rate)  # matched but silent until the test stops it
    for k in range(args.frames):
        msg = array_to_image(rgb, "rgb8")
        msg.header.stamp.sec = k + 1
        msg.header.frame_id = "camera_optical"
        pub.publish(msg)
        rclpy.spin_once(node, timeout_sec=1.0 / args.rate)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
