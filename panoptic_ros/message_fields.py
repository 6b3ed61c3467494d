"""Field values of the package's messages, independent of any ROS message library.

One description of what goes into ``SegmentInfo``, ``ClassCount`` and ``Category`` (msg/*.msg)
from a :class:`PanopticResult` and its :class:`LabelSet`, used by both builders: rclpy's
(:mod:`panoptic_ros.ros.messages`, the node) and rosbags' (:mod:`panoptic_ros.bags.messages`,
``panoptic-ros bag``). Each function returns plain Python values keyed by the message's field
names; a builder only wraps them in its own message classes, so a field added to a .msg file
is added here once. ``test/test_bag.py`` checks that both builders serialise to the same CDR
bytes.
"""

from __future__ import annotations

from typing import Any

from panoptic_ros.categories import LabelSet
from panoptic_ros.result import PanopticResult, Segment, SegmentGeometry

NO_POINT: tuple[float, float, float] = (float("nan"),) * 3
"""``centroid`` / ``extent_*`` of a segment without 3D."""


def geometry_fields(geometry: SegmentGeometry | None) -> dict[str, Any]:
    """``SegmentInfo``'s 3D fields: the geometry, or ``has_3d`` false, 0 and NaNs without it."""
    if geometry is None:
        return {"has_3d": False, "valid_depth_fraction": 0.0, "centroid": NO_POINT,
                "distance": float("nan"), "extent_min": NO_POINT, "extent_max": NO_POINT}
    return {"has_3d": True, "valid_depth_fraction": float(geometry.valid_fraction),
            "centroid": tuple(float(v) for v in geometry.centroid),
            "distance": float(geometry.distance),
            "extent_min": tuple(float(v) for v in geometry.extent_min),
            "extent_max": tuple(float(v) for v in geometry.extent_max)}


def segment_info_fields(segment: Segment, label: str) -> dict[str, Any]:
    """Every ``SegmentInfo`` field except ``bbox`` (see :func:`bbox_fields`).

    Args:
        segment: one segment of the frame's result.
        label: its category's name ("" when the label set does not know the category).

    Returns:
        ``{field: value}`` with Python ints, floats, bools, strs and float 3-tuples.
    """
    return {
        "id": int(segment.id),
        "category_id": int(segment.category_id),
        "label": label,
        "is_thing": bool(segment.is_thing),
        "instance_id": int(segment.instance_id),
        "score": float(segment.score),
        "area": int(segment.area),
        "track_id": int(segment.track_id),
        "track_age": float(segment.track_age),
        **geometry_fields(segment.geometry),
    }


def bbox_fields(segment: Segment) -> dict[str, int]:
    """The ``sensor_msgs/RegionOfInterest`` fields of a segment's box (``do_rectify`` false)."""
    x, y, w, h = segment.bbox
    return {"x_offset": int(x), "y_offset": int(y), "width": int(w), "height": int(h)}


def class_count_fields(result: PanopticResult, label_set: LabelSet) -> list[dict[str, Any]]:
    """One ``ClassCount`` per thing category of the label set, zeros included, in table order.

    ``nearest_distance`` is the smallest ``distance`` of the category's instances with 3D,
    NaN when none has it. Crowd regions are not counted.
    """
    counts = result.counts(label_set)
    nearest: dict[int, float] = {}
    for seg in result.segments:
        if seg.is_thing and not seg.iscrowd and seg.geometry is not None:
            old = nearest.get(seg.category_id, float("inf"))
            nearest[seg.category_id] = min(old, float(seg.geometry.distance))
    return [
        {"category_id": int(c.id), "label": c.name, "count": int(counts.get(c.id, 0)),
         "nearest_distance": nearest.get(c.id, float("nan"))}
        for c in label_set.things
    ]


def category_fields(label_set: LabelSet) -> list[dict[str, Any]]:
    """One ``Category`` per category (stuff first, then things: training order)."""
    return [
        {"id": int(c.id), "name": c.name, "is_thing": bool(c.is_thing),
         "color": [int(v) for v in c.color]}
        for c in label_set
    ]
