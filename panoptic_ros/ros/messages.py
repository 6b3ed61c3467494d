"""The package's messages, both directions: PanopticResult <-> panoptic_ros / sensor_msgs.

Encoders (the node): every message of a frame carries the input image's header unchanged and is
at the input's size; field values come from :mod:`panoptic_ros.message_fields`, shared with the
rosbags encoder of ``panoptic-ros bag``. Label images go into ``Image.data`` with one buffer copy
(:func:`array_to_image`). Decoders (the monitor, any consumer): :func:`result_from_msg`,
:func:`label_set_from_msg`, :func:`frame_key`, the inverses of what a consumer needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from panoptic_ros.categories import Category as CategoryEntry
from panoptic_ros.categories import LabelSet
from panoptic_ros.message_fields import (
    bbox_fields,
    category_fields,
    class_count_fields,
    segment_info_fields,
)
from panoptic_ros.msg import (
    Category,
    CategoryArray,
    ClassCount,
    InstanceCounts,
    PanopticSegmentation,
    SegmentInfo,
)
from panoptic_ros.result import PanopticResult, Segment, SegmentGeometry
from panoptic_ros.ros.conversions import array_to_image, image_to_array

IDS_ENCODING = "32SC1"
"""Encoding of the panoptic label image."""

INSTANCES_ENCODING = "mono16"
"""Encoding of the instance-id image."""


def semantic_encoding(label_set: LabelSet) -> str:
    """Pick ``mono8`` when every category id of the label set fits 8 bits, else ``mono16``.

    Fixed per label set (not per frame), so that subscribers see one encoding.
    """
    return "mono8" if int(label_set.ids.max()) < 256 else "mono16"


def panoptic_msg(result: PanopticResult, header: Header, label_set: LabelSet) -> (
    PanopticSegmentation
):
    """Build the frame's ``PanopticSegmentation``: 32SC1 label image, one SegmentInfo each.

    Args:
        result: the frame's result, ``ids`` int32 [H, W] at the input's size.
        header: the input image's header, copied unchanged into the message and its image.
        label_set: category names for ``SegmentInfo.label``.

    """
    msg = PanopticSegmentation()
    msg.header = header
    msg.label_divisor = int(result.label_divisor)
    msg.ids = array_to_image(np.asarray(result.ids, dtype=np.int32), IDS_ENCODING, header)
    names = {c.id: c.name for c in label_set}
    msg.segments = [
        SegmentInfo(**segment_info_fields(s, names.get(s.category_id, "")),
                    bbox=RegionOfInterest(**bbox_fields(s)))
        for s in result.segments
    ]
    return msg


def _geometry_from(info: SegmentInfo) -> SegmentGeometry | None:
    if not info.has_3d:
        return None
    return SegmentGeometry(
        valid_fraction=float(info.valid_depth_fraction),
        centroid=tuple(float(v) for v in info.centroid), distance=float(info.distance),
        extent_min=tuple(float(v) for v in info.extent_min),
        extent_max=tuple(float(v) for v in info.extent_max))


def instance_counts_msg(
    result: PanopticResult, header: Header, label_set: LabelSet
) -> InstanceCounts:
    """Count instances per thing category: every thing of the label set, zeros included.

    ``nearest_distance`` is the smallest ``distance`` of the category's instances with 3D,
    NaN when none has it.
    """
    msg = InstanceCounts()
    msg.header = header
    msg.counts = [ClassCount(**fields) for fields in class_count_fields(result, label_set)]
    return msg


def categories_msg(
    label_set: LabelSet, label_divisor: int, header: Header | None = None
) -> CategoryArray:
    """Build the label set's ``CategoryArray`` (stuff first, then things, training order)."""
    msg = CategoryArray()
    if header is not None:
        msg.header = header
    msg.label_divisor = int(label_divisor)
    msg.categories = [Category(**fields) for fields in category_fields(label_set)]
    return msg


def semantic_msg(result: PanopticResult, header: Header, encoding: str) -> Image:
    """Build the category-id image, ``mono8`` or ``mono16`` (see :func:`semantic_encoding`)."""
    dtype = np.uint8 if encoding == "mono8" else np.uint16
    return array_to_image(result.semantic().astype(dtype), encoding, header)


def instances_msg(result: PanopticResult, header: Header) -> Image:
    """Build the instance-id image, ``mono16`` (0 = stuff or void; saturates at 65535)."""
    inst = result.instances()
    if result.label_divisor > 65536:
        inst = np.minimum(inst, 65535)
    return array_to_image(inst.astype(np.uint16), INSTANCES_ENCODING, header)


def rgb_msg(rgb: np.ndarray, header: Any) -> Image:
    """Build an ``rgb8`` image (the overlay) with the input's header."""
    return array_to_image(np.asarray(rgb, dtype=np.uint8), "rgb8", header)


# -- message -> numpy (what a consumer needs back) -------------------------------------------
def frame_key(header: Header) -> tuple[int, int, str]:
    """The pairing key of a header: ``(stamp.sec, stamp.nanosec, frame_id)``."""
    return int(header.stamp.sec), int(header.stamp.nanosec), str(header.frame_id)


