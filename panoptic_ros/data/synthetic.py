"""Synthetic panoptic scenes with exact ground truth, generated with numpy and OpenCV.

A scene is an outdoor, yard, shore or indoor layout of the five stuff classes of
:func:`panoptic_ros.categories.synthetic` (sky, ground, wall, grass, water) as textured regions
with irregular borders, with 0..12 things (person, car, box, ball) standing on the ground at
perspective-consistent sizes, drawn far to near so that nearer things occlude farther ones.
Distractor clutter (stones, debris, cables, stains, birds) is texture on the stuff regions and
never a thing. Instance masks are the *visible* parts of the things; a thing whose visible part
is too small is left out of the scene altogether (not drawn), so the image never shows an
unlabelled object.

Every random choice comes from one :class:`numpy.random.Generator`, so a scene is a pure
function of its seed: :func:`scene_rng` ``(seed, image_id)`` gives the generator of an image of
a dataset, independent of how many images the dataset has.

Typical use::

    scene = generate_scene(scene_rng(seed=0, image_id=7), SceneConfig(height=256, width=320))
    scene.image    # ndarray[H, W, 3] uint8 RGB
    scene.result   # PanopticResult, ids = category * 1000 + instance
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from panoptic_ros.categories import DEFAULT_LABEL_DIVISOR, LabelSet, synthetic
from panoptic_ros.data.coco_panoptic import CocoPanopticWriter
from panoptic_ros.result import PanopticResult

# Dataset category ids of the synthetic label set (see categories.synthetic()).
PERSON, CAR, BOX, BALL = 1, 2, 3, 4
SKY, GROUND, WALL, GRASS, WATER = 11, 12, 13, 14, 15

_REF_HEIGHT = 256.0  # object sizes below are in pixels at this image height


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are generated.

    Attributes:
        height: image height in pixels (>= 32).
        width: image width in pixels (>= 32).
        min_things: fewest things placed in a scene (before occlusion culling).
        max_things: most things placed in a scene (< label_divisor).
        min_thing_size: smallest side of a thing's full silhouette, pixels.
        min_visible_area: a thing whose visible area is smaller (pixels) is left out.
        min_visible_fraction: a thing showing less than this fraction of its in-image
            silhouette is left out.
        max_overlap: a new thing is placed elsewhere when its box overlaps an earlier box by
            more than this fraction of the smaller box (moderates occlusion).
        max_clutter: most distractor items per scene.
        noise_sigma: standard deviation of the sensor noise added to the image, 0..255 units.
        label_divisor: ``ids = category * label_divisor + instance``.
    """

    height: int = 256
    width: int = 320
    min_things: int = 0
    max_things: int = 12
    min_thing_size: int = 12
    min_visible_area: int = 80
    min_visible_fraction: float = 0.3
    max_overlap: float = 0.55
    max_clutter: int = 14
    noise_sigma: float = 2.5
    label_divisor: int = DEFAULT_LABEL_DIVISOR

    def __post_init__(self) -> None:
        if self.height < 32 or self.width < 32:
            raise ValueError(
                f"scene size must be at least 32x32, got {self.height}x{self.width}"
            )
        if not 0 <= self.min_things <= self.max_things < self.label_divisor:
            raise ValueError(
                "expected 0 <= min_things <= max_things < label_divisor, got "
                f"{self.min_things}, {self.max_things}, {self.label_divisor}"
            )
        if self.min_thing_size < 1 or self.min_visible_area < 1:
            raise ValueError("min_thing_size and min_visible_area must be >= 1")
        if not 0.0 <= self.min_visible_fraction <= 1.0 or not 0.0 < self.max_overlap <= 1.0:
            raise ValueError("min_visible_fraction must be in 0..1 and max_overlap in (0, 1]")
        if self.max_clutter < 0 or self.noise_sigma < 0:
            raise ValueError("max_clutter and noise_sigma must be >= 0")


@dataclass
class SyntheticScene:
    """One generated scene.

    Attributes:
        image: ndarray[H, W, 3] uint8 RGB.
        result: the ground truth; ``ids`` ndarray[H, W] int32 ``category * label_divisor +
            instance`` (things numbered 1.. per category), one segment per stuff class present
            and per visible thing, no void.
    """

    image: np.ndarray
    result: PanopticResult


def scene_rng(seed: int, image_id: int) -> np.random.Generator:
    """The random generator of image ``image_id`` of a dataset generated with ``seed``."""
    if seed < 0 or image_id < 0:
        raise ValueError(f"seed and image_id must be >= 0, got {seed} and {image_id}")
    return np.random.default_rng([int(seed), int(image_id)])


def generate_scene(
    rng: np.random.Generator | int, config: SceneConfig | None = None
) -> SyntheticScene:
    """Generate one scene in memory.

    Args:
        rng: the random generator (consumed), or an integer seed.
        config: sizes and densities; default :class:`SceneConfig`.

    Returns:
        The image and its ground truth, a pure function of ``rng``'s state and ``config``.
    """
    config = config or SceneConfig()
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    return _SceneBuilder(rng, config).build()


class SceneGenerator:
    """An endless, reproducible stream of scenes (the demo camera's source).

    Args:
        config: scene size and densities.
        seed: scene ``k`` of the stream is ``generate_scene(scene_rng(seed, start_id + k))``.
        start_id: index of the first scene.
    """

    def __init__(self, config: SceneConfig | None = None, seed: int = 0, start_id: int = 0):
        self.config = config or SceneConfig()
        self.seed = int(seed)
        self.next_id = int(start_id)
        scene_rng(self.seed, self.next_id)  # validates both

    @property
    def label_set(self) -> LabelSet:
        """The categories of the generated ground truth."""
        return synthetic()

    def scene(self, image_id: int) -> SyntheticScene:
        """Scene number ``image_id`` of this seed (does not move the stream)."""
        return generate_scene(scene_rng(self.seed, image_id), self.config)

    def __iter__(self) -> SceneGenerator:
        return self

    def __next__(self) -> SyntheticScene:
        scene = self.scene(self.next_id)
        self.next_id += 1
        return scene


