"""Pinhole camera calibration and depth images: one owner for intrinsics and depth encodings.

Conventions (REP 103, REP 118, ``sensor_msgs/CameraInfo``):

- Camera optical frame: x right, y down, z forward, metres. Pixel ``(u, v)`` is column ``u``,
  row ``v``, with the centre of pixel ``(0, 0)`` at coordinates ``(0, 0)`` (OpenCV).
- ``K = [fx 0 cx; 0 fy cy; 0 0 1]``; a point ``(x, y, z)`` projects to
  ``u = fx x / z + cx``, ``v = fy y / z + cy``; back-projection of pixel ``(u, v)`` at depth
  ``z``: ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``.
- Depth images: float32 metres with NaN where there is no surface (``32FC1``), or uint16
  millimetres with 0 = no depth (``16UC1``, the 16-bit PNG of the sequence data sets).
- Calibration files: the ``camera_calibration_parsers`` YAML layout (``image_width``,
  ``image_height``, ``camera_name``, ``camera_matrix``, ``distortion_model``,
  ``distortion_coefficients``, ``rectification_matrix``, ``projection_matrix``; matrices as
  ``{rows, cols, data}``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from panoptic_ros.errors import UserError

MAX_DEPTH_MM = 65535
"""Largest depth a 16UC1 image holds (65.535 m); farther surfaces are stored as 0."""


@dataclass(frozen=True)
class CameraCalibration:
    """A camera's calibration as ``sensor_msgs/CameraInfo`` holds it.

    Attributes:
        width: image width, pixels.
        height: image height, pixels.
        K: ndarray[3, 3] float64 intrinsic matrix of the raw image.
        D: ndarray[N] float64 distortion coefficients (``plumb_bob``: k1 k2 t1 t2 k3).
        R: ndarray[3, 3] float64 rectification rotation.
        P: ndarray[3, 4] float64 projection matrix of the rectified image.
        distortion_model: ``"plumb_bob"`` unless the file says otherwise.
        name: ``camera_name``.
    """

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(5))
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    P: np.ndarray | None = None
    distortion_model: str = "plumb_bob"
    name: str = "camera"

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        k = np.asarray(self.K, np.float64)
        if k.shape != (3, 3):
            raise ValueError(f"K must be 3x3, got shape {k.shape}")
        if not (k[0, 0] > 0 and k[1, 1] > 0):
            raise ValueError(f"fx and fy must be > 0, got {k[0, 0]} and {k[1, 1]}")
        p = np.hstack([k, np.zeros((3, 1))]) if self.P is None else np.asarray(self.P, float)
        if p.shape != (3, 4):
            raise ValueError(f"P must be 3x4, got shape {p.shape}")
        r = np.asarray(self.R, np.float64)
        if r.shape != (3, 3):
            raise ValueError(f"R must be 3x3, got shape {r.shape}")
        object.__setattr__(self, "K", k)
        object.__setattr__(self, "P", p)
        object.__setattr__(self, "R", r)
        object.__setattr__(self, "D", np.asarray(self.D, np.float64).reshape(-1))

    @classmethod
    def pinhole(
        cls, width: int, height: int, hfov_deg: float, name: str = "camera"
    ) -> CameraCalibration:
        """An ideal pinhole camera: square pixels, principal point at the image centre.

        Args:
            hfov_deg: horizontal field of view, degrees (0..180 exclusive);
                ``fx = fy = (width / 2) / tan(hfov / 2)``, ``cx = (width - 1) / 2``,
                ``cy = (height - 1) / 2``; no distortion, ``P = [K | 0]``.
        """
        if not 0.0 < hfov_deg < 180.0:
            raise ValueError(f"hfov_deg must be in (0, 180), got {hfov_deg}")
        f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        k = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0, 0, 1]])
        return cls(width=int(width), height=int(height), K=k, name=name)

    @property
    def fx(self) -> float:
        """Focal length along x, pixels."""
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        """Focal length along y, pixels."""
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        """Principal point column, pixels."""
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        """Principal point row, pixels."""
        return float(self.K[1, 2])

    def project(self, points: np.ndarray) -> np.ndarray:
        """Pixel coordinates of points in the optical frame (ideal pinhole, K only).

        Args:
            points: ndarray[..., 3] metres (x right, y down, z forward), z > 0.

        Returns:
            ndarray[..., 2] float64 ``(u, v)``.
        """
        p = np.asarray(points, np.float64)
        return np.stack([self.fx * p[..., 0] / p[..., 2] + self.cx,
                         self.fy * p[..., 1] / p[..., 2] + self.cy], axis=-1)

    def backproject(self, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Points in the optical frame of pixels ``(u, v)`` at depths ``z`` (metres).

        Returns:
            ndarray[..., 3] float64 ``(x, y, z)``: ``x = (u - cx) z / fx``,
            ``y = (v - cy) z / fy``.
        """
        z = np.asarray(z, np.float64)
        return np.stack([(np.asarray(u, np.float64) - self.cx) * z / self.fx,
                         (np.asarray(v, np.float64) - self.cy) * z / self.fy, z], axis=-1)

    def backproject_depth(self, depth: np.ndarray) -> np.ndarray:
        """The point of every pixel of a depth image.

        Args:
            depth: ndarray[H, W] float metres (NaN = none), H, W = this camera's size.

        Returns:
            ndarray[H, W, 3] float64 optical-frame points; NaN where the depth is NaN.
        """
        if depth.shape != (self.height, self.width):
            raise ValueError(f"depth is {depth.shape}, camera is {self.height}x{self.width}")
        v, u = np.mgrid[0:self.height, 0:self.width]
        return self.backproject(u, v, depth)

    # -- camera_calibration_parsers YAML ------------------------------------------------
    def to_dict(self) -> dict:
        """The calibration in the ``camera_calibration_parsers`` YAML layout (plain types)."""
        def matrix(m: np.ndarray) -> dict:
            m = np.atleast_2d(m)
            return {"rows": int(m.shape[0]), "cols": int(m.shape[1]),
                    "data": [float(x) for x in m.reshape(-1)]}

        return {
            "image_width": int(self.width),
            "image_height": int(self.height),
            "camera_name": str(self.name),
            "camera_matrix": matrix(self.K),
            "distortion_model": str(self.distortion_model),
            "distortion_coefficients": matrix(self.D.reshape(1, -1)),
            "rectification_matrix": matrix(self.R),
            "projection_matrix": matrix(self.P),
        }

    def to_yaml(self) -> str:
        """YAML text that ``camera_calibration_parsers`` (and :meth:`from_yaml`) read."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_dict(cls, data: dict, source: str = "calibration") -> CameraCalibration:
        """Parse the YAML layout; a missing or malformed entry raises :class:`UserError`."""
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a mapping at the top level")

        def matrix(key: str, shape: tuple[int, int] | None) -> np.ndarray:
            entry = data.get(key)
            try:
                rows, cols, values = int(entry["rows"]), int(entry["cols"]), entry["data"]
                m = np.asarray(values, np.float64).reshape(rows, cols)
            except (TypeError, KeyError, ValueError):
                raise UserError(f"{source}: '{key}' must be {{rows, cols, data}} with "
                                "rows x cols numbers") from None
            if shape is not None and m.shape != shape:
                raise UserError(f"{source}: '{key}' must be {shape[0]}x{shape[1]}, "
                                f"got {m.shape[0]}x{m.shape[1]}")
            return m

        try:
            width, height = int(data["image_width"]), int(data["image_height"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{source}: needs integer image_width and image_height") from None
        try:
            return cls(
                width=width, height=height, K=matrix("camera_matrix", (3, 3)),
                D=matrix("distortion_coefficients", None).reshape(-1),
                R=matrix("rectification_matrix", (3, 3)),
                P=matrix("projection_matrix", (3, 4)),
                distortion_model=str(data.get("distortion_model", "plumb_bob")),
                name=str(data.get("camera_name", "camera")),
            )
        except ValueError as err:
            raise UserError(f"{source}: {err}") from None

    @classmethod
    def from_yaml(cls, text: str, source: str = "calibration") -> CameraCalibration:
        """Parse ``camera_calibration_parsers`` YAML text."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise UserError(f"{source} is not valid YAML: {err}") from None
        return cls.from_dict(data, source)

    def write(self, path: str | Path) -> Path:
        """Write the YAML file (folders created); returns its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())
        return path

    @classmethod
    def read(cls, path: str | Path) -> CameraCalibration:
        """Read a ``camera_calibration_parsers`` YAML file."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"camera calibration not found: {path}")
        return cls.from_yaml(path.read_text(), str(path))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CameraCalibration):
            return NotImplemented
        return (self.width, self.height, self.distortion_model, self.name) == (
            other.width, other.height, other.distortion_model, other.name
        ) and all(np.array_equal(a, b) for a, b in (
            (self.K, other.K), (self.D, other.D), (self.R, other.R), (self.P, other.P)))

    __hash__ = None  # type: ignore[assignment]  # holds arrays


def depth_to_millimetres(depth: np.ndarray) -> np.ndarray:
    """Metres to a ``16UC1`` depth image (REP 118).

    Args:
        depth: ndarray[H, W] float metres; NaN, <= 0 or inf = no surface.

    Returns:
        ndarray[H, W] uint16 millimetres, rounded to nearest; 0 where there is no surface or
        the surface is beyond :data:`MAX_DEPTH_MM` (a 16-bit image cannot hold it).
    """
    mm = np.asarray(depth, np.float64) * 1000.0
    valid = np.isfinite(mm) & (mm >= 0.5) & (mm < MAX_DEPTH_MM + 0.5)
    return np.where(valid, np.rint(np.where(valid, mm, 0.0)), 0).astype(np.uint16)


def depth_from_millimetres(depth_mm: np.ndarray) -> np.ndarray:
    """A ``16UC1`` depth image to float32 metres, NaN where it holds 0 (no depth)."""
    mm = np.asarray(depth_mm)
    if mm.dtype != np.uint16:
        raise ValueError(f"expected a uint16 depth image, got {mm.dtype}")
    out = mm.astype(np.float32) / np.float32(1000.0)
    out[mm == 0] = np.nan
    return out
