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
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
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
from panoptic_ros.msg import CategoryArray, InstanceCounts, PanopticSegmentation
from panoptic_ros.ros.conversions import ImageConversionError, compressed_to_rgb, image_to_rgb
from panoptic_ros.ros.diagnostics import FrameStats, diagnostic_status
from panoptic_ros.ros.messages import (
    categories_msg,
    filter_categories,
    instance_counts_msg,
    instances_msg,
    panoptic_msg,
    rgb_msg,
    semantic_encoding,
    semantic_msg,
)
from panoptic_ros.viz import overlay

NODE_NAME = "panoptic_segmentation"

# -- parameters ------------------------------------------------------------------------------
CONFIGURE, ACTIVATE, LIVE, START = "configure", "activate", "live", "start"
_WHEN = {
    CONFIGURE: "applies at the next configure",
    ACTIVATE: "applies at the next activate",
    LIVE: "applies immediately",
    START: "read once at start",
}


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default, meaning, valid values and when a change takes effect."""

    name: str
    default: Any
    description: str
    when: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None

    def descriptor(self) -> ParameterDescriptor:
        """The ``ParameterDescriptor`` declared for it: description, range, constraints."""
        d = ParameterDescriptor(
            name=self.name, description=f"{self.description} ({_WHEN[self.when]})"
        )
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.low is not None and isinstance(self.default, float):
            d.floating_point_range = [
                FloatingPointRange(from_value=float(self.low), to_value=float(self.high))
            ]
        elif self.low is not None and isinstance(self.default, int):
            d.integer_range = [IntegerRange(from_value=int(self.low), to_value=int(self.high))]
        return d

    def check(self, value: Any) -> str | None:
        """Why ``value`` is invalid, or ``None`` when it is fine (ranges included)."""
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {list(self.choices)}, got {value!r}"
        if self.low is not None and not self.low <= value <= self.high:
            return f"{self.name} must lie in [{self.low}, {self.high}], got {value!r}"
        return None


MODEL_DEFAULT = "the model's own setting"

PARAMS: tuple[ParamSpec, ...] = (
    # Model: read by predictor_config_from_params at configure.
    ParamSpec("backend", "efficientps", "model backend (efficientps, or a registered one)",
              CONFIGURE),
    ParamSpec("weights", "demo", "demo (the bundled model), a checkpoint path (model id or "
              "folder for pretrained backends), or empty for random initialisation of "
              "'variant' (tests and plumbing checks; its output is meaningless)", CONFIGURE),
    ParamSpec("variant", "narrow", "network variant when weights is empty: b0..b7, narrow",
              CONFIGURE),
    ParamSpec("label_set", "synthetic", "categories when weights is empty: coco_panoptic, "
              "cityscapes, synthetic or a COCO-style JSON path", CONFIGURE),
    ParamSpec("device", "auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N",
              CONFIGURE),
    ParamSpec("cpu_threads", 0, "torch CPU threads of this process (torch.set_num_threads); "
              "0 = torch's default, one per core. Fewer than the cores helps when the camera "
              "driver and other nodes share the CPU", CONFIGURE, low=0, high=1024),
    ParamSpec("precision", "fp32", "network precision; fp16/bf16 run under autocast",
              CONFIGURE, choices=("fp32", "fp16", "bf16")),
    ParamSpec("compile", False, "torch.compile the network (slow first frame)", CONFIGURE),
    ParamSpec("input_size", 0, "shorter image side fed to the network, pixels; 0 = "
              + MODEL_DEFAULT + " (outputs are always at the input image's size)", CONFIGURE,
              low=0, high=8192),
    ParamSpec("label_divisor", 0, "pixel = category_id * label_divisor + instance_id; 0 = "
              + MODEL_DEFAULT, CONFIGURE, low=0, high=1_000_000),
    # Fusion: live.
    ParamSpec("score_threshold", -1.0, "minimum detection score of a thing instance; -1 = "
              + MODEL_DEFAULT, LIVE, low=-1.0, high=1.0),
    ParamSpec("overlap_threshold", -1.0, "drop a detection when more than this fraction of "
              "its mask is taken by higher-scoring ones; -1 = " + MODEL_DEFAULT, LIVE,
              low=-1.0, high=1.0),
    ParamSpec("stuff_area", -1, "stuff regions smaller than this many pixels (at the model's "
              "reference resolution) become void; -1 = " + MODEL_DEFAULT, LIVE,
              low=-1, high=100_000_000),
    ParamSpec("fusion_strategy", "", "efficientps or panoptic_fpn; empty = " + MODEL_DEFAULT,
              LIVE, choices=("", "efficientps", "panoptic_fpn")),
    # Node behaviour.
    ParamSpec("max_rate", 0.0, "at most this many frames per second are processed; 0 = as "
              "fast as the model runs", LIVE, low=0.0, high=1000.0),
    ParamSpec("overlay_alpha", 0.5, "weight of the category colours in ~/overlay", LIVE,
              low=0.0, high=1.0),
    ParamSpec("overlay_labels", False, "write category names into ~/overlay", LIVE),
    ParamSpec("category_filter", "", "comma-separated category names or ids to publish; "
              "other categories become void; empty = all", LIVE),
    ParamSpec("input_transport", "raw", "raw: sensor_msgs/Image on 'image'; compressed: "
              "sensor_msgs/CompressedImage (jpeg, png) on 'image/compressed'", ACTIVATE,
              choices=("raw", "compressed")),
    ParamSpec("qos_reliability", "best_effort", "reliability of the image subscription "
              "(best_effort = sensor data)", ACTIVATE, choices=("best_effort", "reliable")),
    ParamSpec("qos_depth", 1, "queue depth of the image subscription (keep last)", ACTIVATE,
              low=1, high=100),
    ParamSpec("autostart", True, "configure and activate at start", START),
)
SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMS}
FUSION_PARAMS = {  # ROS parameter -> Predictor.set_inference_params name
    "score_threshold": "score_threshold",
    "overlap_threshold": "overlap_threshold",
    "stuff_area": "stuff_area",
    "fusion_strategy": "strategy",
}


def _unset(value: Any) -> bool:
    """Whether a parameter value is its "the model's own setting" sentinel."""
    return value == "" or (not isinstance(value, bool) and value < 0)


def predictor_config_from_params(values: Mapping[str, Any]):
    """Map the node's parameters onto a :class:`~panoptic_ros.inference.PredictorConfig`.

    The one place where ROS parameters become model configuration: ``weights: ""`` means
    random initialisation (``weights=None``); 0 for ``input_size``/``label_divisor``, -1 for
    thresholds and ``""`` for ``fusion_strategy`` leave the model's own setting (``None``).

    Raises:
        ValueError: a parameter outside its valid values (the message names it).
    """
    from panoptic_ros.inference import PredictorConfig

    for name, value in values.items():
        problem = SPECS[name].check(value) if name in SPECS else None
        if problem:
            raise ValueError(problem)
    fusion = {name: (None if _unset(values[name]) else values[name]) for name in FUSION_PARAMS}
    return PredictorConfig(
        backend=values["backend"],
        weights=values["weights"] or None,
        variant=values["variant"],
        label_set=values["label_set"],
        device=values["device"],
        precision=values["precision"],
        compile=bool(values["compile"]),
        input_size=int(values["input_size"]) or None,
        label_divisor=int(values["label_divisor"]) or None,
        score_threshold=fusion["score_threshold"],
        overlap_threshold=fusion["overlap_threshold"],
        stuff_area=fusion["stuff_area"],
        fusion_strategy=fusion["fusion_strategy"],
    )


def parse_category_filter(text: str, label_set: LabelSet) -> frozenset[int] | None:
    """Category ids named by ``category_filter`` (names or ids, comma-separated).

    Returns:
        ``None`` for an empty filter (publish everything), else the ids to keep.

    Raises:
        ValueError: an entry that is not a category of ``label_set``.
    """
    keep = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            cat = label_set.by_id(int(item)) if item.isdigit() else label_set.by_name(item)
        except ValueError as err:  # CategoryError
            raise ValueError(f"category_filter: {err}") from None
        keep.add(cat.id)
    return frozenset(keep) if keep else None


# -- latest-frame slot -----------------------------------------------------------------------
@dataclass
class Frame:
    """An input message waiting for the worker, with its arrival time (monotonic, s)."""

    msg: Image | CompressedImage
    received: float
    compressed: bool


class LatestFrame:
    """A one-place mailbox: :meth:`put` replaces what the worker has not taken yet."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False

    def put(self, frame: Frame) -> bool:
        """Store ``frame``; ``True`` when it replaced an unprocessed one (a dropped frame)."""
        with self._cond:
            replaced = self._frame is not None
            self._frame = frame
            self._cond.notify()
            return replaced

    def take(self, timeout: float) -> Frame | None:
        """The newest frame, waiting up to ``timeout`` s; ``None`` if none or closed."""
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            return None if self._closed else frame

    def wait_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for :meth:`close`; ``True`` when closed (rate limiting)."""
        with self._cond:
            if not self._closed:
                self._cond.wait_for(lambda: self._closed, timeout)
            return self._closed

    def close(self) -> int:
        """Wake the worker for good; returns 1 if an unprocessed frame was discarded."""
        with self._cond:
            pending = int(self._frame is not None)
            self._frame = None
            self._closed = True
            self._cond.notify_all()
            return pending


# -- the node --------------------------------------------------------------------------------
class PanopticSegmentationNode(LifecycleNode):
    """Lifecycle node publishing panoptic segmentation of a camera stream.

    Topics (relative; remap ``image``): subscribes ``image`` (sensor_msgs/Image) or
    ``image/compressed``; publishes ``~/panoptic``, ``~/instance_counts``, ``~/categories``
    (transient local), ``~/overlay``, ``~/semantic``, ``~/instances`` (the last three only
    computed while subscribed) and ``/diagnostics`` at 1 Hz.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self._predictor = None  # loaded at configure, released at deactivate
        self._default_threads: int | None = None  # torch's own thread count, before cpu_threads
        self._config = None  # the PredictorConfig of the last successful configure
        self._label_set: LabelSet | None = None
        self._label_divisor = 0
        self._fusion_defaults: dict[str, Any] = {}
        self._state = "unconfigured"
        # Live settings, read by the worker thread; replaced whole, never mutated.
        self._max_rate = float(self._param("max_rate"))
        self._overlay_alpha = float(self._param("overlay_alpha"))
        self._overlay_labels = bool(self._param("overlay_labels"))
        self._keep: frozenset[int] | None = None
        self._stats = FrameStats()
        self._slot = LatestFrame()
        self._worker: threading.Thread | None = None
        self._subscription = None
        self._pubs: dict[str, Any] = {}
        self._diag_pub = None
        self._diag_timer = None
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- parameters ------------------------------------------------------------------------
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _params(self) -> dict[str, Any]:
        return {spec.name: self._param(spec.name) for spec in PARAMS}

    def _fusion_values(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Predictor.set_inference_params arguments for changed fusion parameters."""
        out = {}
        for name, value in changes.items():
            if name in FUSION_PARAMS:
                key = FUSION_PARAMS[name]
                out[key] = self._fusion_defaults[key] if _unset(value) else value
        return out

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate every change; apply the live ones; refuse all on any invalid value."""
        changes = {p.name: p.value for p in params if p.name in SPECS}
        for name, value in changes.items():
            problem = SPECS[name].check(value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        keep = self._keep
        if "category_filter" in changes and self._label_set is not None:
            try:
                keep = parse_category_filter(changes["category_filter"], self._label_set)
            except ValueError as err:
                return SetParametersResult(successful=False, reason=str(err))
        fusion = self._fusion_values(changes) if self._predictor is not None else {}
        if fusion:
            try:
                self._predictor.set_inference_params(**fusion)
            except (ValueError, TypeError) as err:
                return SetParametersResult(successful=False, reason=str(err))
        self._keep = keep
        self._max_rate = float(changes.get("max_rate", self._max_rate))
        self._overlay_alpha = float(changes.get("overlay_alpha", self._overlay_alpha))
        self._overlay_labels = bool(changes.get("overlay_labels", self._overlay_labels))
        for name in changes:
            when = SPECS[name].when
            if when != LIVE and self._state != "unconfigured":
                self.get_logger().info(f"parameter {name} changed; it {_WHEN[when]}")
        return SetParametersResult(successful=True)

    # -- lifecycle -------------------------------------------------------------------------
    def _load(self, config, cpu_threads: int = 0) -> None:
        """Build the Predictor (slow: reads weights, moves them to the device).

        The fusion overrides are applied after recording the model's own settings, which the
        "-1 / empty = the model's own setting" parameter values restore later. ``cpu_threads``
        > 0 sets torch's intra-op thread count of the process first; 0 restores torch's own.
        """
        import torch

        from panoptic_ros.inference import Predictor

        if self._default_threads is None:
            self._default_threads = torch.get_num_threads()
        torch.set_num_threads(cpu_threads or self._default_threads)

        own = dataclasses.replace(config, score_threshold=None, overlap_threshold=None,
                                  stuff_area=None, fusion_strategy=None)
        predictor = Predictor(own)
        self._fusion_defaults = dict(predictor.inference_params())
        overrides = config.inference_overrides()
        if overrides:
            predictor.set_inference_params(**overrides)
        self._predictor = predictor

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and create the publishers; FAILURE (reason logged) if it fails."""
        params = self._params()
        try:
            config = predictor_config_from_params(params)
            self._load(config, cpu_threads=int(params["cpu_threads"]))
            label_set = self._predictor.label_set
            keep = parse_category_filter(params["category_filter"], label_set)
        except Exception as err:  # noqa: BLE001 - any load failure fails the transition
            self._release()
            self.get_logger().error(
                f"configure failed, model not loaded ({type(err).__name__}): {err}")
            return TransitionCallbackReturn.FAILURE
        self._config, self._label_set, self._keep = config, label_set, keep
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
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        self._state = "inactive"
        self.get_logger().info(
            f"configured: {self._model_name()} on {self._predictor.device}, "
            f"{len(label_set)} categories ({label_set.name})"
        )
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Reload the model if deactivate released it, publish the categories, subscribe."""
        if self._predictor is None:
            try:
                self._load(self._config)
                self._predictor.set_inference_params(**self._fusion_values(self._params()))
            except Exception as err:  # noqa: BLE001 - fails the transition
                self._release()
                self.get_logger().error(f"activate failed, model not loaded: {err}")
                return TransitionCallbackReturn.FAILURE
        ret = super().on_activate(state)  # enables the lifecycle publishers
        if ret != TransitionCallbackReturn.SUCCESS:
            return ret
        self._pubs["categories"].publish(categories_msg(self._label_set, self._label_divisor))
        self._stats.reset()
        self._slot = LatestFrame()
        self._worker = threading.Thread(target=self._work, name="panoptic-worker", daemon=True)
        self._worker.start()
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=int(self._param("qos_depth")),
            reliability=ReliabilityPolicy.BEST_EFFORT
            if self._param("qos_reliability") == "best_effort"
            else ReliabilityPolicy.RELIABLE,
        )
        if self._param("input_transport") == "compressed":
            self._subscription = self.create_subscription(
                CompressedImage, "image/compressed", self._on_compressed, qos)
        else:
            self._subscription = self.create_subscription(Image, "image", self._on_image, qos)
        self._state = "active"
        self.get_logger().info(f"active: listening on {self._subscription.topic_name}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe, stop the worker, release the model and its accelerator memory."""
        self._stop_pipeline()
        self._release()
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy the publishers and unload the model."""
        self._teardown()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything, whatever the state."""
        self._stop_pipeline()
        self._teardown()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Back to unconfigured after an error in a transition."""
        self._stop_pipeline()
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _stop_pipeline(self) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._slot.close():
            self._stats.dropped()
        if self._worker is not None:
            self._worker.join()
            self._worker = None

    def _release(self) -> None:
        if self._predictor is not None:
            self._predictor.release()  # drops the model, empties the CUDA cache
        self._predictor = None
        gc.collect()

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
        self._stats.received()
        if self._slot.put(frame):
            self._stats.dropped()

    def _work(self) -> None:
        """Worker thread: process the newest frame, at most ``max_rate`` per second."""
        slot = self._slot
        next_start = 0.0
        while True:
            wait = next_start - time.monotonic()
            if wait > 0 and slot.wait_closed(wait):
                return
            frame = slot.take(timeout=0.5)
            if frame is None:
                if slot.wait_closed(0):
                    return
                continue
            rate = self._max_rate
            next_start = time.monotonic() + (1.0 / rate if rate > 0 else 0.0)
            self._process(frame)

    def _process(self, frame: Frame) -> None:
        """One frame: convert, infer, publish; bad input and failures are counted, not fatal."""
        msg, log = frame.msg, self.get_logger()
        header = msg.header
        where = f"frame_id '{header.frame_id}' stamp {header.stamp.sec}.{header.stamp.nanosec:09d}"
        try:
            rgb = compressed_to_rgb(msg) if frame.compressed else image_to_rgb(msg)
        except ImageConversionError as err:
            self._stats.bad_input(str(err))
            log.warning(f"bad input image skipped ({where}): {err}", throttle_duration_sec=5.0)
            return
        try:
            t0 = time.perf_counter()
            result = self._predictor.predict(rgb)
            inference_s = time.perf_counter() - t0
            if result.ids.shape != rgb.shape[:2]:
                raise RuntimeError(
                    f"model returned a {result.ids.shape} label image for a {rgb.shape[:2]} "
                    "input; nothing published"
                )
            keep = self._keep
            if keep is not None:
                result = filter_categories(result, keep)
            self._publish(result, header, rgb)
        except Exception as err:  # noqa: BLE001 - keep serving the next frame
            if not self.context.ok():  # shutting down (SIGINT) while this frame was in flight
                return
            self._stats.error(f"{type(err).__name__}: {err}")
            log.error(f"processing failed ({where}): {err}", throttle_duration_sec=5.0)
            return
        self._stats.processed(inference_s, time.monotonic() - frame.received)

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

    # -- diagnostics -----------------------------------------------------------------------
    def _model_name(self) -> str:
        p = self._params()
        if p["weights"]:
            return f"{p['backend']} ({p['weights']})"
        return f"{p['backend']} {p['variant']} (random init, {p['label_set']})"

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None:
            return
        predictor = self._predictor
        device = str(predictor.device) if predictor is not None else "none (model released)"
        fusion = predictor.inference_params() if predictor is not None else {}
        topic = self._subscription.topic_name if self._subscription is not None else ""
        status = diagnostic_status(
            self._stats.snapshot(),
            name=f"{self.get_fully_qualified_name()}: panoptic segmentation",
            hardware_id=device,
            max_rate=self._max_rate,
            extra={"model": self._model_name(), "device": device, "state": self._state,
                   "input_topic": topic,
                   **{f"fusion.{k}": str(v) for k, v in sorted(fusion.items())}},
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()  # report time, not a frame's
        self._diag_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``panoptic_node``: spin the node until interrupted."""
    rclpy.init(args=args if args is not None else sys.argv)
    node = PanopticSegmentationNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_pipeline()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
