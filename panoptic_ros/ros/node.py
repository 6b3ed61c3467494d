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

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import CompressedImage, Image

from panoptic_ros.categories import LabelSet
from panoptic_ros.devices import is_sticky_device_error
from panoptic_ros.models.live_params import LiveParam
from panoptic_ros.msg import CategoryArray, InstanceCounts, PanopticSegmentation
from panoptic_ros.ros.conversions import (
    ImageConversionError,
    InputBudget,
    compressed_to_rgb,
    image_to_rgb,
)
from panoptic_ros.ros.diagnostics import FrameStats, diagnostic_status
from panoptic_ros.ros.heap import HeapTrimmer, release_free_heap
from panoptic_ros.ros.latest_frame import Frame, LatestFrame, declared_pixels
from panoptic_ros.ros.messages import (
    categories_msg,
    instance_counts_msg,
    instances_msg,
    panoptic_msg,
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
from panoptic_ros.tracking import Tracker, TrackerConfig
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
        self._tracker: Tracker | None = None
        self._tracker_resets = 0
        self._stats = FrameStats()
        self._slot = LatestFrame()
        self._worker: threading.Thread | None = None
        self._subscription = None
        self._reliability: ReliabilityDecision | None = None  # of the image subscription
        self._last_frame = 0.0  # monotonic time of the last frame, or of subscribing
        self._last_frame_bytes: int | None = None  # payload size of the last frame
        self._input_warning = ""
        self._fatal = ""  # a sticky accelerator error: the process must restart
        self._pubs: dict[str, Any] = {}
        self._diag_pub = None
        self._diag_timer = None
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- parameters ------------------------------------------------------------------------
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

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
        self._input_timeout = float(changes.get("input_timeout", self._input_timeout))
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
        self._pubs = {
            "panoptic": pub(PanopticSegmentation, "~/panoptic", reliable),
            "counts": pub(InstanceCounts, "~/instance_counts", reliable),
            "categories": pub(CategoryArray, "~/categories", latched),
            "overlay": pub(Image, "~/overlay", reliable),
            "semantic": pub(Image, "~/semantic", reliable),
            "instances": pub(Image, "~/instances", reliable),
        }
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(1.0, self._on_timer)
        self._state = "inactive"
        self.get_logger().info(
            f"configured: {self._model_name} on {self._predictor.device}, "
            f"{len(label_set)} categories ({label_set.name})"
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
        self._pubs["categories"].publish(categories_msg(self._label_set, self._label_divisor))
        self._stats.reset()
        self._tracker = None  # new tracks: ids start again after a deactivate
        self._slot = LatestFrame()
        self._worker = threading.Thread(target=self._work, name="panoptic-worker", daemon=True)
        self._worker.start()
        self._subscribe()
        self._state = "active"
        self.get_logger().info(
            f"active: listening on {self._subscription.topic_name} "
            f"({_name(self._reliability)}: {self._reliability.reason})")
        return TransitionCallbackReturn.SUCCESS

    def _input_topic(self) -> tuple[type, str, Callable[[Any], None]]:
        if self._param("input_transport") == "compressed":
            return CompressedImage, "image/compressed", self._on_compressed
        return Image, "image", self._on_image

    def _subscribe(self) -> None:
        """(Re)create the image subscription with the reliability the publishers allow."""
        msg_type, topic, callback = self._input_topic()
        infos = self.get_publishers_info_by_topic(self.resolve_topic_name(topic))
        decision = choose_image_reliability(self._param("qos_reliability"),
                                            endpoint_reliabilities(infos))
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(self._param("qos_depth")),
                         reliability=decision.reliability)
        self._subscription = self.create_subscription(msg_type, topic, callback, qos)
        self._reliability = decision
        self._last_frame = time.monotonic()

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe, stop the worker, release the model and its accelerator memory."""
        self.stop_pipeline()
        if self._tracker is not None and self._tracker.last_track_id:
            self._tracker_resets += 1
            self.get_logger().info(
                f"tracker reset (deactivate): {self._tracker.last_track_id} tracks forgotten")
        self._tracker = None
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
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._slot.close():
            self._stats.dropped()
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
        for p in self._pubs.values():
            self.destroy_lifecycle_publisher(p)
        self._pubs = {}
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
        self._enqueue(Frame(msg, time.monotonic(), compressed=False))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._enqueue(Frame(msg, time.monotonic(), compressed=True))

    def _enqueue(self, frame: Frame) -> None:
        self._last_frame = frame.received
        self._last_frame_bytes = len(frame.msg.data)
        self._stats.received()
        if self._slot.put(frame):
            self._stats.dropped()

    def _work(self) -> None:
        """Worker thread: process the newest frame, at most ``max_rate`` per second.

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
            frame = slot.take(timeout=0.5)
            if frame is None:
                if slot.wait_closed(0):
                    return
                continue
            last_start = time.monotonic()
            self._process(frame)
            trimmer.after_frame()  # after a large frame's peak

    def _process(self, frame: Frame) -> None:
        """One frame: convert, infer, publish; bad input and failures are counted, not fatal."""
        msg, log = frame.msg, self.get_logger()
        header = msg.header
        where = f"frame_id '{header.frame_id}' stamp {header.stamp.sec}.{header.stamp.nanosec:09d}"
        budget = self._budget
        try:
            if frame.compressed:
                rgb = compressed_to_rgb(msg, budget)
            else:
                rgb = image_to_rgb(msg, budget)
        except ImageConversionError as err:
            self._stats.bad_input(str(err))
            log.warning(f"bad input image skipped ({where}): {err}", throttle_duration_sec=5.0)
            return
        if budget.oversize == "reduce" and declared_pixels(frame) != rgb.shape[0] * rgb.shape[1]:
            self._stats.reduced()
        try:
            t0 = time.perf_counter()
            result = self._predictor.predict(rgb)
            inference_s = time.perf_counter() - t0  # the Predictor: ids at the input's size
            keep = self._keep
            if keep is not None:
                result = result.keep_categories(keep)
            result = self._track(result, header)
            self._publish(result, header, rgb)
        except Exception as err:  # noqa: BLE001 - keep serving the next frame
            if not self.context.ok():  # shutting down (SIGINT) while this frame was in flight
                return
            self._stats.error(f"{type(err).__name__}: {err}")
            if is_sticky_device_error(err):
                self._device_failed(f"{type(err).__name__}: {err}")
                return
            log.error(f"processing failed ({where}): {err}", throttle_duration_sec=5.0)
            return
        self._stats.processed(inference_s, time.monotonic() - frame.received)

    def _track(self, result, header):
        """The tracking step (worker thread): persistent ids, or the result as it is.

        Time is the header stamp; a stamp going backwards or a frame_id change resets the
        tracker, logged once.
        """
        enabled, config = self._tracking
        if not enabled:
            self._tracker = None
            return result
        tracker = self._tracker
        if tracker is None:
            tracker = self._tracker = Tracker(config)
        elif tracker.config is not config:
            tracker.config = config  # a live change applies from this frame on
        stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
        result = tracker.update(result, stamp, header.frame_id)
        if tracker.reset_reason is not None:
            self._tracker_resets += 1
            self.get_logger().info(f"tracker reset: {tracker.reset_reason}")
        return result

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

    def _publish(self, result, header, rgb) -> None:
        pubs, label_set = self._pubs, self._label_set
        pubs["panoptic"].publish(panoptic_msg(result, header, label_set))
        pubs["counts"].publish(instance_counts_msg(result, header, label_set))
        if pubs["overlay"].get_subscription_count() > 0:
            image = overlay(rgb, result, label_set, alpha=self._overlay_alpha,
                            labels=self._overlay_labels)
            self._stats.overlay_computed()
            pubs["overlay"].publish(rgb_msg(image, header))
        if pubs["semantic"].get_subscription_count() > 0:
            pubs["semantic"].publish(semantic_msg(result, header, semantic_encoding(label_set)))
        if pubs["instances"].get_subscription_count() > 0:
            pubs["instances"].publish(instances_msg(result, header))

    # -- diagnostics and input watch -------------------------------------------------------
    def _on_timer(self) -> None:
        """1 Hz: follow the publishers' reliability (``auto``), watch for silence, report."""
        if self._subscription is not None:
            self._watch_input()
        self._publish_diagnostics()

    def _watch_input(self) -> None:
        """Resubscribe when ``auto`` reliability should change; WARN on a silent input."""
        topic = self._subscription.topic_name
        publishers = endpoint_reliabilities(self.get_publishers_info_by_topic(topic))
        decision = choose_image_reliability(self._param("qos_reliability"), publishers)
        if decision.reliability != self._reliability.reliability:
            self.get_logger().info(f"image subscription now {_name(decision)}: "
                                   f"{decision.reason}")
            self._subscribe()
        self._input_warning = no_frames_warning(
            len(publishers), time.monotonic() - self._last_frame, self._input_timeout,
            self._reliability.reliability, publishers, self._last_frame_bytes, topic) or ""
        if self._input_warning:
            self.get_logger().warning(self._input_warning, throttle_duration_sec=30.0)

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None:
            return
        predictor = self._predictor
        device = str(predictor.device) if predictor is not None else "none (model released)"
        live = predictor.inference_params() if predictor is not None else {}
        topic = self._subscription.topic_name if self._subscription is not None else ""
        threads = "none (model released)"
        if predictor is not None:
            import torch  # already loaded with the model

            threads = str(torch.get_num_threads())
        status = diagnostic_status(
            self._stats.snapshot(),
            name=f"{self.get_fully_qualified_name()}: panoptic segmentation",
            hardware_id=device,
            max_rate=self._max_rate,
            input_warning=self._input_warning,
            extra={"model": self._model_name, "device": device, "state": self._state,
                   "input_topic": topic,
                   "input_reliability": _name(self._reliability) if topic else "",
                   "torch_threads": threads,
                   "max_image_pixels": str(self._budget.max_pixels),
                   "oversize_policy": self._budget.oversize,
                   "tracking": self._tracking_summary(),
                   **{f"inference.{k}": str(v) for k, v in sorted(live.items())}},
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()  # report time, not a frame's
        self._diag_pub.publish(msg)


    def _tracking_summary(self) -> str:
        if not self._tracking[0]:
            return "off"
        tracker = self._tracker
        if tracker is None:
            return f"on (no frame yet; resets {self._tracker_resets})"
        return (f"on ({len(tracker.tracks)} live tracks, {tracker.last_track_id} since the last "
                f"reset; resets {self._tracker_resets})")


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
