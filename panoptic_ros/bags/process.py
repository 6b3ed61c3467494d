"""Segment every image of a rosbag2 and write a new bag: the input topics plus our outputs.

The frame path is the node's: image message -> :mod:`panoptic_ros.ros.conversions` (pure
numpy, no ROS) -> a segmenting callable (the Predictor, optionally through the tracker) ->
with depth, the 3D step (:mod:`panoptic_ros.bags.depth`) -> messages built from
:mod:`panoptic_ros.message_fields`. Every output message carries the
image's header unchanged and the image message's bag timestamp, so ``ros2 bag play`` replays
the outputs beside the frames they belong to.

The output bag is written into a hidden folder beside ``output`` and renamed to ``output``
only once it is complete and closed. An interrupted run (Ctrl-C, an exception, a read error
in the input) closes the writer properly and removes that folder, or, with
``keep_partial``, renames the closed partial bag to ``output`` with custom data
``panoptic_ros.complete: "false"``. A killed process (SIGKILL, power loss) leaves only the
hidden folder. ``output`` is never a corrupt bag.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from panoptic_ros.bags import messages
from panoptic_ros.bags.depth import DepthInputs, DepthOptions, DepthSummary
from panoptic_ros.bags.reading import (
    READ_ERRORS,
    check_topic,
    one_line,
    open_bag,
    read_messages,
)
from panoptic_ros.bags.typestore import type_name, typestore
from panoptic_ros.categories import LabelSet
from panoptic_ros.errors import UserError
from panoptic_ros.geometry import labelled_points
from panoptic_ros.result import PanopticResult
from panoptic_ros.ros.conversions import (
    ImageConversionError,
    InputBudget,
    compressed_to_rgb,
    image_to_rgb,
)

IMAGE_TYPES: dict[str, Callable[[Any, InputBudget], np.ndarray]] = {
    "sensor_msgs/msg/Image": image_to_rgb,
    "sensor_msgs/msg/CompressedImage": compressed_to_rgb,
}
"""Message types the image topic may have, and their conversion to RGB."""

STORAGES: dict[str, StoragePlugin] = {"sqlite3": StoragePlugin.SQLITE3,
                                      "mcap": StoragePlugin.MCAP}
"""``--storage`` values (rosbag2's storage identifiers)."""

_SUFFIX_STORAGE = {".db3": "sqlite3", ".mcap": "mcap"}

_LATCHED = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
               QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)
"""Offered QoS of the categories topic: transient local, as the node publishes it."""

Segmenter = Callable[[np.ndarray, float, str], PanopticResult]
"""``(rgb ndarray[H, W, 3] uint8, stamp seconds, frame_id) -> PanopticResult``, e.g. a
:class:`panoptic_ros.tracking.TrackedPredictor`."""


@dataclass(frozen=True)
class OutputTopics:
    """Names of our topics in the output bag, under one prefix.

    Attributes:
        prefix: the namespace.
        with_points: the bag also gets the point cloud topic (:attr:`points`).
    """

    prefix: str = "/panoptic"
    with_points: bool = False

    @property
    def panoptic(self) -> str:
        """``PanopticSegmentation`` of every segmented frame."""
        return f"{self.prefix}/panoptic"

    @property
    def instance_counts(self) -> str:
        """``InstanceCounts`` of every segmented frame."""
        return f"{self.prefix}/instance_counts"

    @property
    def categories(self) -> str:
        """``CategoryArray``, once, at the first segmented frame."""
        return f"{self.prefix}/categories"

    @property
    def points(self) -> str:
        """``sensor_msgs/PointCloud2`` of every image with 3D (when :attr:`with_points`)."""
        return f"{self.prefix}/points"

    def types(self) -> dict[str, str]:
        """Topic -> message type."""
        out = {self.panoptic: type_name("PanopticSegmentation"),
               self.instance_counts: type_name("InstanceCounts"),
               self.categories: type_name("CategoryArray")}
        if self.with_points:
            out[self.points] = messages.POINTCLOUD2
        return out


@dataclass
class BagSummary:
    """What a run did.

    Attributes:
        output: the bag written (or None when an interrupted run removed it).
        storage: its storage identifier.
        messages: input messages read and copied.
        frames: image messages segmented.
        skipped: image messages that could not be converted (not segmented, still copied).
        skip_reasons: the first few reasons.
        seconds: wall time of the loop.
        complete: whether every input message was processed.
        depth: what the 3D step did (None without depth).
    """

    output: Path | None
    storage: str
    messages: int = 0
    frames: int = 0
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    complete: bool = False
    depth: DepthSummary | None = None


