"""Training augmentations that keep image, segments, masks, boxes and semantics consistent.

Geometric transforms act on a :class:`PanopticSample`: the RGB image (resampled bilinearly) and
the panoptic *segment id map* (resampled nearest-neighbour, so ids are never blended). The
training targets (semantic map, instance masks, boxes) are derived from the transformed id map
afterwards by :func:`panoptic_ros.data.dataset.panoptic_targets`, so they cannot disagree: boxes
are recomputed from the masks that survive a crop, and a segment that vanished has no pixels and
so no target. Photometric jitter changes the image only.

Every transform is ``transform(sample, rng) -> sample`` with ``rng`` a
:class:`numpy.random.Generator` (see :func:`as_rng` for seeds and ``torch.Generator``), so a
pipeline is deterministic for a given generator state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import cv2
import numpy as np

DEFAULT_FILL = (124, 116, 104)
"""RGB fill of padded image pixels: the ImageNet mean, which normalises to about 0."""


@dataclass
class PanopticSample:
    """An image with its panoptic ground truth, the unit the transforms work on.

    Attributes:
        image: ndarray[H, W, 3] uint8 RGB.
        segment_ids: ndarray[H, W] int32 segment ids of the COCO panoptic PNG, 0 = void.
        segments_info: COCO ``segments_info`` dicts (``id``, ``category_id``, ``iscrowd``);
            entries whose id no longer occurs in ``segment_ids`` are ignored downstream.
        image_id: the dataset's image id, carried through.
    """

    image: np.ndarray
    segment_ids: np.ndarray
    segments_info: list[dict] = field(default_factory=list)
    image_id: int | str | None = None

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(
                f"image must be ndarray[H, W, 3] uint8, got {self.image.shape} {self.image.dtype}"
            )
        if self.segment_ids.shape != self.image.shape[:2]:
            raise ValueError(
                f"segment_ids shape {self.segment_ids.shape} != image size {self.image.shape[:2]}"
            )
        if self.segment_ids.dtype != np.int32:
            self.segment_ids = self.segment_ids.astype(np.int32)

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.image.shape[1])


class Transform(Protocol):
    """A sample-to-sample augmentation drawing its randomness from ``rng``."""

    def __call__(self, sample: PanopticSample, rng: np.random.Generator) -> PanopticSample:
        """Return the transformed sample (the input is not modified)."""
        ...


def as_rng(rng: np.random.Generator | int | None = None, torch_generator=None):
    """A :class:`numpy.random.Generator` from a generator, a seed, or a ``torch.Generator``.

    Args:
        rng: a numpy generator (returned as is), an integer seed, or None (fresh entropy).
        torch_generator: when given (and ``rng`` is None), one 63-bit seed is drawn from it.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None and torch_generator is not None:
        import torch

        seed = int(torch.randint(0, 2**62, (1,), generator=torch_generator).item())
        return np.random.default_rng(seed)
    return np.random.default_rng(rng)


