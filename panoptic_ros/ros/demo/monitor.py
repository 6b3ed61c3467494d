"""The ``panoptic_monitor`` node: watches the panoptic node's outputs as a planner would.

Subscribes to the node's ``~/panoptic``, ``~/instance_counts``, ``~/categories`` (latched),
``~/overlay``, ``~/points`` and ``~/markers`` (so that the node computes them: they are lazy;
counted, with the last cloud's point count), to the camera's ground truth and image, and to
``/diagnostics``; pairs each prediction with its ground truth by header (stamp and frame_id) and
scores the stream live with :class:`~panoptic_ros.ros.demo.scoring.LiveEvaluator`: PQ,
end-to-end latency (receive time minus header stamp, both from the system clock), output rate,
dropped frames, instance counts; with ``video`` (the camera plays sequences) also STQ and ID
switches per video and pooled; with ground truth in 3D (sequences: the node runs with depth)
the 3D centroid error of matched things.

Callbacks only take the receive time and queue the message; a worker thread converts, pairs,
scores and writes files, so evaluation work never delays the next receive timestamp.

Topics (relative; the defaults match the node and :mod:`~panoptic_ros.ros.demo.camera` in one
namespace): ``panoptic_segmentation/{panoptic,instance_counts,categories,overlay,points,
markers}``,
``camera/ground_truth``, ``camera/image_raw``, ``/diagnostics``.

Run: ``ros2 run panoptic_ros panoptic_monitor --ros-args -p output_dir:=demo_output``; on
Ctrl-C it prints the summary and, with ``output_dir``, writes summary.json, the contact sheet
and the COCO panoptic files there.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from panoptic_ros.categories import get_label_set
from panoptic_ros.msg import CategoryArray, InstanceCounts, PanopticSegmentation
from panoptic_ros.ros.conversions import image_to_rgb
from panoptic_ros.ros.demo.pairing import stamp_ns
from panoptic_ros.ros.demo.report import (
    SUMMARY_NAME,
    format_status,
    format_summary,
    write_summary,
)
from panoptic_ros.ros.demo.scoring import LiveEvaluator
from panoptic_ros.ros.diagnostics import diagnostic_values
from panoptic_ros.ros.messages import frame_key, label_set_from_msg, result_from_msg
from panoptic_ros.ros.params import START, ParamSpec, declare_params
from panoptic_ros.ros.spin import spin_main

NODE_NAME = "panoptic_monitor"
SEGMENTATION_NODE = "panoptic_segmentation"

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("output_dir", "", "folder for summary.json, the contact sheet and COCO panoptic "
              "predictions + ground truth; empty = write nothing", START),
    ParamSpec("sheet_rows", 6, "frames on the contact sheet", START, low=1, high=100),
    ParamSpec("truth_label_set", "synthetic", "categories of the ground truth (built-in name or "
              "COCO-style JSON path)", START),
    ParamSpec("segmentation_node", SEGMENTATION_NODE, "name of the panoptic node in this "
              "namespace (its /diagnostics are read)", START),
    ParamSpec("max_pending", 100, "camera frames held while waiting for their output (at least "
              "rate x worst latency; each holds its image and ground truth)", START,
              low=1, high=100_000),
    ParamSpec("video", False, "the ground truth is video (the demo camera's source "
              "'sequences': thing ids persist within a header frame_id): also score STQ and ID "
              "switches, and write the files as a video data set", START),
    ParamSpec("report_period", 5.0, "log the running figures every so many seconds; 0 = never",
              START, low=0.0, high=3600.0),
)


class PanopticMonitor(Node):
    """Scores the panoptic node's output stream against the camera's ground truth, live.

    Parameters: ``output_dir`` (files written at :meth:`finish`; empty: none), ``sheet_rows``,
    ``truth_label_set``, ``segmentation_node`` (whose diagnostics to read), ``max_pending``
    (frames awaiting their output), ``video`` (score STQ and ID switches), ``report_period``
    (log the running figures every so many seconds; 0: never).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = declare_params(self, PARAMS)
        target, period = p["segmentation_node"], p["report_period"]
        self.output_dir = Path(p["output_dir"]) if p["output_dir"] else None
        self.evaluator = LiveEvaluator(get_label_set(p["truth_label_set"]),
                                       output_dir=self.output_dir,
                                       sheet_rows=int(p["sheet_rows"]),
                                       max_pending=int(p["max_pending"]),
                                       video=bool(p["video"]))
        ns = self.get_namespace().rstrip("/")
        self.target_name = f"{ns}/{target}"
        self.categories_received = threading.Event()
        self.diagnostics_received = threading.Event()
        self._lock = threading.Lock()
        self._diag: dict[str, Any] = {}
        self._diag_time = 0.0
        self.worker_errors = 0
        self.frames_before_active = 0
        self._outputs_3d = {"point_clouds": 0, "last_cloud_points": 0, "marker_arrays": 0,
                            "last_markers": 0}
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="monitor-worker", daemon=True)
        self._worker.start()

        reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        truth_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        sub = self.create_subscription
        seg = target
        # Camera topics first: when messages of several topics are ready at once, the executor
        # serves subscriptions in creation order, so a frame's ground truth usually comes before
        # its prediction (the evaluator copes with any order).
        self._subs = [
            sub(PanopticSegmentation, "camera/ground_truth", self._on_truth, truth_qos),
            sub(Image, "camera/image_raw", self._on_image, reliable),
            sub(PanopticSegmentation, f"{seg}/panoptic", self._on_panoptic, reliable),
            sub(InstanceCounts, f"{seg}/instance_counts", self._on_counts, reliable),
            sub(CategoryArray, f"{seg}/categories", self._on_categories, latched),
            sub(Image, f"{seg}/overlay", self._on_overlay, reliable),
            sub(PointCloud2, f"{seg}/points", self._on_points, reliable),
            sub(MarkerArray, f"{seg}/markers", self._on_markers, reliable),
            sub(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10),
        ]
        self.panoptic_topic = self._subs[2].topic_name
        self._report = (self.create_timer(float(period), self._log_status)
                        if period > 0 else None)

    # -- callbacks: timestamp and queue, nothing else ----------------------------------------
    def _on_panoptic(self, msg: PanopticSegmentation) -> None:
        now_ns = self.get_clock().now().nanoseconds
        key = frame_key(msg.header)
        self._queue.put(("pred", msg, (now_ns - stamp_ns(key)) / 1e9, time.monotonic()))

    def _on_truth(self, msg: PanopticSegmentation) -> None:
        # Frames sent before the node was up (its latched categories mark activation) are not
        # the node's to answer: counted apart, not as dropped.
        if not self.categories_received.is_set():
            self.frames_before_active += 1
            return
        self._queue.put(("truth", msg))

    def _on_image(self, msg: Image) -> None:
        if self.categories_received.is_set():
            self._queue.put(("image", msg))

    def _on_overlay(self, msg: Image) -> None:
        self._queue.put(("overlay", msg))

    def _on_counts(self, msg: InstanceCounts) -> None:
        self._queue.put(("counts", msg))

    def _on_points(self, msg: PointCloud2) -> None:
        with self._lock:
            self._outputs_3d["point_clouds"] += 1
            self._outputs_3d["last_cloud_points"] = int(msg.width) * int(msg.height)

    def _on_markers(self, msg: MarkerArray) -> None:
        with self._lock:
            self._outputs_3d["marker_arrays"] += 1
            self._outputs_3d["last_markers"] = len(msg.markers)

    def _on_categories(self, msg: CategoryArray) -> None:
        self.evaluator.set_model_labels(label_set_from_msg(msg))
        self.categories_received.set()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.split(":")[0] == self.target_name:
                values = diagnostic_values(status)
                with self._lock:
                    self._diag, self._diag_time = values, time.monotonic()
                self.diagnostics_received.set()

    # -- worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        ev = self.evaluator
        while True:
            item = self._queue.get()
            if item is None:
                return
            kind, msg = item[0], item[1]
            try:
                key = frame_key(msg.header)
                if kind == "pred":
                    ev.add_prediction(key, result_from_msg(msg), item[2], item[3])
                elif kind == "truth":
                    ev.add_truth(key, result_from_msg(msg))
                elif kind == "image":
                    ev.add_image(key, np.array(image_to_rgb(msg), copy=True))
                elif kind == "overlay":
                    ev.add_overlay(key, np.array(image_to_rgb(msg), copy=True))
                elif kind == "counts":
                    ev.add_counts({c.label: int(c.count) for c in msg.counts})
            except Exception as err:  # noqa: BLE001 - one bad message must not stop scoring
                self.worker_errors += 1
                self.get_logger().error(f"cannot evaluate a {kind} message: {err}",
                                        throttle_duration_sec=5.0)

    # -- figures -----------------------------------------------------------------------------
    def node_diagnostics(self) -> tuple[dict[str, Any], float]:
        """The panoptic node's latest diagnostics values and when they arrived (monotonic)."""
        with self._lock:
            return dict(self._diag), self._diag_time

    def outputs_3d(self) -> dict[str, int]:
        """The node's 3D outputs so far.

        ``point_clouds`` and ``marker_arrays`` received, the last cloud's point count
        (``last_cloud_points``) and the last array's markers (``last_markers``).
        """
        with self._lock:
            return dict(self._outputs_3d)

    def _log_status(self) -> None:
        self.get_logger().info(format_status(self.evaluator.snapshot()))

    def finish(self, timeout: float = 60.0) -> dict[str, Any]:
        """Stop evaluating (after what is queued), write the files, return the summary.

        The summary is :meth:`LiveEvaluator.close`'s plus ``node``: the panoptic node's last
        diagnostics values (frames received, processed, dropped, ...),
        ``frames_before_node_active``: camera frames ignored because they came before the node's
        categories (before it was active), and ``outputs_3d`` (:meth:`outputs_3d`).
        """
        self._queue.put(None)
        self._worker.join(timeout)
        summary = self.evaluator.close()
        summary["node"] = self.node_diagnostics()[0]
        summary["monitor_errors"] = self.worker_errors
        summary["frames_before_node_active"] = self.frames_before_active
        summary["outputs_3d"] = self.outputs_3d()
        return summary


def _report(node: PanopticMonitor) -> None:
    summary = node.finish()
    print(format_summary(summary), flush=True)
    if node.output_dir is not None:
        write_summary(node.output_dir / SUMMARY_NAME, summary)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``panoptic_monitor``: score until Ctrl-C, then report."""
    return spin_main(PanopticMonitor, args, lambda: MultiThreadedExecutor(num_threads=2),
                     on_stop=_report)


if __name__ == "__main__":
    sys.exit(main())