def bag_storage(path: Path) -> str:
    """The storage identifier of a bag folder (its metadata.yaml) or a bare storage file."""
    if path.is_file():
        return _SUFFIX_STORAGE.get(path.suffix, "sqlite3")
    data = yaml.safe_load((path / "metadata.yaml").read_text(encoding="utf-8"))
    return str(data["rosbag2_bagfile_information"]["storage_identifier"])




def check_image_topic(reader: Reader, topic: str, path: Path) -> str:
    """The image topic's message type; :class:`UserError` when missing or of another type."""
    return check_topic(reader, topic, tuple(IMAGE_TYPES), path)


def _copy_connections(writer: Writer, connections: list[Connection]) -> dict[int, Connection]:
    """Add the input's connections to the writer unchanged; input id -> output connection."""
    out: dict[int, Connection] = {}
    added: dict[tuple, Connection] = {}
    store = typestore()
    for conn in connections:
        ext = conn.ext
        if not isinstance(ext, ConnectionExtRosbag2):
            raise UserError(f"topic {conn.topic}: not a rosbag2 connection")
        key = (conn.topic, conn.msgtype, ext.serialization_format, tuple(ext.offered_qos_profiles))
        if key not in added:
            known = bool(conn.digest and conn.msgdef.data)
            added[key] = writer.add_connection(
                conn.topic, conn.msgtype,
                msgdef=conn.msgdef.data if known else None,
                rihs01=conn.digest if known else None,
                typestore=None if known else store,
                serialization_format=ext.serialization_format,
                offered_qos_profiles=ext.offered_qos_profiles)
        out[conn.id] = added[key]
    return out