def resize_sample(sample: PanopticSample, height: int, width: int) -> PanopticSample:
    """Resize to ``height x width``: bilinear (area when shrinking) image, nearest ids."""
    if height < 1 or width < 1:
        raise ValueError(f"target size must be positive, got {height}x{width}")
    if (height, width) == (sample.height, sample.width):
        return replace(sample)
    shrink = height * width < sample.height * sample.width
    image = cv2.resize(
        sample.image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    ids = cv2.resize(sample.segment_ids, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    return replace(sample, image=image, segment_ids=ids)


def crop_sample(
    sample: PanopticSample,
    top: int,
    left: int,
    height: int,
    width: int,
    fill: Sequence[int] = DEFAULT_FILL,
) -> PanopticSample:
    """Cut the window ``[top, top + height) x [left, left + width)``.

    Parts of the window outside the image are padded: image with ``fill``, ids with void.
    """
    if height < 1 or width < 1:
        raise ValueError(f"crop size must be positive, got {height}x{width}")
    image = np.empty((height, width, 3), np.uint8)
    image[:] = np.asarray(fill, np.uint8)
    ids = np.zeros((height, width), np.int32)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, sample.height), min(left + width, sample.width)
    if y1 > y0 and x1 > x0:
        image[y0 - top : y1 - top, x0 - left : x1 - left] = sample.image[y0:y1, x0:x1]
        ids[y0 - top : y1 - top, x0 - left : x1 - left] = sample.segment_ids[y0:y1, x0:x1]
    return replace(sample, image=image, segment_ids=ids)


def hflip_sample(sample: PanopticSample) -> PanopticSample:
    """Mirror left-right."""
    return replace(
        sample,
        image=np.ascontiguousarray(sample.image[:, ::-1]),
        segment_ids=np.ascontiguousarray(sample.segment_ids[:, ::-1]),
    )


@dataclass(frozen=True)
class Compose:
    """Apply transforms in order with one generator."""

    transforms: tuple[Transform, ...]

    def __call__(self, sample: PanopticSample, rng: np.random.Generator) -> PanopticSample:
        """Run every transform on the sample."""
        for t in self.transforms:
            sample = t(sample, rng)
        return sample


@dataclass(frozen=True)
class Resize:
    """Resize to a fixed size (deterministic)."""

    height: int
    width: int

    def __call__(self, sample: PanopticSample, rng: np.random.Generator) -> PanopticSample:
        """Resize the sample."""
        return resize_sample(sample, self.height, self.width)


@dataclass(frozen=True)
class RandomScale:
    """Scale by a factor drawn log-uniformly from ``[min_scale, max_scale]``."""

    min_scale: float = 0.5
    max_scale: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(
                f"expected 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}"
            )

    def __call__(self, sample: PanopticSample, rng: np.random.Generator) -> PanopticSample:
        """Rescale the sample."""
        factor = float(np.exp(rng.uniform(np.log(self.min_scale), np.log(self.max_scale))))
        height = max(int(round(sample.height * factor)), 1)
        width = max(int(round(sample.width * factor)), 1)
        return resize_sample(sample, height, width)


@dataclass(frozen=True)
class RandomCrop:
    """Crop a random ``height x width`` window; a smaller image is padded (fill / void)."""

    height: int
    width: int
    fill: tuple[int, int, int] = DEFAULT_FILL

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"crop size must be positive, got {self.height}x{self.width}")

    def __call__(self, sample: PanopticSample, rng: np.random.Generator) -> PanopticSample:
        """Crop the sample."""
        top = int(rng.integers(0, sample.height - self.height + 1)) if (
            sample.height > self.height) else 0
        left = int(rng.integers(0, sample.width - self.width + 1)) if (
            sample.width > self.width) else 0
        return crop_sample(sample, top, left, self.height, self.width, self.fill)


@dataclass(frozen=True)
class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    p: float = 0.5

    def __call__(self, sample: PanopticSample, rng: np.random.Generator) -> PanopticSample:
        """Maybe flip the sample."""
        return hflip_sample(sample) if rng.random() < self.p else sample


@dataclass(frozen=True)
class PhotometricJitter:
    """Random brightness, contrast, saturation and hue; the image only.

    Factors are drawn uniformly from ``[1 - x, 1 + x]`` for brightness, contrast and saturation;
    the hue shift from ``[-hue, hue]`` of a full turn (``hue <= 0.5``).
    """

    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.03

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")

    def __call__(self, sample: PanopticSample, rng: np.random.Generator) -> PanopticSample:
        """Jitter the sample's colours."""
        b, c, s = (float(rng.uniform(1 - x, 1 + x)) for x in
                   (self.brightness, self.contrast, self.saturation))
        shift = int(round(rng.uniform(-self.hue, self.hue) * 180))
        image = sample.image
        if shift:
            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)  # OpenCV hue: 0..179
            hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        img = image.astype(np.float32) * np.float32(b)
        gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
        img = (img - gray.mean()) * np.float32(c) + gray.mean()
        gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
        img = gray[..., None] + (img - gray[..., None]) * np.float32(s)
        return replace(sample, image=np.clip(img, 0, 255).astype(np.uint8))


def training_transforms(
    crop: tuple[int, int] | None = None,
    scale: tuple[float, float] = (0.5, 2.0),
    flip: bool = True,
    jitter: bool = True,
) -> Compose:
    """The usual training pipeline: random scale, crop, flip, photometric jitter.

    Args:
        crop: ``(height, width)`` of the random crop; None keeps the scaled size.
        scale: range of the random scale factor; ``(1, 1)`` disables scaling.
    """
    steps: list[Transform] = []
    if scale != (1.0, 1.0):
        steps.append(RandomScale(*scale))
    if crop is not None:
        steps.append(RandomCrop(*crop))
    if flip:
        steps.append(RandomHorizontalFlip())
    if jitter:
        steps.append(PhotometricJitter())
    return Compose(tuple(steps))
