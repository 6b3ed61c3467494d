"""The ``demo_camera`` node: synthetic scenes as a live camera stream, with exact ground truth.

Publishes ``camera/image_raw`` (sensor_msgs/Image rgb8) and ``camera/ground_truth``
(PanopticSegmentation, synthetic label set) at ``rate`` Hz; both messages of a frame carry the
same header, stamped from the node's clock at publish time. Scenes come from
:class:`~panoptic_ros.data.synthetic.SceneGenerator` (``seed`` 2026 by default: the demo model
was trained on seed 1000 and validated on seed 7, so these scenes are new to it), generated
ahead in a thread; a tick that finds no scene ready publishes nothing and is counted as an
underrun, so the stream never slows down silently.

With ``source: sequences`` it plays video sequences of
:mod:`panoptic_ros.data.sequences` instead (``frames_per_sequence`` frames each, sequence
``k`` of ``seed``, one after another): thing ids of the ground truth persist per object within a
sequence, and each frame also goes out as ``camera/depth`` (sensor_msgs/Image 16UC1,
millimetres, 0 = no depth, aligned with the colour image) and ``camera/camera_info``
(sensor_msgs/CameraInfo: K, D, R, P of the sequence's calibration), all with the frame's header;
the ground truth's segments then carry their exact 3D (``has_3d``, ``centroid`` = the object's
``position_m``, ``distance``, extent: :func:`~panoptic_ros.ros.demo.truth.truth_with_geometry`).

Run: ``ros2 run panoptic_ros panoptic_demo_camera --ros-args -p rate:=10.0``.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Any

import rclpy
import rclpy.logging
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from panoptic_ros.camera_model import CameraCalibration, depth_to_millimetres
from panoptic_ros.categories import synthetic
from panoptic_ros.data.sequences import SequenceConfig, generate_sequence, video_name
from panoptic_ros.data.synthetic import SceneConfig, SceneGenerator
from panoptic_ros.msg import PanopticSegmentation
from panoptic_ros.ros.conversions import array_to_image
from panoptic_ros.ros.demo.pairing import sequence_frame_id
from panoptic_ros.ros.demo.truth import truth_with_geometry
from panoptic_ros.ros.messages import panoptic_msg
from panoptic_ros.ros.params import START, ParamSpec, declare_params
from panoptic_ros.ros.spin import spin_main

NODE_NAME = "demo_camera"
DEFAULT_SEED = 2026
"""Scene seed of the demo: never used by the demo model's training (1000) or validation (7)."""


SOURCES = ("scenes", "sequences")


def _spec(name: str, default: Any, description: str, low: float | None = None,
          high: float | None = None, choices: tuple[str, ...] = ()) -> ParamSpec:
    return ParamSpec(name, default, description, START, low=low, high=high, read_only=True,
                     choices=choices)


PARAMS: tuple[ParamSpec, ...] = (
    _spec("rate", 10.0, "frames per second", 0.1, 1000.0),
    _spec("seed", DEFAULT_SEED, "scene seed (the demo model trained on 1000, validated on 7)",
          0, 2**31 - 1),
    _spec("start_id", 0, "index of the first scene (or sequence) of the seed", 0, 2**31 - 1),
    _spec("height", 256, "image height, pixels", 32, 8192),
    _spec("width", 320, "image width, pixels", 32, 8192),
    _spec("frame_id", "camera_optical_frame", "frame_id of the headers; source 'sequences': "
          "'<frame_id>_<video>' (e.g. camera_optical_frame_2026_0003), so that every video "
          "looks like a camera of its own and a tracker resets at the cut"),
    _spec("prefetch", 16, "scenes generated ahead of publishing", 1, 1000),
    _spec("source", "scenes", "'scenes' (independent single images) or 'sequences' (videos "
          "with persistent ids, plus camera/depth and camera/camera_info)", choices=SOURCES),
    _spec("frames_per_sequence", 60, "frames of each sequence (source 'sequences')", 1, 100000),
    _spec("wait_for_subscribers", True, "publish only once both camera/image_raw and "
          "camera/ground_truth have a subscriber (no frames lost at start)"),
)


