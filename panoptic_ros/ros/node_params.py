"""The ``panoptic_segmentation`` node's parameters: the table, checks, model configuration.

The one place where parameters become model configuration (:func:`predictor_config_from_params`).

:data:`PARAMS` lists every static parameter (name, default, meaning, when it takes effect,
range); backends add their own live settings at configure (:func:`live_param_descriptor`).
The node declares them through :mod:`panoptic_ros.ros.params`; ``docs/node.md`` documents them
and a test keeps the two in step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor

from panoptic_ros.categories import LabelSet
from panoptic_ros.devices import normalize_device_name
from panoptic_ros.models.live_params import UNSET_NUMBER, UNSET_TEXT, LiveParam
from panoptic_ros.ros.cameras import check_camera_names
from panoptic_ros.ros.params import (
    ACTIVATE,
    CONFIGURE,
    LIVE,
    START,
    WHEN,
    ParamSpec,
    parameter_descriptor,
)


def _check_device(value: Any) -> str | None:
    try:
        normalize_device_name(value)
    except ValueError as err:
        return str(err)
    return None


def _check_backend(value: Any) -> str | None:
    from panoptic_ros.models.registry import backend_names

    names = backend_names()
    return None if value in names else f"backend must be one of {names}, got {value!r}"


def _check_onnx_providers(value: Any) -> str | None:
    from panoptic_ros.models.onnx_backend import provider_names

    try:
        provider_names(str(value))
    except ValueError as err:
        return f"onnx_providers: {err}"
    return None


MODEL_DEFAULT = "the model's own setting"
MAX_IMAGE_PIXELS = 4096 * 4096

PARAMS: tuple[ParamSpec, ...] = (
    # Model: read by predictor_config_from_params at configure.
    ParamSpec("backend", "efficientps", "model backend (efficientps, mask2former, or a "
              "registered one)", CONFIGURE, validate=_check_backend),
    ParamSpec("weights", "demo", "demo (the bundled model), a checkpoint path (model id or "
              "folder for pretrained backends), or empty for random initialisation of "
              "'variant' (tests and plumbing checks; its output is meaningless)", CONFIGURE),
    ParamSpec("variant", "narrow", "network variant when weights is empty: b0..b7, narrow",
              CONFIGURE),
    ParamSpec("label_set", "synthetic", "categories when weights is empty: coco_panoptic, "
              "cityscapes, synthetic or a COCO-style JSON path", CONFIGURE),
    ParamSpec("device", "auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N",
              CONFIGURE, validate=_check_device),
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
    ParamSpec("allow_download", False, "pretrained backends: let them fetch a hub id that is "
              "not in the local cache (off: the robot works offline)", CONFIGURE),
    ParamSpec("cache_dir", "", "pretrained backends: Hugging Face cache directory; empty = "
              "the default ($HF_HUB_CACHE)", CONFIGURE),
    ParamSpec("revision", "", "pretrained backends: hub revision (branch, tag or commit) of a "
              "hub id; empty = the default branch", CONFIGURE),
    ParamSpec("onnx_providers", "cpu", "backend onnx: ONNX Runtime execution providers in "
              "priority order, comma-separated: cpu, cuda, tensorrt (or ...ExecutionProvider "
              "names); those this onnxruntime lacks fall back to cpu with one log line. "
              "Intra-op threads follow cpu_threads", CONFIGURE, validate=_check_onnx_providers),
    # Input budget: live.
    ParamSpec("max_image_pixels", MAX_IMAGE_PIXELS, "largest accepted input image, pixels "
              "(width x height; compressed images are judged by their header before "
              "decoding)", LIVE, low=1, high=2**31 - 1),
    ParamSpec("max_compressed_bytes", 32 * 2**20, "largest accepted compressed payload, "
              "bytes", LIVE, low=1, high=2**31 - 1),
    ParamSpec("oversize_policy", "refuse", "a frame over max_image_pixels: refuse (bad input, "
              "counted) or reduce (raw: every k-th pixel; JPEG: decoded at 1/2, 1/4 or 1/8; "
              "outputs then have the reduced size; PNG is always refused)", LIVE,
              choices=("refuse", "reduce")),
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
    ParamSpec("qos_reliability", "auto", "reliability of the image subscription: auto "
              "(reliable when every matched publisher is reliable, so lost fragments of large "
              "frames are repaired; else best effort), best_effort (sensor data) or reliable",
              ACTIVATE, choices=("auto", "best_effort", "reliable")),
    ParamSpec("qos_depth", 1, "queue depth of the image subscription (keep last)", ACTIVATE,
              low=1, high=100),
    ParamSpec("input_timeout", 5.0, "seconds without a frame while a publisher is matched "
              "before diagnostics WARN (naming the likely transport cause)", LIVE,
              low=0.5, high=3600.0),
    # Cameras.
    ParamSpec("cameras", [], "camera names served by this node with one model; empty = one "
              "camera on 'image' with outputs under ~/. With names: inputs <name>/image (or "
              "<name>/image/compressed), outputs ~/<name>/panoptic etc., each with its own "
              "frame's header; the newest frame of every camera runs as one batch", CONFIGURE,
              validate=check_camera_names),
    ParamSpec("max_batch", 0, "most cameras in one batch, served round robin so none starves; "
              "0 = all cameras with a new frame", LIVE, low=0, high=64),
    # Depth and 3D.
    ParamSpec("use_depth", False, "use an aligned depth image (<camera>/depth, REP 118 16UC1 "
              "mm or 32FC1 m) and camera_info: 3D per segment, ~/points, ~/markers; off = 2D "
              "only, no depth subscriptions", ACTIVATE),
    ParamSpec("depth_slop", 0.0, "largest stamp difference of a colour frame and its depth "
              "image, seconds (0 = same stamp only)", ACTIVATE, low=0.0, high=1.0),
    ParamSpec("cloud_stride", 2, "~/points: every k-th pixel in both directions", LIVE,
              low=1, high=64),
    ParamSpec("cloud_voxel", 0.0, "~/points: at most one point per voxel of this size, "
              "metres (0 = off)", LIVE, low=0.0, high=10.0),
    ParamSpec("marker_lifetime", 1.0, "~/markers: seconds a marker lives unless refreshed",
              LIVE, low=0.01, high=3600.0),
    # Tracking: live.
    ParamSpec("tracking", True, "persistent ids: a thing keeps its instance id (label image) "
              "and its track_id while it is visible and through gaps up to track_max_age; off "
              "= fresh ids every frame", LIVE),
    ParamSpec("track_max_age", 2.0, "seconds (header stamps) an unseen track survives "
              "(occlusion, dropped frames)", LIVE, low=0.01, high=3600.0),
    ParamSpec("track_high_score", 0.5, "detections at or above this score are associated "
              "first and may start tracks", LIVE, low=0.0, high=1.0),
    ParamSpec("track_low_score", 0.1, "detections from this score up to track_high_score "
              "only continue tracks left over (<= track_high_score); lower ones are not "
              "tracked", LIVE, low=0.0, high=1.0),
    ParamSpec("track_min_iou", 0.2, "least mask IoU of a high-score detection with a "
              "track's motion-predicted mask", LIVE, low=0.01, high=1.0),
    ParamSpec("track_min_iou_low", 0.4, "least mask IoU of a low-score detection with a "
              "track left over", LIVE, low=0.01, high=1.0),
    ParamSpec("track_center_gate", 1.5, "fast movers: a detection left over may take a track "
              "whose predicted centre is closer than this many object sizes; 0 = off", LIVE,
              low=0.0, high=100.0),
    ParamSpec("track_center_gate_growth", 1.0, "the fast-mover gate widens by this fraction "
              "per second a track is unseen (finds objects again after an occlusion); 0 = "
              "fixed", LIVE, low=0.0, high=100.0),
    ParamSpec("autostart", True, "configure and activate at start", START),
)
SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMS}


def live_param_descriptor(spec: LiveParam) -> ParameterDescriptor:
    """The ``ParameterDescriptor`` of a backend's live setting.

    Its unset value (-1 / "") means the model's own setting.
    """
    unset = "-1" if spec.kind is not str else "empty"
    description = (f"{spec.description}; {unset} = {MODEL_DEFAULT} ({spec.default!r} for the "
                   f"loaded model) ({WHEN[LIVE]}; declared by the backend at configure)")
    choices = (UNSET_TEXT, *spec.choices) if spec.choices else ()
    low = UNSET_NUMBER if spec.low is not None else None
    return parameter_descriptor(spec.name, description, spec.unset, choices, low, spec.high)


def check_live_value(spec: LiveParam, value: Any) -> str | None:
    """Why ``value`` is not valid for a backend's live setting (the unset value is)."""
    if value == spec.unset and type(value) is type(spec.unset):
        return None
    return spec.check(value)


