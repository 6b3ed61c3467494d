"""Synthetic video sequences with exact metric geometry and persistent instance ids.

A sequence is one static pinhole camera (field of view, height above a flat ground, pitch)
looking at a scene laid out and painted like the single-image scenes of
:mod:`panoptic_ros.data.synthetic` (same layouts, textures, clutter, thing drawings, shadows
and sensor model), with things that stand on the ground and move on it at constant velocity:
people walk (0.8..1.7 m/s, any heading), cars drive sideways in the direction they face
(2..9 m/s), balls roll (0.5..3 m/s), boxes mostly stand, some of each stand still, some enter
from a side of the view and others leave it. Every random choice comes from the sequence's
generator :func:`sequence_rng` ``(seed, video)``.

Geometry (metres, REP 103 optical frame x right, y down, z forward):

- The *level* frame has the camera at its origin, x right, y down, z forward and horizontal;
  the ground is the plane ``y = camera_height``. The optical frame is the level frame pitched
  down by ``pitch`` about x.
- Ground, grass and water pixels: the depth of the ray's intersection with the ground plane,
  ``z = h / ((v - cy) / fy * cos(pitch) + sin(pitch))`` (independent of the column).
- Wall pixels: a vertical surface standing on the ground where the wall's run in that column
  ends (its bottom edge), at the level distance of that ground point, capped at the scene's
  far distance (buildings on the horizon); sky: no surface (NaN; 0 in a 16-bit image).
- Things: a planar billboard parallel to the image plane at the camera depth ``z`` of the
  object's foot point; its drawing is scaled to ``f * size / z`` pixels, so its silhouette's
  pixel height is ``fy * size_m[1] / z`` (to a pixel of rounding).
- ``position_m`` of a thing in a frame: the per-axis median of the back-projected depth pixels
  of its visible mask; ``size_m`` = ``[w, h, l]``: silhouette width and height, and the
  extent along the line of sight (a car's length is its silhouette width, seen from the side).

Thing ids: ``category * label_divisor + instance``, the instance fixed per object for the whole
sequence (1.. per category in the order objects are created), never reused for another object.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from panoptic_ros.camera_model import (
    CameraCalibration,
    depth_from_millimetres,
    depth_to_millimetres,
)
from panoptic_ros.categories import DEFAULT_LABEL_DIVISOR, LabelSet, synthetic
from panoptic_ros.data.coco_panoptic import (
    load_json,
    read_image,
    read_panoptic_png,
    write_image,
    write_panoptic_png,
)
from panoptic_ros.data.synthetic import (
    BALL,
    BOX,
    CAR,
    GRASS,
    GROUND,
    PERSON,
    WALL,
    WATER,
    SceneConfig,
    _Canvas,
    _draw_ball,
    _draw_box,
    _draw_car,
    _draw_person,
    _exposure,
    _max_overlap,
    _SceneBuilder,
    _sensor,
    _Thing,
)
from panoptic_ros.errors import UserError
from panoptic_ros.result import PanopticResult

_FLAT = (GROUND, GRASS, WATER)  # stuff lying on the ground plane
_REF_PX = 400.0  # drawing size at which an object's silhouette proportions are measured
_NEAR_M = 0.5  # things nearer than this (camera z) are not drawn
_PLAN_S = 6.0  # walking towards or away keeps a thing in its distance range this long

# Per category: the drawing function's size parameter as synthetic.py samples it (pixels at
# a 256-row image, before its 0.42..1.02 distance scale), the metric size of the object's key
# extent (person: height; others: silhouette width), the silhouette dimension it sets
# (0 = height, 1 = width), and the depth extent l (metres) or None for "same as width".
_PIXELS = {PERSON: (85.0, 125.0), CAR: (105.0, 165.0), BOX: (28.0, 60.0), BALL: (16.0, 40.0)}
_METRES = {PERSON: (1.55, 1.9), CAR: (3.9, 4.8), BOX: (0.35, 0.9), BALL: (0.22, 0.6)}
_KEY_AXIS = {PERSON: 0, CAR: 1, BOX: 1, BALL: 1}
_SHADOW = {PERSON: 0.16, CAR: 0.5, BOX: 0.55, BALL: 0.45}  # shadow half width / drawing size


@dataclass(frozen=True)
class SequenceConfig:
    """How sequences are generated.

    Attributes:
        height: image height, pixels (>= 32).
        width: image width, pixels (>= 32).
        rate: frames per second; frame ``k`` is at ``k / rate`` seconds.
        hfov_deg: range of the horizontal field of view, degrees.
        camera_height_m: range of the camera's height above the ground, metres.
        min_things: fewest objects of a sequence (visible or not in a given frame).
        max_things: most objects of a sequence (< label_divisor).
        noise_sigma: sensor noise, 0..255 units (per frame, independent).
        label_divisor: ``ids = category * label_divisor + instance``.
    """

    height: int = 256
    width: int = 320
    rate: float = 10.0
    hfov_deg: tuple[float, float] = (60.0, 75.0)
    camera_height_m: tuple[float, float] = (1.1, 1.8)
    min_things: int = 3
    max_things: int = 10
    noise_sigma: float = 2.5
    label_divisor: int = DEFAULT_LABEL_DIVISOR

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if not 0 < self.hfov_deg[0] <= self.hfov_deg[1] < 180:
            raise ValueError(f"hfov_deg must be a range inside (0, 180), got {self.hfov_deg}")
        if not 0 < self.camera_height_m[0] <= self.camera_height_m[1]:
            raise ValueError(f"camera_height_m must be a positive range, got "
                             f"{self.camera_height_m}")
        self.scene_config()  # validates sizes, counts and the divisor

    def scene_config(self) -> SceneConfig:
        """The single-image settings the painting and visibility rules are shared with."""
        return SceneConfig(height=self.height, width=self.width, min_things=self.min_things,
                           max_things=self.max_things, noise_sigma=self.noise_sigma,
                           label_divisor=self.label_divisor)


@dataclass(frozen=True)
class ObjectState:
    """Ground truth of one object of a sequence in one frame, visible or not.

    Attributes:
        id: its segment id, ``category * label_divisor + instance``, the same in every frame.
        category_id: dataset category id.
        size_m: ``(w, h, l)`` metres, fixed for the sequence.
        foot_m: ndarray[3] float64, the foot point (on the ground, below the object's
            centre) in the optical frame, metres.
        visible: whether it has pixels in this frame's ground truth.
        position_m: per-axis median of its visible pixels back-projected from the depth
            image, ndarray[3] float64 metres in the optical frame; None when not visible.
    """

    id: int
    category_id: int
    size_m: tuple[float, float, float]
    foot_m: np.ndarray
    visible: bool
    position_m: np.ndarray | None = None


@dataclass
class SequenceFrame:
    """One frame of a sequence.

    Attributes:
        video_id: the sequence's name (``"<seed>_<video:04d>"`` when generated).
        frame_index: 0.. within the sequence.
        stamp: seconds since the first frame, ``frame_index / rate``.
        image: ndarray[H, W, 3] uint8 RGB.
        result: ground truth; ``ids`` ndarray[H, W] int32 ``category * label_divisor +
            instance`` with the dataset's persistent instance numbers.
        depth: ndarray[H, W] float32 metres of the surface seen at each pixel, NaN where none
            (sky; and, read back from a 16-bit file, beyond 65.535 m).
        camera: the calibration (the same for every frame of a sequence).
        objects: every object of the sequence in this frame (visible or not), by id.
        camera_height_m: the camera's height above the ground plane, metres.
        pitch_rad: the camera's pitch, radians, positive looking down; the ground plane is
            ``{p : p . (0, cos(pitch), sin(pitch)) = camera_height_m}`` in the optical frame.
    """

    video_id: str
    frame_index: int
    stamp: float
    image: np.ndarray
    result: PanopticResult
    depth: np.ndarray
    camera: CameraCalibration
    objects: list[ObjectState] = field(default_factory=list)
    camera_height_m: float = float("nan")
    pitch_rad: float = float("nan")

    def segments_info(self) -> list[dict]:
        """COCO ``segments_info`` of the ground truth.

        Things carry ``position_m`` and ``size_m`` (metres, rounded to 0.1 mm).
        """
        _, info = self.result.to_coco()
        by_id = {o.id: o for o in self.objects if o.visible}
        for entry in info:
            obj = by_id.get(entry["id"])
            if obj is not None:
                entry["position_m"] = [round(float(v), 4) for v in obj.position_m]
                entry["size_m"] = [round(float(v), 4) for v in obj.size_m]
        return info


def sequence_rng(seed: int, video: int) -> np.random.Generator:
    """The random generator of sequence ``video`` of a data set generated with ``seed``.

    Distinct from :func:`~panoptic_ros.data.synthetic.scene_rng` ``(seed, video)``.
    """
    if seed < 0 or video < 0:
        raise ValueError(f"seed and video must be >= 0, got {seed} and {video}")
    return np.random.default_rng([int(seed), int(video), 0x5E9])


def video_name(seed: int, video: int) -> str:
    """The ``video_id`` of sequence ``video`` of ``seed``."""
    return f"{seed}_{video:04d}"


def ground_depth(camera: CameraCalibration, camera_height: float, pitch: float) -> np.ndarray:
    """Camera depth of the ground plane seen in each row.

    Args:
        camera: intrinsics (fy, cy and the height are used).
        camera_height: metres above the ground.
        pitch: radians, positive looking down.

    Returns:
        ndarray[H] float64 metres, ``h / ((v - cy) / fy * cos(pitch) + sin(pitch))``; NaN at
        and above the horizon.
    """
    a = (np.arange(camera.height, dtype=np.float64) - camera.cy) / camera.fy
    down = a * math.cos(pitch) + math.sin(pitch)
    with np.errstate(divide="ignore"):
        return np.where(down > 1e-9, camera_height / np.where(down > 1e-9, down, 1.0), np.nan)


@dataclass
class _Object:
    """An object of a sequence: identity, appearance and motion on the ground."""

    id: int
    category_id: int
    appearance: int  # seed of its drawing (the same drawing, scaled, in every frame)
    draw_m: float  # the drawing function's size parameter, metres
    size_m: tuple[float, float, float]
    x0: float  # level-frame ground position at t = 0, metres
    z0: float
    vx: float  # metres per second on the ground
    vz: float

    def draw(self, size_px: float) -> tuple[_Canvas, float]:
        """Its drawing at ``size_px`` pixels: the canvas and the feet column in it."""
        return _draw(self.category_id, np.random.default_rng(self.appearance), size_px)


def _draw(category: int, rng: np.random.Generator, size_px: float) -> tuple[_Canvas, float]:
    if category == PERSON:
        return _draw_person(rng, size_px)
    canvas = {CAR: _draw_car, BOX: _draw_box, BALL: _draw_ball}[category](rng, size_px)
    return canvas, canvas.mask.shape[1] / 2


def _extent(mask: np.ndarray) -> tuple[int, int]:
    """Silhouette (height, width) of a mask, pixels."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def _faces_left(canvas: _Canvas) -> bool:
    """Whether a car drawing faces left: its red tail light is then at the right end."""
    w = canvas.col.shape[1]
    strip = max(w // 20, 1)
    red = canvas.col[..., 0] - canvas.col[..., 1]
    return float(red[:, -strip:].sum()) > float(red[:, :strip].sum())


class _SequenceRenderer:
    """Lays out, paints and animates one sequence; :meth:`frame` renders frame ``k``."""

    def __init__(self, rng: np.random.Generator, config: SequenceConfig, video_id: str,
                 frame_seed: tuple[int, ...]) -> None:
        self.cfg = config
        self.video_id = video_id
        self.frame_seed = frame_seed
        h, w = config.height, config.width
        self.builder = _SceneBuilder(rng, config.scene_config())
        stuff, floor, painted_horizon = self.builder._layout()
        self.stuff = stuff
        self.camera = CameraCalibration.pinhole(
            w, h, float(rng.uniform(*config.hfov_deg)), name="synthetic")
        self.camera_height = float(rng.uniform(*config.camera_height_m))
        self.pitch = self._pitch(rng, stuff)
        self.far_m = float(rng.uniform(30.0, 60.0))
        self.stuff_depth = self._stuff_depth(stuff)
        # Textures use the layout's own horizon, so they look as in single scenes.
        self.background = self.builder._paint_stuff(stuff, floor, painted_horizon)
        self.builder._clutter(self.background, stuff)
        self.exposure = _exposure(rng, h, w)
        floor_row = float(np.clip(floor, 0.2 * h, 0.85 * h)) + 0.03 * h
        self.objects = self._objects(rng, floor_row)

    # -- geometry -------------------------------------------------------------------------
    def _pitch(self, rng: np.random.Generator, stuff: np.ndarray) -> float:
        """Camera pitch from the layout.

        The horizon sits just above the highest ground pixel (open country, shore), or the
        back wall / hall wall is 15..35 m / 10..25 m away (far enough for things at the
        distances that give them single-scene pixel sizes).
        """
        flat = np.isin(stuff, _FLAT)
        tops = np.where(flat.any(axis=0), flat.argmax(axis=0), self.cfg.height)
        top = float(tops.min())
        cam = self.camera
        if self.builder.kind in ("yard", "indoor"):
            distance = rng.uniform(15.0, 35.0) if self.builder.kind == "yard" else \
                rng.uniform(10.0, 25.0)
            return math.atan2(self.camera_height, distance) - math.atan((top - cam.cy) / cam.fy)
        return math.atan((cam.cy - (top - 1.0)) / cam.fy)

    def _horizon_row(self) -> float:
        return self.camera.cy - self.camera.fy * math.tan(self.pitch)

    def _level_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Down and forward components (level frame) of the rays of ``rows`` (camera z = 1)."""
        a = (np.asarray(rows, np.float64) - self.camera.cy) / self.camera.fy
        c, s = math.cos(self.pitch), math.sin(self.pitch)
        return a * c + s, c - a * s

    def _stuff_depth(self, stuff: np.ndarray) -> np.ndarray:
        """Depth of the stuff surfaces, ndarray[H, W] float32 metres, NaN for sky."""
        h, w = stuff.shape
        depth = np.full((h, w), np.nan, np.float64)
        ground = ground_depth(self.camera, self.camera_height, self.pitch)
        flat = np.isin(stuff, _FLAT)
        depth[flat] = np.broadcast_to(ground[:, None], (h, w))[flat]
        # Walls: the level distance of the ground where each column's wall run ends.
        wall = stuff == WALL
        bottom = np.full(w, h - 1, np.int64)  # bottom row of the run each row belongs to
        run_bottom = np.empty((h, w), np.int64)
        for v in range(h - 1, -1, -1):
            bottom = np.where(wall[v] & ((v == h - 1) | ~wall[min(v + 1, h - 1)]), v, bottom)
            run_bottom[v] = bottom
        down, forward = self._level_rows(run_bottom[wall] + 0.5)
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = np.where(down > 1e-9, self.camera_height * forward / down, np.inf)
        distance = np.minimum(distance, self.far_m)
        _, forward_here = self._level_rows(np.nonzero(wall)[0])
        depth[wall] = distance / forward_here
        return depth.astype(np.float32)

    def _foot(self, x: float, z: float) -> np.ndarray:
        """Optical-frame point of the ground point at level ``(x, z)``, ndarray[3]."""
        c, s, hc = math.cos(self.pitch), math.sin(self.pitch), self.camera_height
        return np.array([x, hc * c - z * s, hc * s + z * c])

    def _level_z(self, camera_z: float) -> float:
        """Level distance of the ground point whose camera depth is ``camera_z``."""
        return (camera_z - self.camera_height * math.sin(self.pitch)) / math.cos(self.pitch)

    # -- objects --------------------------------------------------------------------------
    def _objects(self, rng: np.random.Generator, floor_row: float) -> list[_Object]:
        cfg, cam = self.cfg, self.camera
        s = cfg.height / 256.0
        down, forward = self._level_rows(np.array([floor_row]))
        z_floor = float(self.camera_height * forward[0] / down[0]) if down[0] > 1e-9 else 1e9
        counters: dict[int, int] = {}
        objects = []
        boxes: list[tuple[float, float, float, float]] = []  # pixel boxes at frame 0
        for _ in range(int(rng.integers(cfg.min_things, cfg.max_things + 1))):
            cat = int(rng.choice([PERSON, CAR, BOX, BALL]))
            appearance = int(rng.integers(2**62))
            canvas, _ = _draw(cat, np.random.default_rng(appearance), _REF_PX)
            ext = _extent(canvas.mask)  # silhouette (height, width) at _REF_PX
            key_m = float(rng.uniform(*_METRES[cat]))
            draw_m = key_m * _REF_PX / ext[_KEY_AXIS[cat]]
            height_m, width_m = (e * draw_m / _REF_PX for e in ext)
            depth_m = {PERSON: 0.3, CAR: float(rng.uniform(1.7, 1.9))}.get(cat, width_m)
            size_m = (width_m, height_m, depth_m) if cat != CAR else (depth_m, height_m, width_m)
            # Distance: the drawing size synthetic.py would give it, at 0.42..1.05 scale.
            lo, hi = _PIXELS[cat]
            px = rng.uniform(lo, hi) * rng.uniform(0.42, 1.05) * s
            near = self._level_z(cam.fy * draw_m / (hi * 1.1 * s))
            far = min(self._level_z(cam.fy * draw_m / (lo * 0.42 * s)), z_floor)
            z0 = float(np.clip(self._level_z(cam.fy * draw_m / px), near, max(far, near)))
            foot_z = self._foot(0.0, z0)[2]
            vx = vz = 0.0
            still = rng.random() < {PERSON: 0.25, CAR: 0.3, BOX: 0.85, BALL: 0.4}[cat]
            if not still:
                if cat == CAR:
                    vx = float(rng.uniform(2.0, 9.0)) * (-1.0 if _faces_left(canvas) else 1.0)
                elif cat == BOX:
                    vx = float(rng.uniform(0.3, 0.8) * rng.choice([-1.0, 1.0]))
                else:
                    speed = rng.uniform(0.8, 1.7) if cat == PERSON else rng.uniform(0.5, 3.0)
                    heading = rng.uniform(0.0, 2.0 * math.pi)
                    vx, vz = float(speed * math.cos(heading)), float(speed * math.sin(heading))
                    vz = float(np.clip(vz, (near - z0) / _PLAN_S, (far - z0) / _PLAN_S))
            entering = vx != 0.0 and rng.random() < 0.35
            # Start where it overlaps earlier things little (as single scenes are placed);
            # paths cross later.
            px_h, px_w = (e * cam.fy * draw_m / foot_z / _REF_PX for e in ext)
            v0 = float(cam.project(self._foot(0.0, z0))[1])
            for _attempt in range(6):
                if entering:  # from the side it moves away from
                    u0 = cam.width * (rng.uniform(-0.35, -0.1) if vx > 0 else
                                      rng.uniform(1.1, 1.35))
                else:
                    u0 = rng.uniform(-0.05, 1.05) * cam.width
                box = (u0 - px_w / 2, v0 - px_h, u0 + px_w / 2, v0)
                if _max_overlap(box, boxes) <= self.builder.cfg.max_overlap:
                    break
            boxes.append(box)
            x0 = float((u0 - cam.cx) * foot_z / cam.fx)
            counters[cat] = counters.get(cat, 0) + 1
            objects.append(_Object(cat * cfg.label_divisor + counters[cat], cat, appearance,
                                   draw_m, tuple(float(v) for v in size_m), x0, z0, vx, vz))
        return objects

    # -- frames ---------------------------------------------------------------------------
    def frame(self, index: int) -> SequenceFrame:
        """Render frame ``index`` (any order; each frame is a pure function of the seed)."""
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        cfg, cam, b = self.cfg, self.camera, self.builder
        t = index / cfg.rate
        image = self.background.copy()
        drawn: list[tuple[_Thing, _Object, float]] = []
        feet = {}
        for obj in self.objects:
            foot = self._foot(obj.x0 + obj.vx * t, obj.z0 + obj.vz * t)
            feet[obj.id] = foot
            if foot[2] < _NEAR_M:
                continue
            size_px = cam.fy * obj.draw_m / foot[2]
            u, v = cam.project(foot)
            reach = 1.2 * size_px + 4  # no drawing is wider than 1.2x its size parameter
            if size_px < 4 or u + reach < 0 or u - reach > cam.width or v - reach > cam.height:
                continue
            canvas, feet_x = obj.draw(size_px)
            ph = canvas.mask.shape[0]
            half = _SHADOW[obj.category_id] * (size_px if obj.category_id == PERSON
                                               else canvas.mask.shape[1])
            thing = _Thing(obj.category_id, int(round(u - feet_x)), int(round(v - ph)), canvas,
                           (float(u), float(v), half))
            drawn.append((thing, obj, float(foot[2])))
        drawn.sort(key=lambda d: -d[2])  # painter's order: farther first
        index_map, kept = b._visible([d[0] for d in drawn])
        by_thing = {id(d[0]): d for d in drawn}
        b._shadows(image, kept)
        ids = self.stuff.astype(np.int32) * cfg.label_divisor
        depth = self.stuff_depth.copy()
        positions: dict[int, np.ndarray] = {}
        for k, thing in enumerate(kept):
            sl, psl = b._clip(thing)
            cv2.copyTo(thing.canvas.col[psl], thing.canvas.mask[psl], image[sl])
            _, obj, z = by_thing[id(thing)]
            mask = index_map == k
            ids[mask] = obj.id
            depth[mask] = z
            rows, cols = np.nonzero(mask)
            points = cam.backproject(cols, rows, depth[rows, cols])
            positions[obj.id] = np.median(points, axis=0)
        rng = np.random.default_rng([*self.frame_seed, index])
        image = _sensor(image, self.exposure, rng, cfg.noise_sigma)
        result = PanopticResult.from_ids(ids, synthetic(), cfg.label_divisor)
        objects = [ObjectState(o.id, o.category_id, o.size_m, feet[o.id], o.id in positions,
                               positions.get(o.id)) for o in self.objects]
        return SequenceFrame(self.video_id, index, t, image, result, depth, cam, objects,
                             self.camera_height, self.pitch)


def generate_sequence(
    seed: int, video: int, frames: int, config: SequenceConfig | None = None
) -> Iterator[SequenceFrame]:
    """The frames of sequence ``video`` of ``seed``, in order, rendered one at a time.

    Args:
        seed: data set seed (>= 0).
        video: sequence index (>= 0); the sequence is a pure function of ``(seed, video)``
            and ``config``.
        frames: number of frames (>= 1).
        config: sizes, rate and densities; default :class:`SequenceConfig`.
    """
    config = config or SequenceConfig()
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    renderer = _SequenceRenderer(sequence_rng(seed, video), config, video_name(seed, video),
                                 (int(seed), int(video), 0xF7))
    for k in range(frames):
        yield renderer.frame(k)


# -- files --------------------------------------------------------------------------------
def frame_file_name(video_id: str, frame_index: int) -> str:
    """``<video>/<frame:06d>.png``, the name of a frame's files in every folder."""
    return f"{video_id}/{frame_index:06d}.png"


def write_sequence_dataset(
    out_dir: str | Path,
    sequences: int,
    frames: int,
    seed: int = 0,
    config: SequenceConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``sequences`` sequences of ``frames`` frames as a video panoptic data set.

    Layout: ``panoptic.json`` (COCO panoptic; images and annotations carry ``video_id``,
    ``frame_index``, ``stamp`` seconds; images also ``camera_height_m`` and
    ``camera_pitch_rad``; thing segments ``position_m`` and ``size_m``),
    ``images/``, ``panoptic/`` and ``depth/`` (16-bit PNG, millimetres, 0 = none), each as
    ``<video>/<frame:06d>.png``, and ``camera_info/<video>.yaml``. Image ids are 1.. in
    writing order.

    Args:
        progress: called with the number of frames written so far, after each frame.

    Returns:
        Path of the JSON.
    """
    config = config or SequenceConfig()
    if sequences < 0 or frames < 1:
        raise ValueError(f"expected sequences >= 0 and frames >= 1, got {sequences}, {frames}")
    out = Path(out_dir)
    images, annotations = [], []
    for video in range(sequences):
        for frame in generate_sequence(seed, video, frames, config):
            name = frame_file_name(frame.video_id, frame.frame_index)
            write_image(out / "images" / name, frame.image)
            write_panoptic_png(out / "panoptic" / name, frame.result.ids)
            write_depth_png(out / "depth" / name, frame.depth)
            if frame.frame_index == 0:
                frame.camera.write(out / "camera_info" / f"{frame.video_id}.yaml")
            common = {"video_id": frame.video_id, "frame_index": frame.frame_index,
                      "stamp": round(frame.stamp, 6), "file_name": name}
            image_id = len(images) + 1
            images.append({"id": image_id, **common, "height": config.height,
                           "width": config.width, "camera_height_m": frame.camera_height_m,
                           "camera_pitch_rad": frame.pitch_rad})
            annotations.append({"image_id": image_id, **common,
                                "segments_info": frame.segments_info()})
            if progress is not None:
                progress(len(images))
    json_path = out / "panoptic.json"
    out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"images": images, "annotations": annotations,
                                     "categories": synthetic().to_coco()}))
    return json_path


def write_depth_png(path: str | Path, depth: np.ndarray) -> None:
    """Write ndarray[H, W] float metres (NaN = none) as a 16-bit PNG of millimetres."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), depth_to_millimetres(depth)):
        raise UserError(f"cannot write {path}")


def read_depth_png(path: str | Path) -> np.ndarray:
    """Read a 16-bit millimetre depth PNG as ndarray[H, W] float32 metres, NaN = none."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise UserError(f"cannot read depth PNG {path}")
    if img.ndim != 2 or img.dtype != np.uint16:
        raise UserError(f"{path}: expected a 16-bit single-channel PNG, got {img.shape} "
                        f"{img.dtype}")
    return depth_from_millimetres(img)


class VideoPanopticDataset:
    """A video panoptic data set on disk, as :func:`write_sequence_dataset` writes it.

    Args:
        root: the folder holding ``panoptic.json``, ``images/``, ``panoptic/``, ``depth/``
            and ``camera_info/``.
        label_set: categories; default: the JSON's.
        label_divisor: the divisor of the data set's segment ids.

    Frames come with the data set's own segment ids (persistent across a video), not the
    per-frame renumbering of :meth:`PanopticResult.from_coco`.
    """

    def __init__(self, root: str | Path, label_set: LabelSet | None = None,
                 label_divisor: int = DEFAULT_LABEL_DIVISOR) -> None:
        self.root = Path(root)
        self.label_divisor = label_divisor
        data = load_json(self.root / "panoptic.json", "video panoptic JSON")
        self.label_set = label_set or LabelSet.from_coco(data["categories"], name="synthetic")
        images = {im["id"]: im for im in data.get("images", [])}
        self._frames: dict[str, list[dict]] = {}
        for ann in data.get("annotations", []):
            try:
                info = {**images.get(ann["image_id"], {}), **ann}
                self._frames.setdefault(str(info["video_id"]), []).append(info)
                int(info["frame_index"]), info["file_name"]  # noqa: B018 - presence check
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{self.root / 'panoptic.json'}: an annotation lacks "
                                "image_id/video_id/frame_index/file_name") from None
        for entries in self._frames.values():
            entries.sort(key=lambda e: int(e["frame_index"]))

    @property
    def video_ids(self) -> list[str]:
        """The videos, in file order."""
        return list(self._frames)

    def __len__(self) -> int:
        """Number of frames over all videos."""
        return sum(len(v) for v in self._frames.values())

    def num_frames(self, video_id: str) -> int:
        """Number of frames of a video."""
        return len(self._entries(video_id))

    def camera(self, video_id: str) -> CameraCalibration:
        """The calibration of a video."""
        return CameraCalibration.read(self.root / "camera_info" / f"{video_id}.yaml")

    def annotation(self, video_id: str, frame_index: int) -> dict:
        """The annotation of one frame (``segments_info`` with ``position_m``/``size_m``)."""
        entries = self._entries(video_id)
        if not 0 <= frame_index < len(entries):
            raise UserError(f"video {video_id!r} has no frame {frame_index}")
        return entries[frame_index]

    def frame(self, video_id: str, frame_index: int,
              camera: CameraCalibration | None = None) -> SequenceFrame:
        """Load one frame (``objects`` lists the visible things with their metric data)."""
        ann = self.annotation(video_id, frame_index)
        name = ann["file_name"]
        ids = read_panoptic_png(self.root / "panoptic" / name)
        result = PanopticResult.from_ids(ids, self.label_set, self.label_divisor)
        objects = [
            ObjectState(int(s["id"]), int(s["category_id"]), tuple(s["size_m"]),
                        np.full(3, np.nan), True, np.asarray(s["position_m"], np.float64))
            for s in ann["segments_info"] if "position_m" in s
        ]
        return SequenceFrame(
            video_id, int(ann["frame_index"]), float(ann.get("stamp", 0.0)),
            read_image(self.root / "images" / name), result,
            read_depth_png(self.root / "depth" / name),
            camera or self.camera(video_id), objects,
            float(ann.get("camera_height_m", "nan")), float(ann.get("camera_pitch_rad", "nan")))

    def frames(self, video_id: str) -> Iterator[SequenceFrame]:
        """The frames of a video in order."""
        camera = self.camera(video_id)
        for k in range(self.num_frames(video_id)):
            yield self.frame(video_id, k, camera)

    def _entries(self, video_id: str) -> list[dict]:
        try:
            return self._frames[video_id]
        except KeyError:
            raise UserError(f"no video {video_id!r} in {self.root}") from None
