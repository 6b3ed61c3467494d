"""Cityscapes ``gtFine`` instance annotations to COCO panoptic format.

Input layout (Cityscapes' own)::

    ROOT/gtFine/<split>/<city>/<stem>_gtFine_instanceIds.png   16-bit label image
    ROOT/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png     the RGB image

An ``instanceIds`` pixel is ``label_id * 1000 + k`` (k = 0, 1, ...) on a thing instance, and the
plain ``label_id`` (< 1000) on stuff and on thing regions annotated as a group (crowd).

Output, as ``panoptic-ros synth`` writes: ``OUT/images/<stem>.png`` (the image, copied),
``OUT/panoptic/<stem>.png`` and ``OUT/panoptic.json`` with the
:func:`~panoptic_ros.categories.cityscapes` categories; image ids are the stems
(``frankfurt_000000_000294``). Segment ids follow the package encoding, ``label_id *
label_divisor + instance``: instance ``k + 1`` for thing instance ``k``, 0 for stuff and for crowd
regions (``iscrowd`` 1). Label ids outside the 19 evaluated classes become void.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from panoptic_ros.categories import DEFAULT_LABEL_DIVISOR, VOID, LabelSet, cityscapes
from panoptic_ros.data.coco_panoptic import write_panoptic_png
from panoptic_ros.errors import UserError
from panoptic_ros.result import compact_ids, segment_stats

CITYSCAPES_DIVISOR = 1000
"""Divisor of the Cityscapes ``instanceIds`` encoding."""

_INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
_IMAGE_SUFFIX = "_leftImg8bit.png"


def cityscapes_to_panoptic(
    instance_ids: np.ndarray,
    label_set: LabelSet | None = None,
    label_divisor: int = DEFAULT_LABEL_DIVISOR,
) -> tuple[np.ndarray, list[dict]]:
    """Convert one ``instanceIds`` image to segment ids and ``segments_info``.

    Args:
        instance_ids: ndarray[H, W] integer, Cityscapes ``instanceIds`` values.
        label_set: the evaluated classes; default :func:`cityscapes`.
        label_divisor: divisor of the output segment ids.

    Returns:
        ``segment_ids`` ndarray[H, W] int32 (0 = void) and ``segments_info`` dicts (``id``,
        ``category_id``, ``iscrowd``, ``bbox`` [x, y, w, h], ``area``) sorted by id.
    """
    label_set = label_set or cityscapes()
    values, index_map = compact_ids(np.asarray(instance_ids).astype(np.int64))
    labels = np.where(values >= CITYSCAPES_DIVISOR, values // CITYSCAPES_DIVISOR, values)
    instance = np.where(values >= CITYSCAPES_DIVISOR, values % CITYSCAPES_DIVISOR + 1, 0)
    lut = np.zeros(len(values), np.int64)
    crowd_ids = set()
    for k, (label, inst) in enumerate(zip(labels.tolist(), instance.tolist())):
        if label not in label_set:
            continue  # not evaluated: void
        if not label_set.is_thing(label):
            inst = 0
        elif inst == 0:
            crowd_ids.add(label * label_divisor)
        if inst >= label_divisor:
            raise ValueError(
                f"instance {inst} of label {label} does not fit label_divisor {label_divisor}"
            )
        lut[k] = label * label_divisor + inst
    segment_ids = lut[index_map].astype(np.int32)
    seg_values, seg_index = compact_ids(segment_ids)
    areas, boxes = segment_stats(seg_index, len(seg_values))
    info = []
    for sid, area, box in zip(seg_values.tolist(), areas.tolist(), boxes.tolist()):
        if sid == VOID:
            continue
        info.append({
            "id": sid,
            "category_id": sid // label_divisor,
            "iscrowd": int(sid in crowd_ids),
            "bbox": [int(v) for v in box],
            "area": int(area),
        })
    return segment_ids, info


def find_cityscapes(root: str | Path, split: str) -> list[tuple[str, Path, Path]]:
    """``(stem, instanceIds path, image path)`` of every annotated image of a split, sorted.

    Raises :class:`UserError` when the folders, or an annotation's image, are missing.
    """
    root = Path(root)
    gt_dir = root / "gtFine" / split
    img_dir = root / "leftImg8bit" / split
    if not root.is_dir():
        raise UserError(f"Cityscapes root not found: {root}")
    if not gt_dir.is_dir():
        raise UserError(f"no gtFine/{split} folder in {root}")
    found = []
    for gt in sorted(gt_dir.glob(f"*/*{_INSTANCE_SUFFIX}")):
        stem = gt.name[: -len(_INSTANCE_SUFFIX)]
        image = img_dir / gt.parent.name / (stem + _IMAGE_SUFFIX)
        if not image.is_file():
            raise UserError(f"image missing for {gt.name}: expected {image}")
        found.append((stem, gt, image))
    if not found:
        raise UserError(f"no *{_INSTANCE_SUFFIX} files under {gt_dir}")
    return found


def convert_cityscapes(
    root: str | Path,
    split: str,
    out_dir: str | Path,
    label_divisor: int = DEFAULT_LABEL_DIVISOR,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Convert a Cityscapes split to COCO panoptic format (see the module docstring).

    Args:
        progress: called with ``(done, total)`` after each image.

    Returns:
        Path of the written ``panoptic.json``.
    """
    entries = find_cityscapes(root, split)
    label_set = cityscapes()
    out_dir = Path(out_dir)
    try:
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        (out_dir / "panoptic").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create output folder {out_dir}: {err.strerror}") from None
    images, annotations = [], []
    for n, (stem, gt_path, image_path) in enumerate(entries, 1):
        gt = cv2.imread(str(gt_path), cv2.IMREAD_UNCHANGED)
        if gt is None or gt.ndim != 2:
            raise UserError(f"{gt_path}: expected a single-channel instanceIds PNG")
        segment_ids, info = cityscapes_to_panoptic(gt, label_set, label_divisor)
        file_name = stem + ".png"
        write_panoptic_png(out_dir / "panoptic" / file_name, segment_ids)
        shutil.copyfile(image_path, out_dir / "images" / file_name)
        h, w = gt.shape
        images.append({"id": stem, "file_name": file_name, "height": h, "width": w})
        annotations.append({"image_id": stem, "file_name": file_name, "segments_info": info})
        if progress is not None:
            progress(n, len(entries))
    json_path = out_dir / "panoptic.json"
    json_path.write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": label_set.to_coco()}
    ))
    return json_path