def write_synthetic_dataset(
    out_dir: str | Path,
    count: int,
    seed: int = 0,
    config: SceneConfig | None = None,
    start_id: int = 1,
    image_suffix: str = ".jpg",
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``count`` scenes as a COCO panoptic dataset.

    Layout: ``out_dir/images/<id:012d><suffix>``, ``out_dir/panoptic/<id:012d>.png`` and
    ``out_dir/panoptic.json`` with the :func:`~panoptic_ros.categories.synthetic` categories.
    Image ids are ``start_id .. start_id + count - 1``; image ``k`` is generated from
    :func:`scene_rng` ``(seed, k)``, so the same seed always writes the same bytes.

    Args:
        progress: called with the number of images written so far, after each image.

    Returns:
        Path of the JSON.
    """
    config = config or SceneConfig()
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if image_suffix not in (".jpg", ".png"):
        raise ValueError(f"image_suffix must be '.jpg' or '.png', got {image_suffix!r}")
    writer = CocoPanopticWriter(
        out_dir, synthetic(), json_name="panoptic.json", png_dir_name="panoptic",
        image_dir_name="images",
    )
    for k in range(count):
        image_id = start_id + k
        scene = generate_scene(scene_rng(seed, image_id), config)
        writer.add(image_id, scene.result, scene.image, image_suffix=image_suffix)
        if progress is not None:
            progress(k + 1)
    return writer.close()


# -- drawing helpers ------------------------------------------------------------------------
def _lowfreq(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth noise in 0..1, ndarray[h, w] float32, with about ``cells`` (rows, cols) blobs."""
    grid = rng.random((cells[0] + 1, cells[1] + 1), dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _streaks(rng: np.random.Generator, h: int, w: int, gh: int, gw: int) -> np.ndarray:
    """Gaussian noise stretched to ``(h, w)`` from a ``(gh, gw)`` grid (anisotropic grain)."""
    grid = rng.standard_normal((max(gh, 2), max(gw, 2)), dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)


def _curve(
    rng: np.random.Generator, w: int, base: float, amp: float, knots: int, rough: float
) -> np.ndarray:
    """A noisy boundary line: y per column, ndarray[w] float32."""
    grid = rng.uniform(-amp, amp, size=(1, knots)).astype(np.float32)
    y = cv2.resize(grid, (w, 1), interpolation=cv2.INTER_CUBIC)[0] + base
    if rough > 0:
        fine = rng.standard_normal(w).astype(np.float32) * rough
        y += np.convolve(fine, np.ones(3, np.float32) / 3, mode="same")
    return y


def _jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float) -> np.ndarray:
    """A colour with each channel scaled by ``1 +- amount``, float32[3]."""
    return np.asarray(rgb, np.float32) * rng.uniform(1 - amount, 1 + amount, 3).astype(np.float32)


def _random_color(rng: np.random.Generator, lo: float = 30, hi: float = 235) -> np.ndarray:
    """A saturated random colour via HSV, float32[3] RGB."""
    hsv = np.array(
        [[[rng.integers(0, 180), rng.integers(120, 256), rng.integers(90, 256)]]], np.uint8
    )
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    return np.clip(rgb, lo, hi)


def _tup(c: np.ndarray | Sequence[float]) -> tuple[float, float, float]:
    return tuple(float(v) for v in c)  # type: ignore[return-value]


def _pts(points: Sequence[tuple[float, float]]) -> np.ndarray:
    return np.round(np.asarray(points, np.float64)).astype(np.int32)


class _Canvas:
    """A thing's local patch: colour (float32 RGB) and silhouette mask drawn together."""

    def __init__(self, h: int, w: int) -> None:
        self.col = np.zeros((h, w, 3), np.float32)
        self.mask = np.zeros((h, w), np.uint8)

    def poly(self, points, color, body: bool = True) -> None:
        p = _pts(points)
        cv2.fillPoly(self.col, [p], _tup(color))
        if body:
            cv2.fillPoly(self.mask, [p], 1)

    def circle(self, center, radius: float, color, body: bool = True) -> None:
        c, r = tuple(int(round(v)) for v in center), max(int(round(radius)), 1)
        cv2.circle(self.col, c, r, _tup(color), -1)
        if body:
            cv2.circle(self.mask, c, r, 1, -1)

    def ellipse(self, center, axes, angle: float, color, body: bool = True) -> None:
        c = tuple(int(round(v)) for v in center)
        a = tuple(max(int(round(v)), 1) for v in axes)
        cv2.ellipse(self.col, c, a, angle, 0, 360, _tup(color), -1)
        if body:
            cv2.ellipse(self.mask, c, a, angle, 0, 360, 1, -1)

    def line(self, p, q, color, thickness: float, body: bool = True) -> None:
        p, q = tuple(int(round(v)) for v in p), tuple(int(round(v)) for v in q)
        t = max(int(round(thickness)), 1)
        cv2.line(self.col, p, q, _tup(color), t)
        if body:
            cv2.line(self.mask, p, q, 1, t)

    def shade(self, rng: np.random.Generator, top: float, bottom: float, grain: float) -> None:
        """Vertical light falloff and surface grain over the whole patch."""
        h, w = self.mask.shape
        ramp = np.linspace(top, bottom, h, dtype=np.float32)[:, None, None]
        grain_map = (rng.random((h, w, 1), dtype=np.float32) - np.float32(0.5)) * (3.46 * grain)
        self.col *= ramp
        self.col += grain_map


@dataclass
class _Thing:
    category_id: int
    x0: int  # patch's top-left corner in image coordinates
    y0: int
    canvas: _Canvas
    foot: tuple[float, float, float]  # shadow: centre x, ground y, half width


# -- things -------------------------------------------------------------------------------
_SKIN = [(241, 194, 160), (224, 172, 125), (198, 134, 90), (141, 85, 54), (92, 58, 40)]
_HAIR = [(30, 22, 18), (70, 45, 25), (140, 100, 50), (200, 170, 110), (120, 120, 120)]


def _draw_person(rng: np.random.Generator, h: float) -> tuple[_Canvas, float]:
    """A standing/walking person of height ``h``; returns the canvas and the feet x."""
    w = 0.62 * h
    cv = _Canvas(int(h) + 3, int(w) + 3)
    cx = w / 2 + rng.uniform(-0.03, 0.03) * h
    skin = _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 0.06)
    shirt = _random_color(rng)
    trousers = _jitter(rng, [(40, 50, 90), (30, 30, 35), (90, 80, 60), (60, 70, 60)][
        rng.integers(4)], 0.25) if rng.random() < 0.8 else _random_color(rng)
    shoes = _jitter(rng, (35, 30, 28), 0.3)
    hip_y, shoulder_y = 0.53 * h, 0.2 * h
    leg_t = 0.085 * h
    stride = rng.uniform(0.0, 0.14) * h
    for side in (-1, 1):
        hip = (cx + side * 0.055 * h, hip_y)
        foot = (cx + side * stride + rng.uniform(-0.02, 0.02) * h, h - 0.04 * h)
        cv.line(hip, foot, trousers, leg_t)
        cv.ellipse((foot[0] + side * 0.02 * h, foot[1]), (0.05 * h, 0.025 * h), 0, shoes)
    half_sh, half_hip = rng.uniform(0.11, 0.14) * h, rng.uniform(0.09, 0.11) * h
    torso = [(cx - half_sh, shoulder_y), (cx + half_sh, shoulder_y),
             (cx + half_hip, hip_y + 0.03 * h), (cx - half_hip, hip_y + 0.03 * h)]
    cv.poly(torso, shirt)
    arm_len, arm_t = 0.3 * h, 0.06 * h
    for side in (-1, 1):
        angle = np.deg2rad(rng.choice([rng.uniform(5, 25), rng.uniform(30, 70),
                                       rng.uniform(120, 160)], p=[0.7, 0.2, 0.1]))
        sh = (cx + side * (half_sh - 0.02 * h), shoulder_y + 0.03 * h)
        hand = (sh[0] + side * np.sin(angle) * arm_len, sh[1] + np.cos(angle) * arm_len)
        cv.line(sh, hand, shirt, arm_t)
        cv.circle(hand, 0.035 * h, skin)
    cv.line((cx, shoulder_y), (cx, 0.12 * h), skin, 0.06 * h)  # neck
    head_r = 0.085 * h
    head = (cx, 0.1 * h)
    cv.circle(head, head_r, skin)
    hair = _jitter(rng, _HAIR[rng.integers(len(_HAIR))], 0.15)
    cv.ellipse((cx, head[1] - 0.35 * head_r), (head_r * 1.02, head_r * 0.7), 0, hair)
    if rng.random() < 0.3:  # a bag or a belt: a detail inside the silhouette
        cv.line((cx - half_hip, hip_y), (cx + half_hip, hip_y), shoes, 0.02 * h, body=False)
    cv.shade(rng, 1.1, 0.85, 5.0)
    return cv, cx