class DemoCamera(Node):
    """Publishes synthetic scenes and their ground truth at a fixed rate.

    Parameters: ``rate`` (Hz), ``seed``, ``start_id`` (first scene index), ``height``,
    ``width`` (pixels), ``frame_id``, ``prefetch`` (scenes generated ahead),
    ``wait_for_subscribers`` (stream only once both topics have a subscriber), ``source``
    (``scenes`` or ``sequences``), ``frames_per_sequence``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = declare_params(self, PARAMS)
        self.frame_id = p["frame_id"]
        self.wait_for_subscribers = p["wait_for_subscribers"]
        self.source = p["source"]
        self.rate = float(p["rate"])
        self.frames_per_sequence = int(p["frames_per_sequence"])
        self._scenes = SceneGenerator(SceneConfig(height=int(p["height"]), width=int(p["width"])),
                                      seed=int(p["seed"]), start_id=int(p["start_id"]))
        self._labels = synthetic()
        image_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        truth_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self._image_pub = self.create_publisher(Image, "camera/image_raw", image_qos)
        self._truth_pub = self.create_publisher(PanopticSegmentation, "camera/ground_truth",
                                                truth_qos)
        self._depth_pub = self._info_pub = None
        if self.source == "sequences":
            self._depth_pub = self.create_publisher(Image, "camera/depth", image_qos)
            self._info_pub = self.create_publisher(CameraInfo, "camera/camera_info", truth_qos)
        self.published = 0
        self.underruns = 0
        self.publish_errors = 0
        self._streaming = False
        self._ready: queue.Queue = queue.Queue(maxsize=int(p["prefetch"]))
        self._stop = threading.Event()
        self._producer = threading.Thread(target=self._produce, name="scene-generator",
                                          daemon=True)
        self._producer.start()
        self._timer = self.create_timer(1.0 / float(p["rate"]), self._tick)

    def _produce(self) -> None:
        """Generator thread: frames -> ready messages (image, truth, depth, info, frame_id)."""
        frames = self._sequence_frames() if self.source == "sequences" else self._scene_frames()
        for messages in frames:
            while not self._stop.is_set():
                try:
                    self._ready.put(messages, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set():
                return

    def _scene_frames(self):
        """Independent scenes: (image, ground truth, None, None, frame_id) messages."""
        empty = Header()
        while True:
            scene = next(self._scenes)
            yield (array_to_image(scene.image, "rgb8"),
                   panoptic_msg(scene.result, empty, self._labels), None, None, self.frame_id)

    def _sequence_frames(self):
        """Sequences ``start_id``, ``start_id + 1``, ... of the seed, as messages.

        Yields (image, ground truth with 3D, depth 16UC1, camera info,
        ``<frame_id>_<video>``).
        """
        empty = Header()
        cfg = self._scenes.config
        config = SequenceConfig(height=cfg.height, width=cfg.width,
                                rate=self.rate)
        video = self._scenes.next_id
        while True:
            info = None
            frame_id = sequence_frame_id(self.frame_id, video_name(self._scenes.seed, video))
            for frame in generate_sequence(self._scenes.seed, video, self.frames_per_sequence,
                                           config):
                info = info or camera_info_msg(frame.camera)
                yield (array_to_image(frame.image, "rgb8"),
                       panoptic_msg(truth_with_geometry(frame), empty, self._labels),
                       array_to_image(depth_to_millimetres(frame.depth), "16UC1"), info,
                       frame_id)
            video += 1

    def _tick(self) -> None:
        if not self._streaming:
            if self.wait_for_subscribers and (
                self._image_pub.get_subscription_count() == 0
                or self._truth_pub.get_subscription_count() == 0
            ):
                return
            self._streaming = True
            self.get_logger().info(
                f"streaming {self._scenes.config.height}x{self._scenes.config.width} scenes "
                f"(seed {self._scenes.seed}) at {1e9 / self._timer.timer_period_ns:g} Hz")
        try:
            image, truth, depth, info, frame_id = self._ready.get_nowait()
        except queue.Empty:
            self.underruns += 1
            self.get_logger().warning("scene generation is behind the frame rate; frame "
                                      "skipped", throttle_duration_sec=5.0)
            return
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=frame_id)
        image.header = header
        truth.header = header
        truth.ids.header = header
        try:
            self._image_pub.publish(image)
            self._truth_pub.publish(truth)
            if depth is not None:
                depth.header = header
                info.header = header
                self._depth_pub.publish(depth)
                self._info_pub.publish(info)
        except Exception as err:  # noqa: BLE001 - DDS may refuse under load; keep streaming
            self.publish_errors += 1
            self.get_logger().warning(f"cannot publish a frame: {err}",
                                      throttle_duration_sec=5.0)
            return
        self.published += 1

    def stop(self) -> None:
        """Stop publishing and the generator thread."""
        self._stop.set()
        self.destroy_timer(self._timer)
        self._producer.join(timeout=5.0)


def camera_info_msg(calibration: CameraCalibration) -> CameraInfo:
    """``sensor_msgs/CameraInfo`` of a calibration (header unset; no binning, full ROI)."""
    return CameraInfo(
        width=calibration.width, height=calibration.height,
        distortion_model=calibration.distortion_model,
        d=[float(v) for v in calibration.D], k=[float(v) for v in calibration.K.reshape(-1)],
        r=[float(v) for v in calibration.R.reshape(-1)],
        p=[float(v) for v in calibration.P.reshape(-1)])


def _report(node: DemoCamera) -> None:
    node.stop()
    # Not the node's logger: its rosout publisher may be gone with the context already.
    rclpy.logging.get_logger(NODE_NAME).info(
        f"published {node.published} frames, {node.underruns} underruns, "
        f"{node.publish_errors} publish errors")


def main(args: list[str] | None = None) -> int:
    """Entry point of ``panoptic_demo_camera``: stream until interrupted."""
    return spin_main(DemoCamera, args, on_stop=_report)


if __name__ == "__main__":
    sys.exit(main())
