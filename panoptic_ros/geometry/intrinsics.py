"""The pinhole intrinsics that back-project the colour image's pixels, from a CameraInfo.

``sensor_msgs/CameraInfo`` holds ``K`` (the raw image's intrinsics) and ``P`` (the rectified
image's projection). Rectified images, the usual input of a segmentation node, are described by
``P``: ``fx' = P[0,0]``, ``fy' = P[1,1]``, ``cx' = P[0,2]``, ``cy' = P[1,2]``. So ``P`` is used
whenever it is set (not all zero); a driver that leaves ``P`` zero gets ``K``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from panoptic_ros.camera_model import CameraCalibration
from panoptic_ros.geometry.depth import DepthError, depth_array, depth_to_metres, match_depth_size


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of one image size (pixels).

    Pixel ``(u, v)`` (column, row; pixel centres at integers) at depth ``z`` metres
    back-projects to ``x = (u - cx) / fx * z``, ``y = (v - cy) / fy * z``, ``z`` in the
    camera optical frame (REP 103).

    Attributes:
        fx, fy: focal lengths, pixels (> 0).
        cx, cy: principal point, pixels.
        width, height: the image size they describe, pixels.
        source: ``"P"`` or ``"K"``, the matrix they were read from.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    source: str = "P"


def intrinsics_from_camera_info(
    width: int,
    height: int,
    k: Sequence[float] | np.ndarray,
    p: Sequence[float] | np.ndarray,
    image_size: tuple[int, int] | None = None,
) -> Intrinsics:
    """Intrinsics from the fields of a ``sensor_msgs/CameraInfo`` (plain numbers and lists).

    Args:
        width, height: ``CameraInfo.width`` / ``height``.
        k: ``CameraInfo.k``, 9 numbers row-major.
        p: ``CameraInfo.p``, 12 numbers row-major; used when not all zero, else ``k``.
        image_size: ``(height, width)`` of the colour image the intrinsics must describe.

    Raises:
        DepthError: a matrix of the wrong length, a zero, negative or non-finite focal length,
            a non-finite principal point, or a size other than ``image_size`` (the message names
            both sizes).
    """
    k_arr = np.asarray(k, np.float64).reshape(-1)
    p_arr = np.asarray(p, np.float64).reshape(-1)
    if k_arr.size != 9:
        raise DepthError(f"CameraInfo K must have 9 numbers, got {k_arr.size}")
    if p_arr.size != 12:
        raise DepthError(f"CameraInfo P must have 12 numbers, got {p_arr.size}")
    if np.any(p_arr != 0):
        m, source = p_arr.reshape(3, 4), "P"
    else:
        m, source = k_arr.reshape(3, 3), "K"
    fx, fy, cx, cy = float(m[0, 0]), float(m[1, 1]), float(m[0, 2]), float(m[1, 2])
    if not (fx > 0 and fy > 0 and math.isfinite(fx) and math.isfinite(fy)):
        raise DepthError(f"camera_info {source} has focal lengths fx={fx}, fy={fy}: they must "
                         "be finite and > 0 (is the camera calibrated?)")
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise DepthError(f"camera_info {source} has a non-finite principal point ({cx}, {cy})")
    if image_size is not None and (int(height), int(width)) != tuple(image_size):
        raise DepthError(f"camera_info is for {int(width)}x{int(height)} images, the image is "
                         f"{image_size[1]}x{image_size[0]}")
    return Intrinsics(fx, fy, cx, cy, int(width), int(height), source)


def intrinsics_from_calibration(calibration: CameraCalibration,
                                image_size: tuple[int, int] | None = None) -> Intrinsics:
    """Intrinsics of a :class:`CameraCalibration` (a calibration file), by the same rule."""
    return intrinsics_from_camera_info(calibration.width, calibration.height, calibration.K,
                                       calibration.P, image_size)


def depth_and_intrinsics(depth: Any, info: Any, image_shape: tuple[int, int],
                         info_topic: str = "camera_info") -> tuple[np.ndarray, Intrinsics, bool]:
    """A depth image and the colour camera's calibration, as the 3D step needs them.

    Args:
        depth: a ``sensor_msgs/Image`` of the depth (rclpy's or rosbags' object: fields
            ``data, height, width, step, encoding, is_bigendian`` are read).
        info: the newest ``sensor_msgs/CameraInfo`` (fields ``width, height, k, p``), or None.
        image_shape: ``(H, W)`` of the colour image.
        info_topic: the camera_info topic, named when ``info`` is None.

    Returns:
        ``(depth_m, intrinsics, scaled)``: ndarray[H, W] float32 metres (NaN = none), the
        intrinsics of the colour image, and whether the depth was scaled to its size.

    Raises:
        DepthError: no camera_info yet, a bad calibration, an unsupported depth encoding or a
            malformed buffer (the message says which).
    """
    if info is None:
        raise DepthError(f"no camera_info received yet on {info_topic}")
    intrinsics = intrinsics_from_camera_info(info.width, info.height, info.k, info.p,
                                             image_size=image_shape)
    raw = depth_array(depth.data, depth.height, depth.width, depth.step, depth.encoding,
                      bool(depth.is_bigendian))
    depth_m, scaled = match_depth_size(depth_to_metres(raw, depth.encoding), *image_shape)
    return depth_m, intrinsics, scaled