def _draw_car(rng: np.random.Generator, length: float) -> _Canvas:
    """A car in side view, ``length`` pixels long, facing left or right."""
    w = length
    h = w * rng.uniform(0.38, 0.5)
    cv = _Canvas(int(h) + 3, int(w) + 3)
    body = _random_color(rng, 25, 230) if rng.random() < 0.7 else _jitter(
        rng, [(220, 220, 220), (30, 30, 35), (150, 150, 155)][rng.integers(3)], 0.08)
    roof = rng.uniform(0.0, 0.1) * h
    belt = rng.uniform(0.4, 0.5) * h
    style = rng.integers(3)  # 0 sedan, 1 hatchback, 2 van
    if style == 0:
        cabin = [(0.2 * w, belt), (0.33 * w, roof), (0.68 * w, roof), (0.82 * w, belt)]
    elif style == 1:
        cabin = [(0.14 * w, belt), (0.3 * w, roof), (0.86 * w, roof), (0.9 * w, belt)]
    else:
        cabin = [(0.1 * w, belt), (0.22 * w, roof), (0.97 * w, roof), (0.97 * w, belt)]
    bottom = 0.8 * h
    shell = [(0.01 * w, bottom), (0.0, 0.62 * h), (0.04 * w, belt + 0.02 * h),
             cabin[0], cabin[1], cabin[2], cabin[3],
             (0.97 * w, belt + 0.03 * h), (w - 1, 0.62 * h), (0.99 * w, bottom)]
    cv.poly(shell, body)
    glass = _jitter(rng, (70, 90, 110), 0.2)
    inset = 0.08 * h
    gx0, gx1 = cabin[0][0] + inset * 1.2, cabin[3][0] - inset * 1.2
    top_l, top_r = cabin[1][0] + inset * 0.6, cabin[2][0] - inset * 0.6
    mid_b = (gx0 + gx1) / 2
    mid_t = (top_l + top_r) / 2
    for left, right in (((gx0, top_l), (mid_b - 0.02 * w, mid_t - 0.02 * w)),
                        ((mid_b + 0.02 * w, mid_t + 0.02 * w), (gx1, top_r))):
        cv.poly([(left[0], belt - 0.02 * h), (left[1], roof + inset),
                 (right[1], roof + inset), (right[0], belt - 0.02 * h)], glass, body=False)
    dark = body * 0.55
    cv.line((mid_b, belt), (mid_b - 0.01 * w, bottom - 0.05 * h), dark, max(1.0, 0.012 * w),
            body=False)
    cv.line((0.03 * w, 0.6 * h), (0.97 * w, 0.6 * h), body * 1.2, max(1.0, 0.02 * h),
            body=False)
    cv.poly([(0.005 * w, 0.55 * h), (0.05 * w, 0.55 * h), (0.05 * w, 0.62 * h),
             (0.005 * w, 0.62 * h)], (250, 240, 190), body=False)
    cv.poly([(0.95 * w, 0.55 * h), (0.995 * w, 0.55 * h), (0.995 * w, 0.62 * h),
             (0.95 * w, 0.62 * h)], (200, 30, 30), body=False)
    r = 0.19 * h
    for x in (0.2 * w, 0.8 * w):
        cv.circle((x, h - r - 1), r, (25, 25, 28))
        cv.circle((x, h - r - 1), r * 0.55, _jitter(rng, (170, 170, 175), 0.1), body=False)
        cv.circle((x, h - r - 1), r * 0.18, (60, 60, 65), body=False)
    cv.shade(rng, 1.15, 0.8, 3.0)
    if rng.random() < 0.5:
        cv.col, cv.mask = cv.col[:, ::-1].copy(), cv.mask[:, ::-1].copy()
    return cv


