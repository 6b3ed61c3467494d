"""Training data: COCO panoptic (or synthetic) samples as EfficientPS training targets.

One item of :class:`PanopticDataset` is ``(image, target)``:

* ``image``: Tensor[3, H, W] uint8 RGB (the model normalises and pads it).
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

:func:`collate_lists` batches items as lists (images of different sizes stay apart): the
model normalises and pads a batch itself (``EfficientPS.preprocess``), so a checkpoint carries
its own normalisation and there is one owner of that step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from panoptic_ros.categories import IGNORE_INDEX, VOID, LabelSet, synthetic
from panoptic_ros.data.coco_panoptic import CocoPanopticDataset
from panoptic_ros.data.synthetic import SceneConfig, generate_scene, scene_rng
from panoptic_ros.data.transforms import PanopticSample, Transform, as_rng
from panoptic_ros.result import PanopticResult, compact_ids, segment_stats


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


def collate_lists(
    batch: Sequence[tuple[torch.Tensor, dict]],
) -> tuple[list[torch.Tensor], list[dict]]:
    """Batch ``(image, target)`` items as two lists (the DataLoader's ``collate_fn``).

    Returns:
        ``images`` list of Tensor[3, H_i, W_i] uint8 and ``targets`` list of dicts, in order.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    images, targets = zip(*batch)
    return list(images), list(targets)
