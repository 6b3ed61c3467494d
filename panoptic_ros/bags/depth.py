"""Depth and camera_info from the input bag: each image's depth partner and its 3D step.

The same rules as the node (``_add_3d`` in :mod:`panoptic_ros.ros.node`, docs/node.md "Depth and
3D"), read from a bag instead of subscriptions:

- **Pairing**: an image pairs with the depth image of the same header stamp, or the nearest
  within ``slop_s`` (earlier wins a tie), by :class:`panoptic_ros.geometry.StampPairer`, the
  node's pairer.
- **Look-ahead, not an index.** A bag is offline, so the depth partner need not have been
  recorded before the image: a second reader of the same bag streams the depth topic alone, in
  bag order, and is advanced only until the image's partner is certain (a depth image stamped
  at or after the image has been read) or the topic ends. Depth images wait in the pairer's
  bounded buffer (:data:`DEPTH_WINDOW` of them, the oldest dropped and counted), so memory does
  not grow with the bag, and each depth message is read once, sequentially (no seek per image,
  which MCAP's chunked, compressed storage makes costly), with no first pass over the whole bag.
  The cost: it assumes stamps that grow along the bag, as recorded; a depth image older than a
  resolved image by more than the slop is discarded, so after stamps go back (two recordings in
  one bag) the frames concerned get no partner, and are counted.
- **CameraInfo**: the newest one at or before the image in bag order (what a node replaying
  the bag would hold when the image arrives), read by the main pass; it need not share the
  image's stamp.
- **Refused depth** (another encoding, a size that cannot be scaled, no camera_info yet, a zero
  focal length, a calibration of another size): that frame gets 2D outputs only; counted with
  the first few reasons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys.store import Typestore

from panoptic_ros.bags.reading import READ_ERRORS, check_topic, one_line, open_bag, read_messages
from panoptic_ros.errors import UserError
from panoptic_ros.geometry import (
    DepthError,
    Intrinsics,
    StampPairer,
    depth_and_intrinsics,
    segment_geometry,
)
from panoptic_ros.result import PanopticResult

DEPTH_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"

DEPTH_WINDOW = 16
"""Most depth images held while looking ahead (the pairer's buffer)."""

MAX_REASONS = 5


def stamp_ns(header: Any) -> int:
    """A ``std_msgs/Header``'s stamp in integer nanoseconds (exact pairing)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclass(frozen=True)
class DepthOptions:
    """Where the depth and calibration come from, and the point cloud.

    Attributes:
        depth_topic: ``sensor_msgs/Image`` topic, ``16UC1`` millimetres or ``32FC1`` metres,
            aligned with the colour image (another size of the same field of view is scaled).
        camera_info_topic: ``sensor_msgs/CameraInfo`` topic of the colour camera.
        slop_s: largest stamp difference of an image and its depth image, seconds (0 = equal).
        points: also write the labelled point cloud.
        cloud_stride: the cloud keeps every ``cloud_stride``-th pixel in both directions.
    """

    depth_topic: str
    camera_info_topic: str
    slop_s: float = 0.0
    points: bool = False
    cloud_stride: int = 4

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slop_s) and self.slop_s >= 0):
            raise UserError(f"--depth-slop must be >= 0 seconds, got {self.slop_s}")
        if self.cloud_stride < 1:
            raise UserError(f"--cloud-stride must be >= 1, got {self.cloud_stride}")


@dataclass
class DepthSummary:
    """What the 3D step did.

    Attributes:
        frames: segmented images given 3D.
        unpaired: segmented images without a depth image within the slop (2D only).
        refused: images whose depth image or calibration was refused (2D only).
        scaled: images whose depth image was scaled to the image size.
        unreadable: depth messages that did not deserialise (skipped).
        dropped: depth images pushed out of the look-ahead buffer unused.
        reasons: the first few refusal reasons.
    """

    frames: int = 0
    unpaired: int = 0
    refused: int = 0
    scaled: int = 0
    unreadable: int = 0
    dropped: int = 0
    reasons: list[str] = field(default_factory=list)


Geometry = tuple[np.ndarray, Intrinsics]
"""``(depth ndarray[H, W] float32 metres aligned with the image, intrinsics)``."""


def check_depth_topics(reader: Reader, options: DepthOptions, path: Path) -> None:
    """:class:`UserError` when the depth or camera_info topic is missing or of another type."""
    check_topic(reader, options.depth_topic, (DEPTH_TYPE,), path)
    check_topic(reader, options.camera_info_topic, (CAMERA_INFO_TYPE,), path)


class DepthInputs:
    """The depth look-ahead and the newest CameraInfo of one run; close it when done.

    Args:
        input_path: the bag (opened a second time, for the depth topic alone).
        options: the topics, slop and cloud settings.
        store: the type store to deserialise with.

    Raises:
        UserError: a topic is missing or of another type, the bag cannot be read.
    """

    def __init__(self, input_path: Path, options: DepthOptions, store: Typestore) -> None:
        self.options = options
        self.summary = DepthSummary()
        self.camera_info: Any = None
        self._store = store
        self._reader = open_bag(input_path)
        try:
            check_depth_topics(self._reader, options, input_path)
        except UserError:
            self._reader.close()
            raise
        conns = [c for c in self._reader.connections if c.topic == options.depth_topic]
        self._depth = read_messages(self._reader, input_path, conns)
        self._pairer: StampPairer[None, Any] = StampPairer(options.slop_s, DEPTH_WINDOW)

    @property
    def held(self) -> int:
        """Depth images read ahead and held now (at most :data:`DEPTH_WINDOW`)."""
        return self._pairer.pending_depth

    def close(self) -> None:
        """Close the look-ahead reader."""
        self._reader.close()

    def add_camera_info(self, raw: bytes) -> None:
        """Keep a CameraInfo message (the main pass meets them in bag order)."""
        self.camera_info = self._store.deserialize_cdr(raw, CAMERA_INFO_TYPE)

    def partner(self, stamp: int) -> Any:
        """The depth ``Image`` of the image stamped ``stamp`` (ns), or None (counted).

        Call once per image, in bag order.
        """
        resolved = self._pairer.add_colour(stamp, None)
        while not resolved:
            item = next(self._depth, None)
            if item is None:
                resolved = self._pairer.flush()
                break
            try:
                depth = self._store.deserialize_cdr(item[2], DEPTH_TYPE)
            except READ_ERRORS:
                self.summary.unreadable += 1
                continue
            resolved = self._pairer.add_depth(stamp_ns(depth.header), depth)
        self.summary.dropped = self._pairer.depth_dropped
        (pair,) = resolved
        if pair.depth is None:
            self.summary.unpaired += 1
        return pair.depth

    def add_3d(self, result: PanopticResult, header: Any) -> tuple[PanopticResult,
                                                                   Geometry | None]:
        """The 3D step of one image: ``(result with Segment.geometry, geometry)``.

        Without a depth partner, or with a refused depth image or calibration: the result
        unchanged and None (counted, the reason kept); the image's 2D outputs go out as usual.
        """
        depth = self.partner(stamp_ns(header))
        if depth is None:
            return result, None
        info = self.camera_info
        try:
            depth_m, intrinsics, scaled = depth_and_intrinsics(
                depth, info, result.ids.shape, self.options.camera_info_topic)
        except DepthError as err:
            self.summary.refused += 1
            if len(self.summary.reasons) < MAX_REASONS:
                stamp = header.stamp
                self.summary.reasons.append(f"image {stamp.sec}.{stamp.nanosec:09d}: "
                                            f"{one_line(err)}")
            return result, None
        self.summary.frames += 1
        self.summary.scaled += int(scaled)
        return segment_geometry(result, depth_m, intrinsics), (depth_m, intrinsics)
