"""The ``panoptic_segmentation`` lifecycle node.

Thin glue: message in -> :mod:`~panoptic_ros.ros.conversions` -> :class:`Predictor` ->
:mod:`~panoptic_ros.ros.messages` -> publishers. Latest frame wins: the subscription callback
only stores the newest frame; one worker thread runs inference on whatever is newest when it
is free, and frames replaced meanwhile are counted as dropped, so no queue ever builds up.

Lifecycle: configure loads the model (a load failure fails the transition, reason logged),
activate subscribes and starts the worker, deactivate stops both and frees accelerator memory,
cleanup unloads the model. ``autostart: true`` walks to active at start.

Run: ``ros2 run panoptic_ros panoptic_node --ros-args --params-file panoptic.yaml``, or from a
source checkout ``python -m panoptic_ros.ros.node --ros-args ...``.
Its parameters are in :mod:`~panoptic_ros.ros.node_params`, the latest-frame slot in
:mod:`~panoptic_ros.ros.latest_frame`, memory trimming in :mod:`~panoptic_ros.ros.heap`.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from panoptic_ros.categories import LabelSet
from panoptic_ros.devices import is_sticky_device_error
from panoptic_ros.geometry import (
    Intrinsics,
    StampPairer,
    labelled_points,
)
from panoptic_ros.models.live_params import LiveParam
from panoptic_ros.msg import CategoryArray, InstanceCounts, PanopticSegmentation
from panoptic_ros.ros.cameras import SINGLE, Camera, camera_names, where
from panoptic_ros.ros.conversions import (
    ImageConversionError,
    InputBudget,
    compressed_to_rgb,
    image_to_rgb,
)
from panoptic_ros.ros.diagnostics import diagnostic_status
from panoptic_ros.ros.heap import HeapTrimmer, release_free_heap
from panoptic_ros.ros.latest_frame import Frame, LatestFrames, declared_pixels
from panoptic_ros.ros.messages import (
    categories_msg,
    instance_counts_msg,
    instances_msg,
    markers_msg,
    panoptic_msg,
    pointcloud_msg,
    rgb_msg,
    semantic_encoding,
    semantic_msg,
)
from panoptic_ros.ros.node_params import (
    PARAMS,
    SPECS,
    TRACKER_PARAMS,
    check_live_value,
    describe_model,
    label_set_to_load,
    live_param_descriptor,
    parse_category_filter,
    predictor_config_from_params,
    tracker_config_from_params,
)
from panoptic_ros.ros.params import (
    LIVE,
    WHEN,
)
from panoptic_ros.ros.qos import (
    ReliabilityDecision,
    choose_image_reliability,
    endpoint_reliabilities,
    no_frames_warning,
)
from panoptic_ros.ros.spin import spin_main
from panoptic_ros.tracking import TrackerConfig
from panoptic_ros.viz import overlay

NODE_NAME = "panoptic_segmentation"


# -- the node --------------------------------------------------------------------------------
class PanopticSegmentationNode(LifecycleNode):
    """Lifecycle node publishing panoptic segmentation of a camera stream.

    Topics (relative; remap ``image``): subscribes ``image`` (sensor_msgs/Image) or
    ``image/compressed``; publishes ``~/panoptic``, ``~/instance_counts``, ``~/categories``
    (transient local), ``~/overlay``, ``~/semantic``, ``~/instances`` (the last three only
    computed while subscribed) and ``/diagnostics`` at 1 Hz.

    Parameters: the node's own (:data:`PARAMS`, declared at construction) and the loaded
    backend's live settings (its ``LIVE_PARAMS``, declared at configure; values from a
    parameter file or the command line apply then).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._live: dict[str, LiveParam] = {}  # the backend's live settings, declared
        for spec in PARAMS:
            if spec.default == []:
                # A list parameter declares its type (rclpy cannot infer one from []), then
                # takes [] unless a parameter file or the command line gave it a value.
                self.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, spec.descriptor())
                if not self.has_parameter(spec.name) or self._unset(spec.name):
                    self.set_parameters([Parameter(spec.name, Parameter.Type.STRING_ARRAY, [])])
            else:
                self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self._predictor = None  # loaded at configure, released at deactivate
        self._default_threads: int | None = None  # torch's own thread count, before cpu_threads
        self._cpu_threads = 0  # the cpu_threads of the last configure, reused at activate
        self._config = None  # the PredictorConfig of the last successful configure
        self._model_name = "none"
        self._label_set: LabelSet | None = None
        self._label_divisor = 0
        self._state = "unconfigured"
        # Live settings, read by the worker thread; replaced whole, never mutated.
        self._max_rate = float(self._param("max_rate"))
        self._overlay_alpha = float(self._param("overlay_alpha"))
        self._overlay_labels = bool(self._param("overlay_labels"))
        self._budget = self._input_budget(self._params())
        self._input_timeout = float(self._param("input_timeout"))
        self._keep: frozenset[int] | None = None
        # Tracking settings (on/off, thresholds), replaced whole by the parameter callback;
        # the tracker itself belongs to the worker thread (made at activate, dropped at
        # deactivate: a reactivated node starts new tracks).
        self._tracking: tuple[bool, TrackerConfig] = (
            bool(self._param("tracking")), tracker_config_from_params(self._params()))
        self._max_batch = int(self._param("max_batch"))
        self._cloud = (int(self._param("cloud_stride")), float(self._param("cloud_voxel")))
        self._marker_lifetime = float(self._param("marker_lifetime"))
        # The cameras of the last configure (one unnamed camera without ``cameras``): their
        # subscriptions, publishers, counters and trackers (see ros/cameras.py).
        self._cameras: dict[str, Camera] = {SINGLE: Camera(SINGLE)}
        self._slot = LatestFrames([SINGLE])
        self._worker: threading.Thread | None = None
        self._fatal = ""  # a sticky accelerator error: the process must restart
        self._diag_pub = None
        self._diag_timer = None
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- parameters ------------------------------------------------------------------------
    def _param(self, name: str) -> Any:
        value = self.get_parameter(name).value
        return list(value) if isinstance(value, (list, tuple)) else value

    def _unset(self, name: str) -> bool:
        try:
            self.get_parameter(name)
        except ParameterUninitializedException:
            return True
        return False

    def _params(self) -> dict[str, Any]:
        return {spec.name: self._param(spec.name) for spec in PARAMS}

    def _live_values(self) -> dict[str, Any]:
        """The backend's live settings as Predictor arguments (``None``: the model's own)."""
        values = {name: self._param(name) for name in self._live}
        return {name: None if v == self._live[name].unset else v for name, v in values.items()}

    @staticmethod
    def _input_budget(values: Mapping[str, Any]) -> InputBudget:
        return InputBudget(max_pixels=int(values["max_image_pixels"]),
                           max_compressed_bytes=int(values["max_compressed_bytes"]),
                           oversize=str(values["oversize_policy"]))

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate every change; apply the live ones; refuse all on any invalid value."""
        if any(not p.name for p in params):
            # rclpy (9.x) checks for undeclared names with any(names), so an empty name passes
            # and would be created as a new parameter ('' is falsy).
            return SetParametersResult(successful=False, reason="empty parameter name")
        changes = {p.name: p.value for p in params if p.name in SPECS or p.name in self._live}
        for name, value in changes.items():
            problem = (SPECS[name].check(value) if name in SPECS
                       else check_live_value(self._live[name], value))
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        keep = self._keep
        if "category_filter" in changes:
            label_set = self._label_set
            if label_set is None:  # unconfigured: judge against what configure would load
                label_set = label_set_to_load({**self._params(), **changes})
            try:
                parsed = (parse_category_filter(changes["category_filter"], label_set)
                          if label_set is not None else None)
            except ValueError as err:
                return SetParametersResult(successful=False, reason=str(err))
            if self._label_set is not None:
                keep = parsed
        tracking = self._tracking
        if {"tracking", *TRACKER_PARAMS} & set(changes):
            try:
                config = tracker_config_from_params({**self._params(), **changes})
            except ValueError as err:
                return SetParametersResult(successful=False, reason=str(err))
            tracking = (bool(changes.get("tracking", tracking[0])), config)
        live = {k: (None if v == self._live[k].unset else v)
                for k, v in changes.items() if k in self._live}
        if live and self._predictor is not None:
            try:
                self._predictor.set_inference_params(**live)
            except (ValueError, TypeError) as err:
                return SetParametersResult(successful=False, reason=str(err))
        self._keep = keep
        self._tracking = tracking
        rate_changed = float(changes.get("max_rate", self._max_rate)) != self._max_rate
        self._max_rate = float(changes.get("max_rate", self._max_rate))
        self._overlay_alpha = float(changes.get("overlay_alpha", self._overlay_alpha))
        self._overlay_labels = bool(changes.get("overlay_labels", self._overlay_labels))
        self._cloud = (int(changes.get("cloud_stride", self._cloud[0])),
                       float(changes.get("cloud_voxel", self._cloud[1])))
        self._marker_lifetime = float(changes.get("marker_lifetime", self._marker_lifetime))
        self._input_timeout = float(changes.get("input_timeout", self._input_timeout))
        self._max_batch = int(changes.get("max_batch", self._max_batch))
        if {"max_image_pixels", "max_compressed_bytes", "oversize_policy"} & set(changes):
            self._budget = self._input_budget({**self._params(), **changes})
        if rate_changed:
            self._slot.poke()  # a worker pausing for the old rate re-reads it now
        for name in changes:
            when = SPECS[name].when if name in SPECS else LIVE
            if when != LIVE and self._state != "unconfigured":
                self.get_logger().info(f"parameter {name} changed; it {WHEN[when]}")
        return SetParametersResult(successful=True)

    def _declare_live_params(self, specs: tuple[LiveParam, ...]) -> None:
        """Declare the loaded backend's live settings as parameters.

        Declared settings that the backend has too (same name, type and meaning) keep their
        values; others are undeclared. New ones take their value from a parameter file or the
        command line when given there (rclpy's overrides), else the unset value.
        """
        new = {spec.name: spec for spec in specs}
        for name, old in list(self._live.items()):
            kept = new.get(name)
            if kept is None or kept.with_default(old.default) != old:
                self.undeclare_parameter(name)
                del self._live[name]
        for spec in specs:
            if spec.name in self._live:
                self._live[spec.name] = spec  # the loaded model's own value as default
                continue
            if spec.name in SPECS:
                raise ValueError(f"backend setting {spec.name!r} clashes with a node parameter")
            self._live[spec.name] = spec  # the set-parameters callback validates with it
            try:
                self.declare_parameter(spec.name, spec.unset, live_param_descriptor(spec))
            except Exception:
                del self._live[spec.name]
                raise

    # -- lifecycle -------------------------------------------------------------------------
    def _load(self, config) -> None:
        """Build the Predictor (slow: reads weights, moves them to the device).

        The configure-time ``cpu_threads`` (> 0) sets torch's intra-op thread count of the
        process first, 0 restores torch's own; the backend's live settings are applied after.
        """
        import torch

        from panoptic_ros.inference import Predictor

        if self._default_threads is None:
            self._default_threads = torch.get_num_threads()
        torch.set_num_threads(self._cpu_threads or self._default_threads)
        self._predictor = Predictor(config)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and create the publishers; FAILURE (reason logged) if it fails."""
        params = self._params()
        try:
            config = predictor_config_from_params(params)
            self._cpu_threads = int(params["cpu_threads"])
            self._load(config)
            label_set = self._predictor.label_set
            keep = parse_category_filter(params["category_filter"], label_set)
            self._declare_live_params(self._predictor.live_params())
            self._predictor.set_inference_params(**self._live_values())
        except Exception as err:  # noqa: BLE001 - any load failure fails the transition
            self._release()
            self.get_logger().error(
                f"configure failed, model not loaded ({type(err).__name__}): {err}")
            return TransitionCallbackReturn.FAILURE
        self._config, self._label_set, self._keep = config, label_set, keep
        self._model_name = describe_model(config)
        self._label_divisor = int(self._predictor.model.label_divisor)
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        pub = self.create_lifecycle_publisher
        self._cameras = {name: Camera(name) for name in camera_names(params["cameras"])}
        for cam in self._cameras.values():
            out = cam.output_topic
            cam.pubs = {
                "panoptic": pub(PanopticSegmentation, out("panoptic"), reliable),
                "counts": pub(InstanceCounts, out("instance_counts"), reliable),
                "categories": pub(CategoryArray, out("categories"), latched),
                "overlay": pub(Image, out("overlay"), reliable),
                "semantic": pub(Image, out("semantic"), reliable),
                "instances": pub(Image, out("instances"), reliable),
                "points": pub(PointCloud2, out("points"), reliable),
                "markers": pub(MarkerArray, out("markers"), reliable),
            }
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(1.0, self._on_timer)
        self._state = "inactive"
        self.get_logger().info(
            f"configured: {self._model_name} on {self._predictor.device}, "
            f"{len(label_set)} categories ({label_set.name})"
            + (f", cameras {list(self._cameras)}" if SINGLE not in self._cameras else "")
        )
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Reload the model if deactivate released it, publish the categories, subscribe."""
        if self._fatal:
            self.get_logger().error(f"activate refused: the accelerator failed earlier "
                                    f"({self._fatal}); restart the node process")
            return TransitionCallbackReturn.FAILURE
        if self._predictor is None:
            try:
                self._load(self._config)
                self._predictor.set_inference_params(**self._live_values())
            except Exception as err:  # noqa: BLE001 - fails the transition
                self._release()
                self.get_logger().error(
                    f"activate failed, model not loaded ({type(err).__name__}): {err}")
                return TransitionCallbackReturn.FAILURE
        ret = super().on_activate(state)  # enables the lifecycle publishers
        if ret != TransitionCallbackReturn.SUCCESS:
            return ret
        categories = categories_msg(self._label_set, self._label_divisor)
        for cam in self._cameras.values():
            cam.pubs["categories"].publish(categories)
            cam.stats.reset()
            cam.tracker = None  # new tracks: ids start again after a deactivate
        self._slot = LatestFrames(list(self._cameras))
        self._worker = threading.Thread(target=self._work, name="panoptic-worker", daemon=True)
        self._worker.start()
        for cam in self._cameras.values():
            self._subscribe(cam)
            if self._param("use_depth"):
                self._subscribe_depth(cam)
            self.get_logger().info(
                f"active: {cam.label}listening on {cam.subscription.topic_name} "
                f"({_name(cam.reliability)}: {cam.reliability.reason})")
        self._state = "active"
        return TransitionCallbackReturn.SUCCESS

    def _input_topic(self, cam: Camera) -> tuple[type, str, Callable[[Any], None]]:
        if self._param("input_transport") == "compressed":
            return (CompressedImage, cam.input_topic("image/compressed"),
                    lambda msg: self._enqueue(cam, Frame(msg, time.monotonic(), True)))
        return (Image, cam.input_topic("image"),
                lambda msg: self._enqueue(cam, Frame(msg, time.monotonic(), False)))

    def _subscribe(self, cam: Camera) -> None:
        """(Re)create a camera's image subscription with the reliability its publishers allow."""
        msg_type, topic, callback = self._input_topic(cam)
        infos = self.get_publishers_info_by_topic(self.resolve_topic_name(topic))
        decision = choose_image_reliability(self._param("qos_reliability"),
                                            endpoint_reliabilities(infos))
        if cam.subscription is not None:
            self.destroy_subscription(cam.subscription)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(self._param("qos_depth")),
                         reliability=decision.reliability)
        cam.subscription = self.create_subscription(msg_type, topic, callback, qos)
        cam.reliability = decision
        cam.last_frame = time.monotonic()

    def _subscribe_depth(self, cam: Camera) -> None:
        """A camera's depth image and camera_info subscriptions, and its stamp pairer.

        Depth takes the reliability its publishers allow (as the image); camera_info is best
        effort (it matches every publisher; the newest one is kept).
        """
        topic = cam.input_topic("depth")
        infos = self.get_publishers_info_by_topic(self.resolve_topic_name(topic))
        decision = choose_image_reliability(self._param("qos_reliability"),
                                            endpoint_reliabilities(infos))
        depth_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                               reliability=decision.reliability)
        info_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                              reliability=ReliabilityPolicy.BEST_EFFORT)
        cam.pairer = StampPairer(slop_s=float(self._param("depth_slop")), capacity=10)
        cam.waiting_since = None
        cam.camera_info_topic = self.resolve_topic_name(cam.input_topic("camera_info"))
        cam.depth_subscriptions = [
            self.create_subscription(Image, topic, lambda m: self._on_depth(cam, m), depth_qos),
            self.create_subscription(CameraInfo, cam.input_topic("camera_info"),
                                     lambda m: setattr(cam, "camera_info", m), info_qos),
        ]

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe, stop the worker, release the model and its accelerator memory."""
        self.stop_pipeline()
        for cam in self._cameras.values():
            if cam.tracker is not None and cam.tracker.last_track_id:
                cam.tracker_resets += 1
                self.get_logger().info(f"{cam.label}tracker reset (deactivate): "
                                       f"{cam.tracker.last_track_id} tracks forgotten")
            cam.tracker = None
        self._release()
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy the publishers and unload the model."""
        self._teardown()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything, whatever the state."""
        self.stop_pipeline()
        self._teardown()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Back to unconfigured after an error in a transition."""
        self.stop_pipeline()
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def stop_pipeline(self, timeout: float | None = None) -> bool:
        """Unsubscribe and stop the worker (a frame in flight finishes first).

        Args:
            timeout: longest wait for the worker, seconds (``None``: until it ends).

        Returns:
            ``True`` when the worker has ended (``False``: still busy with its frame).
        """
        for cam in self._cameras.values():
            if cam.subscription is not None:
                self.destroy_subscription(cam.subscription)
                cam.subscription = None
            for sub in cam.depth_subscriptions:
                self.destroy_subscription(sub)
            cam.depth_subscriptions, cam.pairer = [], None
        for name, count in self._slot.close().items():
            if name in self._cameras:
                self._cameras[name].stats.dropped(count)
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
            if worker.is_alive():
                return False
            self._worker = None
        return True

    def _release(self) -> None:
        if self._predictor is not None:
            self._predictor.release()  # drops the model, empties the CUDA cache
        self._predictor = None
        gc.collect()
        release_free_heap()  # an inactive node keeps no frame-sized malloc caches

    def _teardown(self) -> None:
        for cam in self._cameras.values():
            for p in cam.pubs.values():
                self.destroy_lifecycle_publisher(p)
            cam.pubs = {}
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        self._release()
        self._config = None
        self._label_set = None
        self._state = "unconfigured"

    # -- frames ----------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        """The single camera's raw frame (what its subscription calls)."""
        self._enqueue(self._cameras[SINGLE], Frame(msg, time.monotonic(), compressed=False))

    def _enqueue(self, cam: Camera, frame: Frame) -> None:
        cam.last_frame = frame.received
        cam.last_frame_bytes = len(frame.msg.data)
        cam.stats.received()
        for ready in cam.pair_colour(frame):
            self._put(cam, ready)

    def _on_depth(self, cam: Camera, msg: Image) -> None:
        for ready in cam.pair_depth(msg):
            self._put(cam, ready)

    def _put(self, cam: Camera, frame: Frame) -> None:
        if self._slot.put(cam.name, frame):
            cam.stats.dropped()

    def _work(self) -> None:
        """Worker thread: process the newest frames, at most ``max_rate`` batches per second.

        A batch holds the newest frame of every camera that has one (at most ``max_batch``,
        round robin), run through the model together.

        The pause between frames is recomputed from the current ``max_rate`` whenever it
        changes (the parameter callback pokes the slot), so a new rate applies at once.
        """
        slot = self._slot
        trimmer = HeapTrimmer()
        last_start = -float("inf")
        while True:
            rate = self._max_rate
            wait = last_start + 1.0 / rate - time.monotonic() if rate > 0 else 0.0
            if wait > 0:
                if slot.wait_closed(wait):
                    return
                continue  # the pause ended or the rate changed: look again
            batch = slot.take(timeout=0.5, limit=self._max_batch)
            if not batch:
                if slot.wait_closed(0):
                    return
                continue
            last_start = time.monotonic()
            self._process([(self._cameras[name], frame) for name, frame in batch])
            trimmer.after_frame()  # after a large frame's peak

    def _process(self, batch: list[tuple[Camera, Frame]]) -> None:
        """One batch: convert, infer, publish; bad input and failures are counted, not fatal.

        A camera's bad frame is refused alone; the others of the batch are served.
        """
        log, budget = self.get_logger(), self._budget
        ready = []  # (camera, frame, rgb)
        for cam, frame in batch:
            msg = frame.msg
            try:
                if frame.compressed:
                    rgb = compressed_to_rgb(msg, budget)
                else:
                    rgb = image_to_rgb(msg, budget)
            except ImageConversionError as err:
                cam.stats.bad_input(str(err))
                log.warning(f"{cam.label}bad input image skipped ({where(msg.header)}): "
                            f"{err}", throttle_duration_sec=5.0)
                continue
            if (budget.oversize == "reduce"
                    and declared_pixels(frame) != rgb.shape[0] * rgb.shape[1]):
                cam.stats.reduced()
            ready.append((cam, frame, rgb))
        if not ready:
            return
        t0 = time.perf_counter()
        try:
            results = self._predictor.predict([rgb for _, _, rgb in ready])
        except Exception as err:  # noqa: BLE001 - keep serving the next frames
            self._failed([(cam, frame) for cam, frame, _ in ready], err)
            return
        inference_s = time.perf_counter() - t0  # the Predictor: ids at each input's size
        keep = self._keep
        for (cam, frame, rgb), result in zip(ready, results, strict=True):
            header = frame.msg.header
            try:
                if keep is not None:
                    result = result.keep_categories(keep)
                result = cam.track(result, header, *self._tracking, self.get_logger())
                result, geometry = cam.add_3d(frame, result, self.get_logger())
                self._publish(cam, result, header, rgb, geometry)
            except Exception as err:  # noqa: BLE001 - the other cameras are still served
                self._failed([(cam, frame)], err)
                continue
            cam.stats.processed(inference_s, time.monotonic() - frame.received)

    def _failed(self, frames: list[tuple[Camera, Frame]], err: Exception) -> None:
        """Count a processing failure for each frame; a sticky device error deactivates."""
        if not self.context.ok():  # shutting down (SIGINT) while this batch was in flight
            return
        for cam, _ in frames:
            cam.stats.error(f"{type(err).__name__}: {err}")
        if is_sticky_device_error(err):
            self._device_failed(f"{type(err).__name__}: {err}")
            return
        frames_text = ", ".join(cam.label + where(frame.msg.header) for cam, frame in frames)
        self.get_logger().error(f"processing failed ({frames_text}): {err}",
                                throttle_duration_sec=5.0)

    def _device_failed(self, reason: str) -> None:
        """Stop serving after a sticky accelerator error, and deactivate with the reason.

        After a device-side assert or an illegal access every later frame would fail too;
        rather than log one error per frame, the node deactivates and refuses activation until
        the process restarts.
        """
        self._fatal = reason
        self._slot.close()  # this worker ends after this frame
        self.get_logger().error(
            f"the accelerator failed and cannot recover in this process ({reason}); "
            "deactivating: restart the node")
        timer = None

        def deactivate() -> None:  # on the executor thread, not the worker's
            self.destroy_timer(timer)
            if self._state == "active":
                self.trigger_deactivate()

        timer = self.create_timer(0.0, deactivate)

    def _publish(self, cam: Camera, result, header, rgb,
                 geometry: tuple[np.ndarray, Intrinsics] | None = None) -> None:
        pubs, label_set = cam.pubs, self._label_set
        pubs["panoptic"].publish(panoptic_msg(result, header, label_set))
        pubs["counts"].publish(instance_counts_msg(result, header, label_set))
        if pubs["overlay"].get_subscription_count() > 0:
            image = overlay(rgb, result, label_set, alpha=self._overlay_alpha,
                            labels=self._overlay_labels)
            cam.stats.overlay_computed()
            pubs["overlay"].publish(rgb_msg(image, header))
        if pubs["semantic"].get_subscription_count() > 0:
            pubs["semantic"].publish(semantic_msg(result, header, semantic_encoding(label_set)))
        if pubs["instances"].get_subscription_count() > 0:
            pubs["instances"].publish(instances_msg(result, header))
        if geometry is not None and pubs["points"].get_subscription_count() > 0:
            stride, voxel = self._cloud
            points = labelled_points(result, geometry[0], rgb, geometry[1], stride, voxel)
            pubs["points"].publish(pointcloud_msg(points, header))
        if pubs["markers"].get_subscription_count() > 0:
            markers, cam.marker_ids = markers_msg(result, header, label_set, cam.marker_ids,
                                                  self._marker_lifetime)
            if markers.markers:
                pubs["markers"].publish(markers)

    # -- diagnostics and input watch -------------------------------------------------------
    def _on_timer(self) -> None:
        """1 Hz: follow the publishers' reliability (``auto``), watch for silence, report."""
        for cam in self._cameras.values():
            if cam.subscription is not None:
                self._watch_input(cam)
            for ready in cam.release_stale(time.monotonic()):
                self._put(cam, ready)
        self._publish_diagnostics()

    def _watch_input(self, cam: Camera) -> None:
        """Resubscribe when ``auto`` reliability should change; WARN on a silent input."""
        topic = cam.subscription.topic_name
        publishers = endpoint_reliabilities(self.get_publishers_info_by_topic(topic))
        decision = choose_image_reliability(self._param("qos_reliability"), publishers)
        if decision.reliability != cam.reliability.reliability:
            self.get_logger().info(f"{cam.label}image subscription now {_name(decision)}: "
                                   f"{decision.reason}")
            self._subscribe(cam)
        cam.input_warning = no_frames_warning(
            len(publishers), time.monotonic() - cam.last_frame, self._input_timeout,
            cam.reliability.reliability, publishers, cam.last_frame_bytes, topic) or ""
        if cam.input_warning:
            self.get_logger().warning(cam.label + cam.input_warning, throttle_duration_sec=30.0)

    def _publish_diagnostics(self) -> None:
        """One status per camera (named after the node, and the camera when there are several)."""
        if self._diag_pub is None:
            return
        predictor = self._predictor
        device = str(predictor.device) if predictor is not None else "none (model released)"
        live = predictor.inference_params() if predictor is not None else {}
        threads = "none (model released)"
        if predictor is not None:
            import torch  # already loaded with the model

            threads = str(torch.get_num_threads())
        statuses = []
        for cam in self._cameras.values():
            topic = cam.subscription.topic_name if cam.subscription is not None else ""
            name = f"{self.get_fully_qualified_name()}: panoptic segmentation"
            statuses.append(diagnostic_status(
                cam.stats.snapshot(),
                name=f"{name} ({cam.name})" if cam.name else name,
                hardware_id=device,
                max_rate=self._max_rate,
                input_warning=cam.input_warning,
                extra={"model": self._model_name, "device": device, "state": self._state,
                       "camera": cam.name, "input_topic": topic,
                       "input_reliability": _name(cam.reliability) if topic else "",
                       "torch_threads": threads,
                       "max_image_pixels": str(self._budget.max_pixels),
                       "oversize_policy": self._budget.oversize,
                       "tracking": cam.tracking_summary(self._tracking[0]),
                       **cam.depth_summary(bool(self._param("use_depth"))),
                       **{f"inference.{k}": str(v) for k, v in sorted(live.items())}},
            ))
        msg = DiagnosticArray(status=statuses)
        msg.header.stamp = self.get_clock().now().to_msg()  # report time, not a frame's
        self._diag_pub.publish(msg)

def _name(decision: ReliabilityDecision) -> str:
    return "reliable" if decision.reliable else "best_effort"


SHUTDOWN_WAIT_S = 1.5
"""Longest wait for a frame in flight when the process is asked to stop (SIGINT/SIGTERM)."""

def main(args: list[str] | None = None) -> int:
    """Entry point of ``panoptic_node``: spin the node until SIGINT/SIGTERM.

    A frame in flight gets :data:`SHUTDOWN_WAIT_S` to finish; a longer one (a large model on
    a CPU) is abandoned so that the process always ends within about two seconds.
    """
    nodes: list[PanopticSegmentationNode] = []

    def make_node() -> PanopticSegmentationNode:
        node = PanopticSegmentationNode()
        nodes.append(node)
        if node.get_parameter("autostart").value:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        return node

    finished = True

    def on_stop(node: PanopticSegmentationNode) -> None:
        nonlocal finished
        finished = node.stop_pipeline(timeout=SHUTDOWN_WAIT_S)

    code = spin_main(make_node, args, on_stop=on_stop)
    if not finished:  # the worker is inside the network: leave without waiting for it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
