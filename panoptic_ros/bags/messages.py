"""Our messages as rosbags objects: the bag-side twin of :mod:`panoptic_ros.ros.messages`.

Field values come from :mod:`panoptic_ros.message_fields`, as for the node's rclpy messages;
here they are wrapped in the classes of a rosbags :class:`Typestore` (fixed-size arrays as
numpy arrays, as rosbags serialises them). The result serialises to the same CDR bytes as the
node's message for the same result and header (checked in test/test_bag.py).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from rosbags.typesys.store import Typestore

from panoptic_ros.bags.typestore import type_name
from panoptic_ros.categories import LabelSet
from panoptic_ros.message_fields import (
    bbox_fields,
    category_fields,
    class_count_fields,
    segment_info_fields,
)
from panoptic_ros.result import PanopticResult

IDS_ENCODING = "32SC1"
"""Encoding of the panoptic label image (as the node's)."""

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"

_POINTS = ("centroid", "extent_min", "extent_max")


def stamp_seconds(header: Any) -> float:
    """A ``std_msgs/Header``'s stamp in seconds (what the tracker's clock reads)."""
    return int(header.stamp.sec) + int(header.stamp.nanosec) * 1e-9


def ids_image(store: Typestore, ids: np.ndarray, header: Any) -> Any:
    """The ``32SC1`` ``sensor_msgs/Image`` of an id map, native byte order, dense rows.

    Args:
        store: the type store.
        ids: ndarray[H, W] int32 (``category * label_divisor + instance``).
        header: the input image's header.
    """
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    height, width = ids.shape
    return store.types["sensor_msgs/msg/Image"](
        header=header, height=height, width=width, encoding=IDS_ENCODING,
        is_bigendian=int(sys.byteorder == "big"), step=4 * width,
        data=ids.view(np.uint8).reshape(-1))


def panoptic_msg(store: Typestore, result: PanopticResult, header: Any,
                 label_set: LabelSet) -> Any:
    """The frame's ``panoptic_ros/msg/PanopticSegmentation`` (header copied unchanged)."""
    roi = store.types["sensor_msgs/msg/RegionOfInterest"]
    segment_info = store.types[type_name("SegmentInfo")]
    names = {c.id: c.name for c in label_set}
    segments = []
    for s in result.segments:
        fields = segment_info_fields(s, names.get(s.category_id, ""))
        for key in _POINTS:
            fields[key] = np.asarray(fields[key], dtype=np.float32)
        segments.append(segment_info(**fields, bbox=roi(**bbox_fields(s), do_rectify=False)))
    return store.types[type_name("PanopticSegmentation")](
        header=header, label_divisor=int(result.label_divisor),
        ids=ids_image(store, result.ids, header), segments=segments)


def instance_counts_msg(store: Typestore, result: PanopticResult, header: Any,
                        label_set: LabelSet) -> Any:
    """The frame's ``InstanceCounts``: every thing category of the label set, zeros included."""
    count = store.types[type_name("ClassCount")]
    return store.types[type_name("InstanceCounts")](
        header=header, counts=[count(**f) for f in class_count_fields(result, label_set)])


def categories_msg(store: Typestore, label_set: LabelSet, label_divisor: int,
                   header: Any) -> Any:
    """The label set's ``CategoryArray`` (stuff first, then things)."""
    category = store.types[type_name("Category")]
    entries = []
    for fields in category_fields(label_set):
        fields["color"] = np.asarray(fields["color"], dtype=np.uint8)
        entries.append(category(**fields))
    return store.types[type_name("CategoryArray")](
        header=header, label_divisor=int(label_divisor), categories=entries)


def pointcloud_msg(store: Typestore, points: np.ndarray, header: Any) -> Any:
    """An unordered ``PointCloud2`` (height 1, is_dense) of labelled points (as the node's).

    Args:
        store: the type store.
        points: structured ndarray[N] of :data:`panoptic_ros.geometry.POINT_DTYPE` (x, y, z
            float32 metres in the header's optical frame, rgb float32-packed 0x00RRGGBB, id
            uint32 panoptic id), only valid points.
        header: the colour image's header.
    """
    from panoptic_ros.geometry import pointcloud2_fields

    fields, step = pointcloud2_fields()
    point_field = store.types["sensor_msgs/msg/PointField"]
    n = int(len(points))
    return store.types[POINTCLOUD2](
        header=header, height=1, width=n,
        fields=[point_field(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                for f in fields],
        is_bigendian=False, point_step=step, row_step=step * n,
        data=np.ascontiguousarray(points).view(np.uint8).reshape(-1), is_dense=True)
