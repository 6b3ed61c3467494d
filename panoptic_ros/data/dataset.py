"""Training data: COCO panoptic (or synthetic) samples as EfficientPS training targets.

One item of :class:`PanopticDataset` is ``(image, target)``:

* ``image``: Tensor[3, H, W] uint8 RGB (normalised later, by the collate function).
* ``target``: a dict

  ============== ======================= ==================================================
  ``image_id``   int or str              the dataset's image id
  ``semantic``   Tensor[H, W] int64      training index per pixel (:class:`LabelSet` order,
                                         stuff first, then things); 255 = ignore (void,
                                         crowd regions, categories outside the label set)
  ``boxes``      Tensor[N, 4] float32    ``(x0, y0, x1, y1)`` pixel edges of each instance
                                         (``x1 = x0 + width``, COCO ``bbox`` in xyxy)
  ``labels``     Tensor[N] int64         thing index + 1 (0 is the detector's background)
  ``masks``      Tensor[N, H, W] uint8   binary instance masks (visible pixels)
  ============== ======================= ==================================================

  Crowd segments are not instances (no box, label or mask) and are 255 in ``semantic``.

:func:`collate_panoptic` (or a :class:`PanopticCollate` with other constants) batches items:
images normalised with ``(rgb - mean) / std`` and zero-padded (after normalisation) at the
bottom/right to a multiple of 32, ``semantic`` padded with 255 and ``masks`` with 0 to the same
size, and returns ``(images Tensor[B, 3, H, W] float32, image_sizes list[(h, w)], targets)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from panoptic_ros.categories import IGNORE_INDEX, VOID, LabelSet, synthetic
from panoptic_ros.data.coco_panoptic import CocoPanopticDataset
from panoptic_ros.data.synthetic import SceneConfig, generate_scene, scene_rng
from panoptic_ros.data.transforms import PanopticSample, Transform, as_rng
from panoptic_ros.result import PanopticResult, compact_ids, segment_stats

DEFAULT_MEAN = (123.675, 116.28, 103.53)
"""Per-channel RGB mean in 0..255 units (ImageNet)."""

DEFAULT_STD = (58.395, 57.12, 57.375)
"""Per-channel RGB standard deviation in 0..255 units (ImageNet)."""

SIZE_DIVISIBILITY = 32
"""Batches are padded to a multiple of this (the backbone's largest stride)."""


def panoptic_targets(
    segment_ids: np.ndarray,
    segments_info: Sequence[Mapping],
    label_set: LabelSet,
    image_id: int | str | None = None,
) -> dict:
    """Training targets of one image from its panoptic segment id map.

    Args:
        segment_ids: ndarray[H, W] integer segment ids (COCO panoptic PNG decoded), 0 = void.
        segments_info: COCO dicts with ``id``, ``category_id`` and optional ``iscrowd``;
            entries absent from ``segment_ids`` (e.g. cropped away) produce nothing, and
            pixels of ids without an entry are ignored (255).
        label_set: the training categories; other category ids are ignored (255).
        image_id: copied into the target.

    Returns:
        The target dict described in the module docstring; instances in ``segments_info``
        order.
    """
    segment_ids = np.asarray(segment_ids)
    if segment_ids.ndim != 2:
        raise ValueError(f"segment_ids must be [H, W], got shape {segment_ids.shape}")
    h, w = segment_ids.shape
    values, index_map = compact_ids(segment_ids.astype(np.int64, copy=False))
    position = {v: k for k, v in enumerate(values.tolist())}
    sem_lut = np.full(len(values), IGNORE_INDEX, np.int64)
    thing_pos: list[int] = []
    thing_labels: list[int] = []
    for info in segments_info:
        sid, cat = int(info["id"]), int(info["category_id"])
        pos = position.get(sid)
        if pos is None or sid == VOID or cat not in label_set or info.get("iscrowd", 0):
            continue
        index = label_set.index_of(cat)
        sem_lut[pos] = index
        if label_set.is_thing(cat):
            thing_pos.append(pos)
            thing_labels.append(index - label_set.num_stuff + 1)
    semantic = sem_lut[index_map]
    _, boxes_xywh = segment_stats(index_map, len(values))
    pos_arr = np.asarray(thing_pos, np.int64)
    boxes = boxes_xywh[pos_arr].astype(np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    masks = (index_map[None] == pos_arr[:, None, None]).astype(np.uint8).reshape(-1, h, w)
    return {
        "image_id": image_id,
        "semantic": torch.from_numpy(semantic),
        "boxes": torch.from_numpy(boxes),
        "labels": torch.as_tensor(thing_labels, dtype=torch.int64),
        "masks": torch.from_numpy(masks),
    }


def result_segments_info(result: PanopticResult) -> list[dict]:
    """``segments_info`` of a :class:`PanopticResult` whose ``ids`` are the segment ids."""
    return [
        {"id": s.id, "category_id": s.category_id, "iscrowd": int(s.iscrowd)}
        for s in result.segments
    ]


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """ndarray[H, W, 3] uint8 RGB to Tensor[3, H, W] uint8."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class _TransformedDataset(Dataset):
    """Shared item logic: sample -> transforms (seeded per item and epoch) -> targets."""

    def __init__(self, label_set: LabelSet, transforms: Transform | None, seed: int | None):
        self.label_set = label_set
        self.transforms = transforms
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch: with a seed, augmentations differ per epoch, reproducibly."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return as_rng(None)
        return np.random.default_rng([self.seed, self.epoch, index])

    def _sample(self, index: int) -> PanopticSample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        sample = self._sample(index)
        if self.transforms is not None:
            sample = self.transforms(sample, self._rng(index))
        target = panoptic_targets(
            sample.segment_ids, sample.segments_info, self.label_set, sample.image_id
        )
        return image_tensor(sample.image), target


class PanopticDataset(_TransformedDataset):
    """A COCO-panoptic-format dataset as training items ``(image, target)``.

    Args:
        source: a :class:`CocoPanopticDataset`, or the path of its JSON (PNG folder and
            image folder found as that class does).
        transforms: augmentation applied to each :class:`PanopticSample`.
        seed: when set, item ``i`` of epoch ``e`` is augmented with
            ``numpy.random.default_rng([seed, e, i])`` (reproducible across workers);
            otherwise with fresh entropy.
        label_set: training categories; default the dataset's own.
    """

    def __init__(
        self,
        source: CocoPanopticDataset | str | Path,
        transforms: Transform | None = None,
        seed: int | None = None,
        label_set: LabelSet | None = None,
    ) -> None:
        if not isinstance(source, CocoPanopticDataset):
            source = CocoPanopticDataset(source, label_set=label_set)
        self.source = source
        self.ids = source.image_ids
        super().__init__(label_set or source.label_set, transforms, seed)

    def __len__(self) -> int:
        return len(self.ids)

    def _sample(self, index: int) -> PanopticSample:
        image_id = self.ids[index]
        image = self.source.load_image(image_id)
        segment_ids = self.source.load_segment_ids(image_id)
        if segment_ids.shape != image.shape[:2]:
            raise ValueError(
                f"image {image_id!r}: panoptic PNG is {segment_ids.shape}, image is "
                f"{image.shape[:2]}"
            )
        info = self.source.annotation(image_id)["segments_info"]
        return PanopticSample(image, segment_ids, list(info), image_id)


class SyntheticPanopticDataset(_TransformedDataset):
    """Synthetic scenes generated on the fly, item ``i`` = scene ``scene_rng(seed, start_id+i)``.

    Identical to what ``panoptic-ros synth`` writes for the same seed and ids (before the
    JPEG encoding of the written images), without touching the disk. With ``fresh_scenes``,
    epoch ``e`` uses image ids ``start_id + e * length + i`` instead: new scenes every epoch.

    Args:
        length: number of items.
        seed: scene seed (also seeds the augmentations, with the epoch).
        config: scene size and densities.
        transforms: augmentation applied to each sample.
        start_id: image id of item 0.
        fresh_scenes: draw new scenes each epoch (see :meth:`set_epoch`).
    """

    def __init__(
        self,
        length: int,
        seed: int = 0,
        config: SceneConfig | None = None,
        transforms: Transform | None = None,
        start_id: int = 1,
        fresh_scenes: bool = False,
    ) -> None:
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self.length = int(length)
        self.config = config or SceneConfig()
        self.start_id = int(start_id)
        self.fresh_scenes = bool(fresh_scenes)
        super().__init__(synthetic(), transforms, seed)

    def __len__(self) -> int:
        return self.length

    def _sample(self, index: int) -> PanopticSample:
        image_id = self.start_id + index
        if self.fresh_scenes:
            image_id += self.epoch * self.length
        scene = generate_scene(scene_rng(self.seed, image_id), self.config)
        return PanopticSample(
            scene.image, scene.result.ids, result_segments_info(scene.result), image_id
        )


def collate_panoptic(
    batch: Sequence[tuple[torch.Tensor, dict]],
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    size_divisibility: int = SIZE_DIVISIBILITY,
) -> tuple[torch.Tensor, list[tuple[int, int]], list[dict]]:
    """Batch ``(image, target)`` items: normalise, pad to a common multiple of 32.

    Args:
        batch: items of :class:`PanopticDataset` (image Tensor[3, H, W] uint8 or float in
            0..255 RGB).
        mean: per-channel RGB mean, 0..255 units.
        std: per-channel RGB standard deviation, 0..255 units.
        size_divisibility: padded height and width are multiples of this.

    Returns:
        ``images`` Tensor[B, 3, Hp, Wp] float32 (padding 0 after normalisation),
        ``image_sizes`` list of ``(h, w)`` before padding, and ``targets`` (new dicts;
        ``semantic`` padded with 255 and ``masks`` with 0 to ``(Hp, Wp)``).
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    if size_divisibility < 1:
        raise ValueError(f"size_divisibility must be >= 1, got {size_divisibility}")
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)
    if mean_t.numel() != 3 or std_t.numel() != 3 or bool((std_t <= 0).any()):
        raise ValueError(f"mean and std must be 3 values with std > 0, got {mean}, {std}")
    for k, (img, _) in enumerate(batch):
        if img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(
                f"item {k}: expected an image Tensor[3, H, W], got {tuple(img.shape)}"
            )
    sizes = [(int(img.shape[1]), int(img.shape[2])) for img, _ in batch]
    div = size_divisibility
    hp = -(-max(h for h, _ in sizes) // div) * div
    wp = -(-max(w for _, w in sizes) // div) * div
    images = torch.zeros((len(batch), 3, hp, wp), dtype=torch.float32)
    targets = []
    for k, ((img, target), (h, w)) in enumerate(zip(batch, sizes)):
        images[k, :, :h, :w] = (img.to(torch.float32) - mean_t) / std_t
        out = dict(target)
        semantic = torch.full((hp, wp), IGNORE_INDEX, dtype=torch.int64)
        semantic[:h, :w] = target["semantic"]
        masks = target["masks"].new_zeros((target["masks"].shape[0], hp, wp))
        masks[:, :h, :w] = target["masks"]
        out["semantic"], out["masks"] = semantic, masks
        targets.append(out)
    return images, sizes, targets


@dataclass(frozen=True)
class PanopticCollate:
    """:func:`collate_panoptic` with fixed constants, picklable for DataLoader workers."""

    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD
    size_divisibility: int = SIZE_DIVISIBILITY

    def __call__(self, batch):
        """Collate a batch (see :func:`collate_panoptic`)."""
        return collate_panoptic(batch, self.mean, self.std, self.size_divisibility)