def predictor_config_from_params(values: Mapping[str, Any],
                                 inference: Mapping[str, Any] | None = None):
    """Map the node's parameters onto a :class:`~panoptic_ros.inference.PredictorConfig`.

    The one place where ROS parameters become model configuration: ``weights: ""`` means
    random initialisation (``weights=None``); 0 for ``input_size``/``label_divisor`` leaves the
    model's own setting; empty ``cache_dir``/``revision`` the defaults. ``inference`` holds the
    backend's live settings (``None`` for the model's own).

    Raises:
        ValueError: a parameter outside its valid values (the message names it).
    """
    from panoptic_ros.inference import PredictorConfig

    for name, value in values.items():
        problem = SPECS[name].check(value) if name in SPECS else None
        if problem:
            raise ValueError(problem)
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
        allow_download=bool(values["allow_download"]),
        cache_dir=values["cache_dir"] or None,
        revision=values["revision"] or None,
        inference=dict(inference or {}),
        backend_options=({"providers": values["onnx_providers"]}
                         if values["backend"] == "onnx" else {}),
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


def label_set_to_load(values: Mapping[str, Any]) -> LabelSet | None:
    """The categories the next configure would load, when they can be read cheaply.

    Random initialisation: the ``label_set`` parameter; an EfficientPS checkpoint (``demo`` or
    a file): its stored table; an ONNX export: its metadata's table. ``None`` for what only
    loading can tell (pretrained backends).
    """
    from panoptic_ros.categories import get_label_set

    try:
        if values["backend"] == "onnx":
            from panoptic_ros.export import read_metadata

            return LabelSet.from_dict(read_metadata(values["weights"])["label_set"])
        if values["backend"] != "efficientps":
            return None
        if not values["weights"]:
            return get_label_set(values["label_set"])
        from panoptic_ros.models.checkpoint import read_label_set

        return read_label_set(values["weights"])
    except Exception:  # noqa: BLE001 - configure reports load problems with their reasons
        return None