def _draw_box(rng: np.random.Generator, side: float) -> _Canvas:
    """A crate or carton in oblique view with front, top and side faces."""
    fw = side
    fh = side * rng.uniform(0.7, 1.25)
    d = side * rng.uniform(0.22, 0.38)
    cv = _Canvas(int(fh + d) + 3, int(fw + d) + 3)
    kind = rng.integers(3)  # 0 cardboard, 1 wooden crate, 2 painted/plastic
    if kind == 0:
        base = _jitter(rng, (190, 145, 95), 0.12)
    elif kind == 1:
        base = _jitter(rng, (160, 115, 70), 0.15)
    else:
        base = _random_color(rng, 40, 220)
    front = [(0, d), (fw, d), (fw, d + fh), (0, d + fh)]
    top = [(0, d), (d, 0), (fw + d, 0), (fw, d)]
    right = [(fw, d), (fw + d, 0), (fw + d, fh), (fw, d + fh)]
    cv.poly(front, base)
    cv.poly(top, base * 1.2)
    cv.poly(right, base * 0.7)
    edge = base * 0.45
    t = max(1.0, side / 40)
    for a, b in ((front[0], front[1]), (front[1], front[2]), (top[1], top[2]), (top[2], right[2]),
                 (front[0], top[1]), (front[1], top[2])):
        cv.line(a, b, edge, t, body=False)
    if kind == 0:  # packing tape across the top and down the front
        tape = _jitter(rng, (215, 185, 140), 0.05)
        tw = max(2.0, 0.12 * fw)
        cv.line((fw / 2 + d / 2, 0.5), (fw / 2, d), tape, tw, body=False)
        cv.line((fw / 2, d), (fw / 2, d + 0.35 * fh), tape, tw, body=False)
    elif kind == 1:  # planks
        for k in range(1, 4):
            y = d + fh * k / 4
            cv.line((0, y), (fw, y), edge, t, body=False)
            cv.line((fw, y - d * 0), (fw + d, y - d), edge * 1.1, t, body=False)
        cv.line((0, d), (fw, d + fh), edge, t * 1.5, body=False)
    else:  # a label
        cv.poly([(0.25 * fw, d + 0.3 * fh), (0.75 * fw, d + 0.3 * fh),
                 (0.75 * fw, d + 0.55 * fh), (0.25 * fw, d + 0.55 * fh)],
                (235, 235, 230), body=False)
    cv.shade(rng, 1.05, 0.9, 5.0)
    if rng.random() < 0.5:
        cv.col, cv.mask = cv.col[:, ::-1].copy(), cv.mask[:, ::-1].copy()
    return cv


def _draw_ball(rng: np.random.Generator, diameter: float) -> _Canvas:
    """A shaded sphere: plain, beach ball, or football pattern."""
    r = diameter / 2
    n = int(np.ceil(diameter)) + 3
    cv = _Canvas(n, n)
    c = (n / 2, n / 2)
    base = _random_color(rng, 40, 240)
    cv.circle(c, r, base)
    kind = rng.integers(3)
    if kind == 1:  # beach ball: coloured sectors
        phase = rng.uniform(0, 360)
        for k in range(0, 6, 2):
            col = _random_color(rng, 60, 250) if k else (245, 245, 240)
            cv2.ellipse(cv.col, tuple(int(round(v)) for v in c), (int(r), int(r)), 0,
                        phase + k * 60, phase + k * 60 + 60, _tup(col), -1)
    elif kind == 2:  # football: white with dark patches
        cv.circle(c, r, (240, 240, 235), body=False)
        for k in range(5):
            a = np.deg2rad(k * 72 + rng.uniform(0, 72))
            cv.circle((c[0] + 0.6 * r * np.cos(a), c[1] + 0.6 * r * np.sin(a)), 0.22 * r,
                      (30, 30, 30), body=False)
        cv.circle(c, 0.25 * r, (30, 30, 30), body=False)
    # Sphere shading: bright towards the upper left, dark towards the lower right.
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    lx, ly = c[0] - 0.35 * r, c[1] - 0.4 * r
    dist = np.sqrt((xx - lx) ** 2 + (yy - ly) ** 2) / (1.6 * r)
    light = np.clip(1.25 - 0.75 * dist, 0.35, 1.3)[..., None]
    cv.col *= light
    spec = np.clip(1 - np.sqrt((xx - lx) ** 2 + (yy - ly) ** 2) / (0.28 * r), 0, 1)[..., None]
    cv.col += spec * (255 - cv.col) * 0.8
    cv.col += (rng.random((n, n, 1), dtype=np.float32) - np.float32(0.5)) * 10
    return cv


# -- stuff textures ------------------------------------------------------------------------
# Each texture covers image rows y0..y1 (the band its region spans) at full width; ``grain`` is
# the matching band of the scene's unit-variance grain noise, ndarray[y1 - y0, W] float32.
def _texture_sky(rng, y0: int, y1: int, w: int, grain, horizon: float) -> np.ndarray:
    if rng.random() < 0.2:  # overcast
        top = _jitter(rng, (150, 155, 165), 0.08)
        low = _jitter(rng, (200, 202, 208), 0.05)
        cloudiness = 0.3
    else:
        top = _jitter(rng, (55, 110, 200), 0.15)
        low = _jitter(rng, (170, 200, 235), 0.06)
        cloudiness = rng.uniform(0.0, 0.9)
    h = y1 - y0
    t = np.clip(np.arange(y0, y1, dtype=np.float32) / max(horizon, 1.0), 0, 1)[:, None, None]
    sky = np.broadcast_to(top * (1 - t) + low * t, (h, w, 3)).copy()
    if cloudiness > 0.05:
        clouds = _lowfreq(rng, h, w, (3, 5)) + 0.5 * _lowfreq(rng, h, w, (7, 11))
        alpha = np.clip((clouds - 0.9) * 3.0, 0, 1) * cloudiness
        sky += alpha[..., None] * (np.float32(245) - sky)
    sky += grain[..., None]
    return sky


