"""Echo node for the message round-trip test: republishes every panoptic_ros message it gets.

Run as a separate process by test_messages_over_dds.py: subscribes to ``in/<Type>`` and
publishes the very same message object on ``out/<Type>``, for each of the package's messages.
Exits after ``--timeout`` seconds. The environment (loopback only, domain id) comes from the
test.
"""

import argparse
import os

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from panoptic_ros import msg

TYPES = ["SegmentInfo", "PanopticSegmentation", "ClassCount", "InstanceCounts", "Category",
         "CategoryArray"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    assert os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST"
    rclpy.init()
    node = Node("panoptic_msg_echo")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    keep = []
    for name in TYPES:
        cls = getattr(msg, name)
        pub = node.create_publisher(cls, f"out/{name}", qos)
        keep.append(node.create_subscription(cls, f"in/{name}", pub.publish, qos))
    end = node.get_clock().now().nanoseconds + int(args.timeout * 1e9)
    while rclpy.ok() and node.get_clock().now().nanoseconds < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