def describe_model(config) -> str:
    """What a :class:`~panoptic_ros.inference.PredictorConfig` loads, in a few words."""
    if config.weights:
        return f"{config.backend} ({config.weights})"
    return f"{config.backend} {config.variant} (random init, {config.label_set})"


TRACKER_PARAMS = {"track_max_age": "max_age", "track_high_score": "high_score",
                  "track_low_score": "low_score", "track_min_iou": "min_iou_high",
                  "track_min_iou_low": "min_iou_low", "track_center_gate": "center_gate",
                  "track_center_gate_growth": "center_gate_growth"}
"""Node parameter -> :class:`~panoptic_ros.tracking.TrackerConfig` field."""


def tracker_config_from_params(values: Mapping[str, Any]):
    """The :class:`~panoptic_ros.tracking.TrackerConfig` the tracking parameters describe.

    Raises:
        ValueError: settings that do not fit together (``track_low_score`` above
            ``track_high_score``); the message names the parameters.
    """
    from panoptic_ros.tracking import TrackerConfig

    try:
        return TrackerConfig(**{field: float(values[name])
                                for name, field in TRACKER_PARAMS.items()})
    except ValueError as err:
        # Name the node's parameters, not the config's fields, in the message.
        param_of = {field: name for name, field in TRACKER_PARAMS.items()}
        fields = r"\b(?:TrackerConfig\.)?(" + "|".join(param_of) + r")\b"
        raise ValueError(re.sub(fields, lambda m: param_of[m.group(1)], str(err))) from None