def _texture_ground(rng, y0: int, y1: int, w: int, grain, floor: float, tiles: bool):
    styles = [(105, 105, 108), (125, 100, 75), (195, 180, 140), (150, 140, 125)]
    base = _jitter(rng, styles[rng.integers(len(styles))], 0.1)
    h = y1 - y0
    mottle = _lowfreq(rng, h, w, (4, 6))[..., None]
    tex = base * (0.85 + 0.3 * mottle) + (grain * np.float32(rng.uniform(4, 12)))[..., None]
    if tiles or rng.random() < 0.25:  # tiles / paving in perspective
        line = _tup(base * 0.6)
        top = max(int(floor), y0)
        n = int(rng.integers(5, 9))
        for k in range(1, n):
            y = top + (y1 - top) * (k / n) ** 1.6 - y0
            cv2.line(tex, (0, int(y)), (w - 1, int(y)), line, 1)
        vx = rng.uniform(0.3, 0.7) * w
        spacing = rng.uniform(0.12, 0.25) * w
        for x in np.arange(vx % spacing - 2 * w, 3 * w, spacing):
            cv2.line(tex, (int(vx + (x - vx) * 0.15), top - y0), (int(x), h - 1), line, 1)
    return tex


def _texture_wall(rng, y0: int, y1: int, w: int, grain, scale: float) -> np.ndarray:
    h = y1 - y0
    kind = rng.integers(3)  # 0 brick, 1 blocks/panels, 2 plaster
    if kind == 2:
        base = _random_color(rng, 120, 230) * 0.35 + _jitter(rng, (190, 185, 175), 0.1) * 0.65
        tex = base * (0.9 + 0.15 * _lowfreq(rng, h, w, (3, 4))[..., None])
        tex += (grain * 3)[..., None]
        seam = _tup(base * 0.8)  # panel seams, so a plain wall never passes for overcast sky
        step = rng.uniform(0.15, 0.3) * w
        for x in np.arange(rng.uniform(0, step), w, step):
            cv2.line(tex, (int(x), 0), (int(x), h - 1), seam, max(1, int(scale)))
        return tex
    if kind == 0:
        base = _jitter(rng, [(165, 75, 55), (150, 95, 70), (190, 160, 110)][rng.integers(3)],
                       0.08)
        bh = max(4, int(rng.uniform(6, 11) * scale))
        bw = int(bh * rng.uniform(2.0, 2.8))
        mortar_col = _jitter(rng, (200, 195, 185), 0.05)
    else:
        base = _jitter(rng, (150, 150, 148), 0.15)
        bh = max(8, int(rng.uniform(18, 40) * scale))
        bw = int(bh * rng.uniform(1.5, 3.0))
        mortar_col = base * 0.7
    yy = np.arange(y0, y1, dtype=np.int32)[:, None]
    xx = np.arange(w, dtype=np.int32)[None, :]
    row = yy // bh
    off = (row % 2) * (bw // 2)
    col = (xx + off) // bw
    table = rng.uniform(0.85, 1.12, size=(y1 // bh + 2, w // bw + 3)).astype(np.float32)
    tex = base * table[row, col][..., None] + (grain * 5)[..., None]
    mortar = ((yy % bh < 1) | ((xx + off) % bw < 1)).astype(np.uint8)
    cv2.copyTo(np.broadcast_to(mortar_col, tex.shape).astype(np.float32), mortar, tex)
    return tex


def _texture_grass(rng, y0: int, y1: int, w: int, grain) -> np.ndarray:
    base = _jitter(rng, [(60, 125, 45), (85, 140, 55), (110, 135, 60)][rng.integers(3)], 0.1)
    h = y1 - y0
    dry = _lowfreq(rng, h, w, (3, 4))[..., None]
    tex = base * (0.8 + 0.35 * dry) + np.float32([25, 5, 0]) * dry
    tex += (_streaks(rng, h, w, h // 6, w) * 14 + grain * 6)[..., None]
    return tex


def _texture_water(rng, y0: int, y1: int, w: int, grain, horizon: float) -> np.ndarray:
    base = _jitter(rng, [(35, 95, 150), (30, 110, 130), (50, 85, 120)][rng.integers(3)], 0.1)
    h = y1 - y0
    ripple = _streaks(rng, h, w, h, max(w // 12, 2))
    y = np.arange(y0, y1, dtype=np.float32)[:, None]
    waves = np.sin(y * rng.uniform(0.5, 1.1) + ripple * 1.5)
    depth = np.clip((y - horizon) / max(y1 - horizon, 1.0), 0, 1)
    tex = base * (1.15 - 0.3 * depth)[..., None] + (waves * 9 + ripple * 8 + grain * 2)[..., None]
    glint = np.clip((ripple - 1.3) * 1.5, 0, 0.7)[..., None]
    return tex + glint * (np.float32(240) - tex)


# -- the scene ----------------------------------------------------------------------------
class _SceneBuilder:
    def __init__(self, rng: np.random.Generator, config: SceneConfig) -> None:
        self.rng = rng
        self.cfg = config
        self.h, self.w = config.height, config.width
        self.s = self.h / _REF_HEIGHT
        # Unit-variance grain shared by all stuff textures (their regions are disjoint).
        self.grain = (rng.random((self.h, self.w), dtype=np.float32) - 0.5) * np.float32(3.46)

    def build(self) -> SyntheticScene:
        stuff, floor_y, horizon = self._layout()
        image = self._paint_stuff(stuff, floor_y, horizon)
        self._clutter(image, stuff)
        things = self._place_things(stuff, floor_y)
        index_map, things = self._visible(things)
        self._shadows(image, things)
        divisor = self.cfg.label_divisor
        counters: dict[int, int] = {}
        thing_ids = np.zeros(len(things) + 1, np.int32)  # index -1 (no thing) wraps to the end
        for k, t in enumerate(things):
            sl, psl = self._clip(t)
            cv2.copyTo(t.canvas.col[psl], t.canvas.mask[psl], image[sl])
            counters[t.category_id] = counters.get(t.category_id, 0) + 1
            thing_ids[k] = t.category_id * divisor + counters[t.category_id]
        ids = np.where(index_map >= 0, thing_ids[index_map], stuff.astype(np.int32) * divisor)
        image = self._camera(image)
        result = PanopticResult.from_ids(ids, synthetic(), self.cfg.label_divisor)
        return SyntheticScene(image=image, result=result)

    # layout: stuff category per pixel -------------------------------------------------
    def _layout(self) -> tuple[np.ndarray, float, float]:
        """Stuff map ndarray[H, W] uint8, the floor line (things stand below), the horizon.

        A scene kind, then its pieces in a fixed order (the random draws, and so every seed's
        scene, depend on it): indoor, or sky and ground with a back wall, buildings, a lake or
        a pond, patches of the other ground cover and a low wall in front.
        """
        rng = self.rng
        kind = rng.choice(["open", "yard", "shore", "indoor"], p=[0.3, 0.25, 0.2, 0.25])
        self.kind = str(kind)  # read by the sequence renderer (no random draw)
        if kind == "indoor":
            return self._indoor()
        stuff, sky_line, horizon, base = self._sky_and_ground()
        below = self._rows() >= sky_line[None, :]
        floor = horizon
        if kind == "yard":
            floor = self._back_wall(stuff, sky_line, horizon)
        elif kind == "open" and rng.random() < 0.6:
            self._buildings(stuff, below, horizon)
        if kind == "shore":
            floor = self._lake(stuff, below, horizon)
        elif rng.random() < 0.4:  # a pond
            pond = below & (self._rows() > floor + 0.08 * self.h)
            self._patches(stuff, pond, WATER, (2, 2), 0.25, 0.0)
        self._other_ground_cover(stuff, below, base)
        if rng.random() < 0.25:
            self._front_wall(stuff)
        return stuff, floor, horizon

    def _rows(self) -> np.ndarray:
        """ndarray[H, 1] float32 row coordinates."""
        return np.arange(self.h, dtype=np.float32)[:, None]

    def _indoor(self) -> tuple[np.ndarray, float, float]:
        """A wall over a floor, maybe a window or doorway onto the sky and a planter strip."""
        rng, h, w = self.rng, self.h, self.w
        stuff = np.empty((h, w), np.uint8)
        floor = rng.uniform(0.35, 0.6) * h
        line = _curve(rng, w, floor, 0.02 * h, 3, 0.0) + np.linspace(
            0, rng.uniform(-0.08, 0.08) * h, w, dtype=np.float32)
        on_floor = self._rows() >= line[None, :]
        stuff[:] = WALL
        stuff[on_floor] = GROUND
        if rng.random() < 0.45:  # a window or doorway onto the sky
            x0 = rng.uniform(0.05, 0.6) * w
            x1 = x0 + rng.uniform(0.2, 0.35) * w
            y0 = rng.uniform(0.04, 0.15) * h
            y1 = min(floor - 0.1 * h, y0 + rng.uniform(0.2, 0.4) * h)
            if y1 > y0 + 8:
                stuff[int(y0):int(y1), int(x0):int(x1)] = SKY
        if rng.random() < 0.3:  # an indoor lawn / planter strip
            strip = self._rows() >= line[None, :] + 0.1 * h
            self._patches(stuff, strip, GRASS, (2, 4), 0.35, 0.04)
        return stuff, float(line.mean()), float(floor)

    def _sky_and_ground(self) -> tuple[np.ndarray, np.ndarray, float, int]:
        """Sky over grass or bare ground.

        Returns:
            the stuff map, the sky line ndarray[W] float32, the horizon and the ground's
            category.
        """
        rng, h, w = self.rng, self.h, self.w
        horizon = rng.uniform(0.28, 0.55) * h
        sky_line = _curve(rng, w, horizon, rng.uniform(0.01, 0.08) * h,
                          int(rng.integers(3, 9)), rng.uniform(0, 1.2) * self.s)
        base = GRASS if rng.random() < 0.45 else GROUND
        stuff = np.empty((h, w), np.uint8)
        stuff[:] = SKY
        stuff[self._rows() >= sky_line[None, :]] = base
        return stuff, sky_line, horizon, base

    def _back_wall(self, stuff: np.ndarray, sky_line: np.ndarray, horizon: float) -> float:
        """A wall across the back, on the horizon, with steps in its top; returns the floor."""
        rng, h, w = self.rng, self.h, self.w
        top = horizon - rng.uniform(0.12, 0.3) * h
        steps = _curve(rng, w, top, 0.0, 2, 0.0)
        for _ in range(int(rng.integers(0, 3))):
            x0 = int(rng.uniform(0, 0.8) * w)
            steps[x0:x0 + int(rng.uniform(0.1, 0.4) * w)] -= rng.uniform(0.05, 0.2) * h
        wall_bottom = sky_line + rng.uniform(0.02, 0.08) * h
        yy = self._rows()
        stuff[(yy >= steps[None, :]) & (yy < wall_bottom[None, :])] = WALL
        return float(wall_bottom.mean())

    def _buildings(self, stuff: np.ndarray, below: np.ndarray, horizon: float) -> None:
        """One to three buildings standing on the horizon (in the sky only)."""
        rng, h, w = self.rng, self.h, self.w
        for _ in range(int(rng.integers(1, 4))):
            x0 = int(rng.uniform(-0.1, 0.9) * w)
            x1 = x0 + int(rng.uniform(0.12, 0.4) * w)
            y0 = int(horizon - rng.uniform(0.08, 0.3) * h)
            region = np.zeros((h, w), bool)
            region[max(y0, 0):, max(x0, 0):max(x1, 0)] = True
            stuff[region & ~below] = WALL

    def _lake(self, stuff: np.ndarray, below: np.ndarray, horizon: float) -> float:
        """A lake from the horizon down to a ragged shoreline; returns the floor."""
        rng, h, w = self.rng, self.h, self.w
        shore = _curve(rng, w, horizon + rng.uniform(0.1, 0.3) * h, 0.06 * h, 5,
                       rng.uniform(0.3, 1.5) * self.s)
        stuff[below & (self._rows() < shore[None, :])] = WATER
        return float(np.clip(shore.mean(), horizon, 0.8 * h))

    def _other_ground_cover(self, stuff: np.ndarray, below: np.ndarray, base: int) -> None:
        """Maybe patches of grass on bare ground, or of bare ground on grass (not on water)."""
        rng = self.rng
        other = GROUND if base == GRASS else GRASS
        if rng.random() < 0.6:
            rough = 0.035 if other == GRASS else 0.015
            self._patches(stuff, below & (stuff != WATER), other, (3, 4),
                          rng.uniform(0.2, 0.45), rough)

    def _front_wall(self, stuff: np.ndarray) -> None:
        """A low wall crossing the ground in front."""
        rng, h, w = self.rng, self.h, self.w
        y1 = rng.uniform(0.7, 1.0) * h
        y0 = y1 - rng.uniform(0.06, 0.14) * h
        x0 = rng.uniform(-0.2, 0.6) * w
        x1 = x0 + rng.uniform(0.3, 0.8) * w
        stuff[int(y0):int(y1), max(int(x0), 0):max(int(x1), 0)] = WALL

    def _patches(self, stuff, allowed, category: int, cells, fraction: float, rough: float):
        """Set ``category`` where smooth noise is in its top ``fraction`` inside ``allowed``."""
        h, w = stuff.shape
        field = _lowfreq(self.rng, h, w, cells)
        if rough > 0:  # ragged but connected borders: noise a few pixels in grain
            field += _streaks(self.rng, h, w, h // 4, w // 4) * np.float32(rough)
        thr = np.float32(np.quantile(field[::4, ::4], 1 - fraction))
        stuff[allowed & (field > thr)] = category

    def _paint_stuff(self, stuff: np.ndarray, floor: float, horizon: float) -> np.ndarray:
        rng, w, s = self.rng, self.w, self.s
        image = np.empty((self.h, self.w, 3), np.float32)
        tiles = bool((stuff == WALL).mean() > 0.3)
        makers = {
            SKY: lambda y0, y1, g: _texture_sky(rng, y0, y1, w, g, horizon),
            GROUND: lambda y0, y1, g: _texture_ground(rng, y0, y1, w, g, floor, tiles),
            WALL: lambda y0, y1, g: _texture_wall(rng, y0, y1, w, g, s),
            GRASS: lambda y0, y1, g: _texture_grass(rng, y0, y1, w, g),
            WATER: lambda y0, y1, g: _texture_water(rng, y0, y1, w, g, horizon),
        }
        for cat, make in makers.items():
            mask = (stuff == cat).view(np.uint8)
            rows = np.flatnonzero(mask.any(axis=1))
            if rows.size == 0:
                continue
            y0, y1 = int(rows[0]), int(rows[-1]) + 1
            cv2.copyTo(make(y0, y1, self.grain[y0:y1]), mask[y0:y1], image[y0:y1])
        return image

    def _clutter(self, image: np.ndarray, stuff: np.ndarray) -> None:
        """Distractors drawn on stuff: they stay labelled as the stuff under them."""
        rng, h, w, s = self.rng, self.h, self.w, self.s
        for _ in range(int(rng.integers(0, self.cfg.max_clutter + 1))):
            x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
            cat = int(stuff[int(y), int(x)])
            kind = rng.random()
            if cat in (GROUND, GRASS) and kind < 0.6:  # a stone or debris
                r = rng.uniform(2, 6) * s
                n = int(rng.integers(5, 9))
                ang = np.sort(rng.uniform(0, 2 * np.pi, n))
                rad = r * rng.uniform(0.6, 1.0, n)
                pts = _pts(np.stack([x + rad * np.cos(ang), y + 0.6 * rad * np.sin(ang)], 1))
                col = _jitter(rng, (120, 115, 105), 0.3)
                cv2.fillPoly(image, [pts], _tup(col))
            elif cat == SKY and kind < 0.4:  # a bird
                a = rng.uniform(2, 5) * s
                col = (40, 40, 45)
                cv2.line(image, (int(x - a), int(y - a / 2)), (int(x), int(y)), col, 1)
                cv2.line(image, (int(x), int(y)), (int(x + a), int(y - a / 2)), col, 1)
            elif cat != SKY and kind < 0.75:  # a stain or faded paint mark
                axes = (int(rng.uniform(3, 14) * s) + 1, int(rng.uniform(2, 6) * s) + 1)
                col = image[int(y), int(x)] * np.float32(rng.uniform(0.7, 1.25))
                cv2.ellipse(image, (int(x), int(y)), axes, rng.uniform(0, 180), 0, 360,
                            _tup(col), -1)
            else:  # a cable, crack or painted line
                x2, y2 = x + rng.uniform(-0.4, 0.4) * w, y + rng.uniform(-0.1, 0.1) * h
                col = _jitter(rng, (50, 50, 50), 0.3) if rng.random() < 0.6 else \
                    _random_color(rng)
                cv2.line(image, (int(x), int(y)), (int(x2), int(y2)), _tup(col),
                         int(rng.integers(1, 3)))

    # things -----------------------------------------------------------------------------
    def _place_things(self, stuff: np.ndarray, floor: float) -> list[_Thing]:
        rng, h, w, s, cfg = self.rng, self.h, self.w, self.s, self.cfg
        n = int(rng.integers(cfg.min_things, cfg.max_things + 1))
        floor = float(np.clip(floor, 0.2 * h, 0.85 * h))
        things: list[_Thing] = []
        boxes: list[tuple[float, float, float, float]] = []
        min_side = float(cfg.min_thing_size)
        for _ in range(n):
            cat = int(rng.choice([PERSON, CAR, BOX, BALL]))
            for _attempt in range(6):
                ground_y = rng.uniform(floor + 0.03 * h, 1.08 * h)
                depth = np.clip((ground_y - floor) / (h - floor), 0.0, 1.1)
                scale = (0.42 + 0.6 * depth) * s
                cx = rng.uniform(-0.05, 1.05) * w
                if cat == PERSON:
                    height = max(rng.uniform(85, 125) * scale, min_side / 0.3)
                    canvas, feet_x = _draw_person(rng, height)
                    half = 0.16 * height
                elif cat == CAR:
                    canvas = _draw_car(rng, max(rng.uniform(105, 165) * scale, 2.6 * min_side))
                    feet_x, half = canvas.mask.shape[1] / 2, 0.5 * canvas.mask.shape[1]
                elif cat == BOX:
                    canvas = _draw_box(rng, max(rng.uniform(28, 60) * scale, min_side))
                    feet_x, half = canvas.mask.shape[1] / 2, 0.55 * canvas.mask.shape[1]
                else:
                    canvas = _draw_ball(rng, max(rng.uniform(16, 40) * scale, min_side))
                    feet_x, half = canvas.mask.shape[1] / 2, 0.45 * canvas.mask.shape[1]
                ph, pw = canvas.mask.shape
                x0, y0 = int(round(cx - feet_x)), int(round(ground_y - ph))
                box = (x0, y0, x0 + pw, y0 + ph)
                if _max_overlap(box, boxes) <= cfg.max_overlap:
                    boxes.append(box)
                    things.append(_Thing(cat, x0, y0, canvas, (cx, ground_y, half)))
                    break
        # Painter's order: farther (higher on screen) first.
        things.sort(key=lambda t: t.foot[1])
        return things

    def _clip(self, t: _Thing) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
        ph, pw = t.canvas.mask.shape
        ya, xa = max(t.y0, 0), max(t.x0, 0)
        yb, xb = min(t.y0 + ph, self.h), min(t.x0 + pw, self.w)
        yb, xb = max(yb, ya), max(xb, xa)
        return ((slice(ya, yb), slice(xa, xb)),
                (slice(ya - t.y0, yb - t.y0), slice(xa - t.x0, xb - t.x0)))

    def _paint_index(self, things: list[_Thing]) -> np.ndarray:
        index_map = np.full((self.h, self.w), -1, np.int16)
        for k, t in enumerate(things):
            sl, psl = self._clip(t)
            index_map[sl][t.canvas.mask[psl].astype(bool)] = k
        return index_map

    def _visible(self, things: list[_Thing]) -> tuple[np.ndarray, list[_Thing]]:
        """Drop things whose visible part is too small; the index map of the kept ones."""
        cfg = self.cfg
        index_map = self._paint_index(things)
        if not things:
            return index_map, things
        visible = np.bincount(index_map.reshape(-1) + 1, minlength=len(things) + 1)[1:]
        keep = []
        for k, t in enumerate(things):
            _, psl = self._clip(t)
            full = int(t.canvas.mask[psl].sum())
            if visible[k] >= max(cfg.min_visible_area, cfg.min_visible_fraction * full):
                keep.append(t)
        if len(keep) != len(things):
            index_map = self._paint_index(keep)
        return index_map, keep

    def _shadows(self, image: np.ndarray, things: list[_Thing]) -> None:
        if not things:
            return
        shade = np.ones((self.h, self.w), np.float32)
        for t in things:
            cx, gy, half = t.foot
            cv2.ellipse(shade, (int(cx), int(gy - 1)), (max(int(half), 1),
                        max(int(0.18 * half), 1)), 0, 0, 360, 0.55, -1)
        shade = cv2.GaussianBlur(shade, (0, 0), 1.5 * self.s + 0.5)
        image *= shade[..., None]

    def _camera(self, image: np.ndarray) -> np.ndarray:
        """Exposure, vignetting-like light gradient, colour cast, sensor noise, lens blur."""
        exposure = _exposure(self.rng, self.h, self.w)
        return _sensor(image, exposure, self.rng, self.cfg.noise_sigma)


def _exposure(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Per-pixel gain of a shot: light gradient x exposure x colour cast, ndarray[h, w, 3]."""
    light = 0.85 + 0.3 * _lowfreq(rng, h, w, (1, 2))
    gain = rng.uniform(0.8, 1.15) * _jitter(rng, (1, 1, 1), 0.05)
    return cv2.merge([light * g for g in gain.tolist()])


def _sensor(
    image: np.ndarray, exposure: np.ndarray, rng: np.random.Generator, noise_sigma: float
) -> np.ndarray:
    """The camera's response: ``image`` (float32 RGB, modified) x ``exposure`` + noise, blur.

    Returns:
        ndarray[H, W, 3] uint8 RGB.
    """
    h, w = image.shape[:2]
    cv2.multiply(image, exposure, dst=image)
    if noise_sigma > 0:
        noise = rng.random((h, w), dtype=np.float32) - np.float32(0.5)
        noise *= np.float32(3.46 * noise_sigma)
        cv2.add(image, cv2.merge([noise, noise, noise]), dst=image)
    image = cv2.GaussianBlur(image, (3, 3), 0.6)
    np.maximum(image, 0, out=image)
    return cv2.convertScaleAbs(image)  # rounds and saturates at 255


def _max_overlap(box, boxes) -> float:
    """Largest intersection of ``box`` with one of ``boxes``, as a fraction of the smaller."""
    best = 0.0
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1)
    for b in boxes:
        iw = min(box[2], b[2]) - max(box[0], b[0])
        ih = min(box[3], b[3]) - max(box[1], b[1])
        if iw > 0 and ih > 0:
            other = max((b[2] - b[0]) * (b[3] - b[1]), 1)
            best = max(best, iw * ih / min(area, other))
    return best
