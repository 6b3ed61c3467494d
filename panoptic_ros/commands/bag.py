"""``panoptic-ros bag``: segment the images of a rosbag2 offline, without a ROS installation.

Reads a rosbag2 (sqlite3 ``.db3`` or MCAP storage, with its metadata.yaml) with the ``rosbags``
library, runs the Predictor on every message of ``--image-topic`` in bag order
(``sensor_msgs/Image`` in the encodings the node accepts, ``sensor_msgs/CompressedImage`` JPEG
or PNG), optionally through the tracker (``--track``; time from the image header stamps), and
writes a new bag holding every input topic unchanged plus, under ``--prefix`` (``/panoptic``):
``panoptic`` (PanopticSegmentation), ``instance_counts`` (InstanceCounts) and ``categories``
(CategoryArray, once). Each output carries the image's header and the image message's bag
timestamp. ``--coco DIR`` also writes the results as COCO panoptic files, as ``infer`` does
(image id = frame index in the bag, 0..).

With ``--depth-topic`` and ``--camera-info-topic`` each image paired with a depth image (same
header stamp, or the nearest within ``--depth-slop``) also gets 3D, as the node computes it:
SegmentInfo's 3D fields, ClassCount.nearest_distance, and with ``--points`` a labelled
PointCloud2 on ``<prefix>/points`` (see :mod:`panoptic_ros.bags.depth`).

The output appears only when complete: an interrupted run leaves no output, or with
``--keep-partial`` a valid partial bag marked ``panoptic_ros.complete: "false"`` in its
metadata's custom data (see :mod:`panoptic_ros.bags.process`).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING

from panoptic_ros.commands.infer import (
    PRED_JSON,
    add_model_arguments,
    add_pretrained_arguments,
    load_predictor,
)
from panoptic_ros.errors import UserError

if TYPE_CHECKING:
    from panoptic_ros.bags.depth import DepthOptions, DepthSummary

HELP = ("segment the images of a rosbag2 (sqlite3 or MCAP) offline; write a new bag with the "
        "input topics plus the panoptic outputs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bag`` (values checked when they are used: no torch import here)."""
    parser.add_argument("--input", required=True, type=Path,
                        help="rosbag2 folder (metadata.yaml + .db3 / .mcap) or a bare .db3 / "
                             ".mcap file")
    parser.add_argument("--output", required=True, type=Path,
                        help="the bag to write (a new folder; must not exist)")
    parser.add_argument("--image-topic", required=True, metavar="TOPIC",
                        help="sensor_msgs/Image or sensor_msgs/CompressedImage topic to segment")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"),
                        help="storage of the output bag (default: the input's)")
    parser.add_argument("--prefix", default="/panoptic",
                        help="namespace of the output topics (default /panoptic)")
    parser.add_argument("--coco", type=Path, metavar="DIR",
                        help=f"also write COCO panoptic files: DIR/{PRED_JSON} + "
                             f"DIR/{Path(PRED_JSON).stem}/ PNGs (image id = frame index)")
    parser.add_argument("--keep-partial", action="store_true",
                        help="when interrupted, keep the valid partial bag at --output "
                             "(default: remove it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    depth = parser.add_argument_group("3D (both topics, or neither)")
    depth.add_argument("--depth-topic", metavar="TOPIC",
                       help="sensor_msgs/Image depth aligned with the image topic (16UC1 mm or "
                            "32FC1 m; another size of the same field of view is scaled)")
    depth.add_argument("--camera-info-topic", metavar="TOPIC",
                       help="sensor_msgs/CameraInfo of the colour camera (P, else K); the newest "
                            "at or before each image in bag order is used")
    depth.add_argument("--depth-slop", type=float, default=0.0, metavar="S",
                       help="largest header stamp difference of an image and its depth image, "
                            "seconds (default 0: the same stamp)")
    depth.add_argument("--points", action="store_true",
                       help="also write <prefix>/points: sensor_msgs/PointCloud2 x y z rgb id "
                            "of every image with 3D")
    depth.add_argument("--cloud-stride", type=int, default=4, metavar="K",
                       help="--points: every K-th pixel in both directions (default 4)")
    add_model_arguments(parser)
    tracking = parser.add_argument_group("tracking")
    tracking.add_argument("--track", action="store_true",
                          help="track things over the image messages: ids persist across "
                               "frames; time comes from the image header stamps")
    add_pretrained_arguments(parser)


_NAMESPACE = re.compile(r"(/[A-Za-z_][A-Za-z0-9_]*)+/?")


def check_prefix(prefix: str) -> str:
    """An absolute ROS topic namespace (``/a/b_2``), trailing slash removed.

    Raises:
        UserError: not a namespace of ROS name tokens (a letter or ``_``, then letters,
            digits, ``_``).
    """
    if not _NAMESPACE.fullmatch(prefix):
        raise UserError(f"--prefix must be an absolute topic namespace like /panoptic, got "
                        f"{prefix!r}")
    return prefix.rstrip("/")


def run(args: argparse.Namespace) -> int:
    """Segment the bag's images and write the output bag (and the COCO files)."""
    from panoptic_ros.bags import require_rosbags

    require_rosbags()
    prefix = check_prefix(args.prefix)
    depth = depth_options(args)
    if args.output.exists():
        raise UserError(f"output {args.output} exists; choose another path or remove it")
    if args.coco is not None and args.coco.exists() and not args.coco.is_dir():
        raise UserError(f"--coco {args.coco} exists and is not a folder")

    from panoptic_ros.bags.depth import check_depth_topics
    from panoptic_ros.bags.process import OutputTopics, check_image_topic, open_bag, process_bag
    from panoptic_ros.data.coco_panoptic import CocoPanopticWriter
    from panoptic_ros.geometry import geometry_json
    from panoptic_ros.tracking import TrackedPredictor, Tracker

    reader = open_bag(args.input)  # a bad input or topic fails before the model loads
    try:
        check_image_topic(reader, args.image_topic, args.input)
        if depth is not None:
            check_depth_topics(reader, depth, args.input)
    finally:
        reader.close()
    predictor = load_predictor(args)
    step = TrackedPredictor(predictor, Tracker() if args.track else None)
    coco = None
    if args.coco is not None:
        coco = CocoPanopticWriter(args.coco, predictor.label_set, json_name=PRED_JSON,
                                  png_dir_name=Path(PRED_JSON).stem)

    def add_coco(index: int, result) -> None:
        coco.add(index, result, image_suffix=".png")
        by_id = {s.id: s for s in result.segments if s.is_thing}
        for entry in coco.annotations[-1]["segments_info"]:
            if entry["id"] in by_id:
                entry.update(geometry_json(by_id[entry["id"]].geometry))

    summary = process_bag(
        args.input, args.output, args.image_topic, step, predictor.label_set,
        storage=args.storage,
        topics=OutputTopics(prefix, with_points=depth is not None and depth.points),
        on_result=add_coco if coco is not None else None,
        progress=not args.no_progress, keep_partial=args.keep_partial, depth=depth)
    rate = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    tracked = f", {step.tracker.last_track_id} track(s)" if args.track else ""
    print(f"wrote {args.output} ({summary.storage}): {summary.frames} frame(s) segmented "
          f"({rate:.1f}/s){tracked}, {summary.messages} input message(s) copied")
    if summary.skipped:
        print(f"skipped {summary.skipped} image message(s) that do not convert, e.g. "
              + "; ".join(summary.skip_reasons[:2]))
    if summary.depth is not None:
        print(depth_report(summary.depth, depth.slop_s))
    if coco is not None:
        json_path = coco.close()
        print(f"wrote COCO panoptic files: {json_path} and {coco.png_dir}/")
    return 0


def depth_options(args: argparse.Namespace) -> DepthOptions | None:
    """The run's :class:`~panoptic_ros.bags.depth.DepthOptions`, or None without depth.

    Raises:
        UserError: one of the two topics without the other, a 3D option without them, a
            negative slop or a stride below 1.
    """
    from panoptic_ros.bags.depth import DepthOptions

    if bool(args.depth_topic) != bool(args.camera_info_topic):
        raise UserError("--depth-topic and --camera-info-topic go together: 3D needs the depth "
                        "image and the camera's calibration")
    if not args.depth_topic:
        if args.points or args.depth_slop != 0.0:
            raise UserError("--points and --depth-slop need --depth-topic and "
                            "--camera-info-topic")
        return None
    return DepthOptions(args.depth_topic, args.camera_info_topic, slop_s=args.depth_slop,
                        points=args.points, cloud_stride=args.cloud_stride)


def depth_report(depth: DepthSummary, slop_s: float) -> str:
    """The run's 3D line: frames with 3D, without a partner, refused (with a reason)."""
    window = "the same stamp" if slop_s == 0 else f"{slop_s:g} s"
    text = (f"3D: {depth.frames} frame(s) with 3D, {depth.unpaired} without a depth image "
            f"within {window}, {depth.refused} with depth refused")
    if depth.scaled:
        text += f", {depth.scaled} with depth scaled to the image size"
    if depth.unreadable:
        text += f", {depth.unreadable} unreadable depth message(s) skipped"
    if depth.reasons:
        text += " (e.g. " + "; ".join(depth.reasons[:2]) + ")"
    return text
