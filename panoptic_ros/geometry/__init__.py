"""3D per segment from an aligned depth image (ROS-free).

Depth decoding, intrinsics, per-segment geometry, the labelled point cloud and colour/depth
stamp pairing.

The 3D step of the frame path is :func:`segment_geometry`: a :class:`PanopticResult` plus a depth
image in metres and the colour camera's intrinsics in, the same result with
:attr:`Segment.geometry` filled out. The node, ``panoptic-ros infer``, ``bag`` and the demo all
call it after the backend (and the tracker).

Frames and units: REP 103 camera optical frame of the colour image (x right, y down, z forward),
metres; depth encodings as REP 118.
"""

from panoptic_ros.geometry.cloud import (
    POINT_DTYPE,
    PointField,
    labelled_points,
    pack_rgb,
    pointcloud2_fields,
)
from panoptic_ros.geometry.depth import (
    DEPTH_ENCODINGS,
    DepthError,
    depth_array,
    depth_to_metres,
    match_depth_size,
)
from panoptic_ros.geometry.intrinsics import (
    Intrinsics,
    depth_and_intrinsics,
    intrinsics_from_calibration,
    intrinsics_from_camera_info,
)
from panoptic_ros.geometry.pairing import Paired, StampPairer
from panoptic_ros.geometry.segments import (
    backproject_image,
    geometry_json,
    segment_geometries,
    segment_geometry,
)

__all__ = [
    "depth_and_intrinsics",
    "DEPTH_ENCODINGS",
    "POINT_DTYPE",
    "DepthError",
    "Intrinsics",
    "Paired",
    "PointField",
    "StampPairer",
    "backproject_image",
    "depth_array",
    "depth_to_metres",
    "geometry_json",
    "intrinsics_from_calibration",
    "intrinsics_from_camera_info",
    "labelled_points",
    "match_depth_size",
    "pack_rgb",
    "pointcloud2_fields",
    "segment_geometries",
    "segment_geometry",
]