def result_from_msg(msg: PanopticSegmentation) -> PanopticResult:
    """A ``PanopticSegmentation`` as a :class:`PanopticResult` (ids copied out of the message).

    Segments are taken from ``msg.segments`` as published (ids, categories, kinds, scores,
    areas, boxes), sorted by id.

    Raises:
        ImageConversionError: the label image is not a valid ``32SC1`` image.
    """
    ids = np.array(image_to_array(msg.ids), dtype=np.int32, copy=True)
    segments = sorted(
        (
            Segment(
                id=int(s.id), category_id=int(s.category_id), is_thing=bool(s.is_thing),
                instance_id=int(s.instance_id), score=float(s.score), area=int(s.area),
                track_id=int(s.track_id), track_age=float(s.track_age),
                geometry=_geometry_from(s),
                bbox=(int(s.bbox.x_offset), int(s.bbox.y_offset), int(s.bbox.width),
                      int(s.bbox.height)),
            )
            for s in msg.segments
        ),
        key=lambda s: s.id,
    )
    return PanopticResult(ids=ids, segments=segments, label_divisor=int(msg.label_divisor))


def label_set_from_msg(msg: CategoryArray, name: str = "model") -> LabelSet:
    """A ``CategoryArray`` (the node's ``~/categories``) as a :class:`LabelSet`."""
    return LabelSet(name, [
        CategoryEntry(int(c.id), str(c.name), bool(c.is_thing), tuple(int(v) for v in c.color))
        for c in msg.categories
    ])


# -- 3D outputs -------------------------------------------------------------------------------
def pointcloud_msg(points: np.ndarray, header: Header) -> PointCloud2:
    """An unordered ``PointCloud2`` (height 1, is_dense) of labelled points.

    Args:
        points: structured ndarray[N] of :data:`panoptic_ros.geometry.POINT_DTYPE` (x, y, z
            float32 metres in the header's optical frame, rgb float32-packed 0x00RRGGBB, id
            uint32 panoptic id), only valid points.
        header: the colour frame's header.
    """
    from panoptic_ros.geometry import pointcloud2_fields

    fields, step = pointcloud2_fields()
    msg = PointCloud2(header=header, height=1, width=int(len(points)), is_bigendian=False,
                      point_step=step, row_step=step * int(len(points)), is_dense=True)
    msg.fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype,
                             count=f.count) for f in fields]
    msg.data = np.ascontiguousarray(points).tobytes()
    return msg


MARKER_NAMESPACES = ("panoptic_boxes", "panoptic_labels")
"""Marker namespaces: one box (CUBE) and one label (TEXT_VIEW_FACING) per thing."""


def markers_msg(result: PanopticResult, header: Header, label_set: LabelSet,
                previous: set[int], lifetime_s: float) -> tuple[MarkerArray, set[int]]:
    """Boxes and labels of the frame's things with 3D, for RViz.

    A thing's marker id is its ``track_id`` (its segment id when untracked), in the namespaces
    :data:`MARKER_NAMESPACES`; markers of ids shown before but not now are deleted (DELETE),
    and every marker has ``lifetime_s`` so that a silent node's markers go away too.

    Args:
        result: the frame's result, segments with ``geometry``.
        header: the colour frame's header (markers live in its optical frame).
        label_set: names and colours.
        previous: marker ids of the previous call.
        lifetime_s: seconds a marker lives without being refreshed.

    Returns:
        The MarkerArray and the ids it shows (for the next call's ``previous``).
    """
    names = {c.id: c.name for c in label_set}
    colors = {c.id: c.color for c in label_set}
    lifetime = Duration(sec=int(lifetime_s), nanosec=int(round((lifetime_s % 1) * 1e9)))
    markers, shown = [], set()
    for seg in result.segments:
        g = seg.geometry
        if not seg.is_thing or seg.iscrowd or g is None:
            continue
        marker_id = int(seg.track_id or seg.id)
        shown.add(marker_id)
        lo, hi = np.asarray(g.extent_min, float), np.asarray(g.extent_max, float)
        r, gr, b = (v / 255.0 for v in colors.get(seg.category_id, (255, 255, 255)))
        box = Marker(header=header, ns=MARKER_NAMESPACES[0], id=marker_id, type=Marker.CUBE,
                     action=Marker.ADD, lifetime=lifetime,
                     color=ColorRGBA(r=r, g=gr, b=b, a=0.4))
        box.pose.position.x, box.pose.position.y, box.pose.position.z = ((lo + hi) / 2).tolist()
        box.pose.orientation.w = 1.0
        box.scale.x, box.scale.y, box.scale.z = np.maximum(hi - lo, 0.01).tolist()
        label = Marker(header=header, ns=MARKER_NAMESPACES[1], id=marker_id,
                       type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, lifetime=lifetime,
                       color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0),
                       text=f"{names.get(seg.category_id, seg.category_id)} "
                            f"{seg.track_id or seg.instance_id}  {g.distance:.1f} m")
        label.pose.position.x = float((lo[0] + hi[0]) / 2)
        label.pose.position.y = float(lo[1]) - 0.2  # above the box (y is down)
        label.pose.position.z = float((lo[2] + hi[2]) / 2)
        label.pose.orientation.w = 1.0
        label.scale.z = 0.3
        markers += [box, label]
    for gone in sorted(previous - shown):
        for ns in MARKER_NAMESPACES:
            markers.append(Marker(header=header, ns=ns, id=gone, action=Marker.DELETE))
    return MarkerArray(markers=markers), shown
