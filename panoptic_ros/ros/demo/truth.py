"""The 3D ground truth the demo camera sends with every sequence frame (ROS-free).

A sequence frame knows where each visible thing is: ``ObjectState.position_m``, the per-axis
median of the back-projected depth pixels of its visible mask, which is the panoptic node's
``centroid`` by definition. :func:`truth_with_geometry` puts that, with the rest of
:class:`~panoptic_ros.result.SegmentGeometry` (valid fraction, distance, extent) from the frame's
exact depth and ground-truth masks, into the ground truth's segments, so that the ground-truth
``PanopticSegmentation`` carries the 3D a prediction is scored against.
"""

from __future__ import annotations

from dataclasses import replace

from panoptic_ros.data.sequences import SequenceFrame
from panoptic_ros.geometry import intrinsics_from_calibration, segment_geometry
from panoptic_ros.result import PanopticResult


def truth_with_geometry(frame: SequenceFrame) -> PanopticResult:
    """The frame's ground truth with :attr:`Segment.geometry` of every segment with depth.

    Geometry comes from :func:`~panoptic_ros.geometry.segment_geometry` on the frame's float
    depth (metres, not the 16UC1 millimetres the node receives) and ground-truth masks, in the
    camera optical frame of the frame's calibration; a visible thing's ``centroid`` is then its
    ``position_m`` itself (they agree to float32 rounding; the data set's own value is kept).
    Segments without a valid depth pixel (sky) have ``geometry=None``.
    """
    camera = intrinsics_from_calibration(frame.camera, frame.depth.shape)
    result = segment_geometry(frame.result, frame.depth, camera)
    positions = {o.id: o.position_m for o in frame.objects
                 if o.visible and o.position_m is not None}
    segments = []
    for s in result.segments:
        position = positions.get(s.id)
        if position is not None and s.geometry is not None:
            centroid = tuple(float(v) for v in position)
            s = replace(s, geometry=replace(s.geometry, centroid=centroid))
        segments.append(s)
    return replace(result, segments=segments)