def process_bag(
    input_path: Path,
    output: Path,
    image_topic: str,
    segment: Segmenter,
    label_set: LabelSet,
    *,
    storage: str | None = None,
    topics: OutputTopics | None = None,
    budget: InputBudget | None = None,
    on_result: Callable[[int, PanopticResult], None] | None = None,
    progress: bool = True,
    keep_partial: bool = False,
    depth: DepthOptions | None = None,
) -> BagSummary:
    """Copy a bag to ``output`` and add the segmentation of every message of ``image_topic``.

    Args:
        input_path: a rosbag2 folder (sqlite3 or MCAP storage with metadata.yaml) or a bare
            ``.db3`` / ``.mcap`` file.
        output: the bag to create (must not exist).
        image_topic: a ``sensor_msgs/Image`` (encodings of
            :data:`panoptic_ros.ros.conversions.INPUT_ENCODINGS`) or
            ``sensor_msgs/CompressedImage`` (JPEG, PNG) topic of the input.
        segment: the frame step, called once per image in bag order with the header stamp and
            frame_id.
        label_set: the model's categories (names, thing/stuff, the categories message).
        storage: ``"sqlite3"`` or ``"mcap"``; None = the input's.
        topics: names of our topics (default under ``/panoptic``).
        budget: limits on one input frame (default :class:`InputBudget`'s).
        on_result: called with (frame index 0.., result) after each segmented frame.
        progress: show a progress bar.
        keep_partial: on interruption keep the (closed, valid) partial bag at ``output``.
        depth: the depth and camera_info topics (see :mod:`panoptic_ros.bags.depth`): each
            image paired with a depth image gets 3D (``SegmentInfo``'s 3D fields,
            ``ClassCount.nearest_distance``, and with ``depth.points`` the cloud on
            ``topics.points``, which must then have ``with_points``); None: 2D only.

    Returns:
        What was done (:class:`BagSummary`).

    Raises:
        UserError: the input cannot be read, the topic (or a depth topic) is missing or of
            another type, the output exists, a topic of ours is already in the input, an
            unknown storage.
    """
    from tqdm import tqdm

    topics = topics or OutputTopics(with_points=depth is not None and depth.points)
    if depth is not None and depth.points and not topics.with_points:
        raise ValueError("depth.points needs topics with with_points=True")
    budget = budget or InputBudget()
    if output.exists():
        raise UserError(f"output {output} exists; choose another path or remove it")
    if storage is not None and storage not in STORAGES:
        raise UserError(f"unknown storage {storage!r}; expected one of {', '.join(STORAGES)}")
    typestore()  # msg/ not found: fail before reading anything
    reader = open_bag(input_path)
    depth_inputs = None
    try:
        image_type = check_image_topic(reader, image_topic, input_path)
        clash = sorted(set(topics.types()) & set(reader.topics))
        if clash:
            raise UserError(f"the input already has topic(s) {', '.join(clash)}; choose "
                            "another --prefix")
        depth_inputs = None if depth is None else DepthInputs(input_path, depth, typestore())
        storage = storage or bag_storage(input_path)
        if storage not in STORAGES:
            raise UserError(f"input storage {storage!r} cannot be written; use --storage")
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.parent / f".{output.name}.partial-{os.getpid()}"
        summary = BagSummary(output=None, storage=storage,
                             depth=None if depth_inputs is None else depth_inputs.summary)
        writer = Writer(partial, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
        writer.open()
        started = time.perf_counter()
        try:
            _process(reader, writer, image_topic, image_type, segment, label_set, topics,
                     budget, on_result, summary, input_path, depth_inputs,
                     tqdm(total=reader.topics[image_topic].msgcount, unit="frame",
                          desc="bag", disable=not progress))
            summary.complete = True
        finally:
            summary.seconds = time.perf_counter() - started
            _finish(writer, partial, output, summary, keep_partial)
    finally:
        reader.close()
        if depth_inputs is not None:
            depth_inputs.close()
    return summary


def _process(reader: Reader, writer: Writer, image_topic: str, image_type: str,
             segment: Segmenter, label_set: LabelSet, topics: OutputTopics,
             budget: InputBudget, on_result: Callable[[int, PanopticResult], None] | None,
             summary: BagSummary, input_path: Path, depth: DepthInputs | None,
             bar: Any) -> None:
    """The loop: copy every message; after each image message, write its outputs."""
    store = typestore()
    copies = _copy_connections(writer, reader.connections)
    ours = {name: writer.add_connection(name, msgtype, typestore=store,
                                        offered_qos_profiles=[_LATCHED]
                                        if name == topics.categories else [])
            for name, msgtype in topics.types().items()}
    to_rgb = IMAGE_TYPES[image_type]
    categories_written = False
    with bar:
        for conn, timestamp, raw in read_messages(reader, input_path):
            writer.write(copies[conn.id], timestamp, raw)
            summary.messages += 1
            if depth is not None and conn.topic == depth.options.camera_info_topic:
                depth.add_camera_info(raw)
            if conn.topic != image_topic:
                continue
            bar.update(1)
            try:
                image = store.deserialize_cdr(raw, image_type)
                rgb = to_rgb(image, budget)
                if not rgb.flags.writeable:  # a view of the read-only serialised bytes (rgb8)
                    rgb = rgb.copy()
            except (ImageConversionError, *READ_ERRORS) as err:
                summary.skipped += 1
                if len(summary.skip_reasons) < 5:
                    summary.skip_reasons.append(f"message at {timestamp} ns: {one_line(err)}")
                continue
            header = image.header
            result = segment(rgb, messages.stamp_seconds(header), str(header.frame_id))
            geometry = None
            if depth is not None:
                result, geometry = depth.add_3d(result, header)
            if not categories_written:
                msg = messages.categories_msg(store, label_set, result.label_divisor, header)
                writer.write(ours[topics.categories], timestamp,
                             store.serialize_cdr(msg, type_name("CategoryArray")))
                categories_written = True
            writer.write(ours[topics.panoptic], timestamp, store.serialize_cdr(
                messages.panoptic_msg(store, result, header, label_set),
                type_name("PanopticSegmentation")))
            writer.write(ours[topics.instance_counts], timestamp, store.serialize_cdr(
                messages.instance_counts_msg(store, result, header, label_set),
                type_name("InstanceCounts")))
            if geometry is not None and topics.with_points:
                points = labelled_points(result, geometry[0], rgb, geometry[1],
                                         stride=depth.options.cloud_stride)
                writer.write(ours[topics.points], timestamp, store.serialize_cdr(
                    messages.pointcloud_msg(store, points, header), messages.POINTCLOUD2))
            if on_result is not None:
                on_result(summary.frames, result)
            summary.frames += 1


def _finish(writer: Writer, partial: Path, output: Path, summary: BagSummary,
            keep_partial: bool) -> None:
    """Close the bag and move it into place, or remove it (see the module docstring)."""
    try:
        writer.set_custom_data("panoptic_ros.complete", str(summary.complete).lower())
        writer.set_custom_data("panoptic_ros.frames", str(summary.frames))
        writer.close()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if summary.complete or keep_partial:
        partial.rename(output)
        summary.output = output
    else:
        shutil.rmtree(partial, ignore_errors=True)
