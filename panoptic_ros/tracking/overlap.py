"""Mask overlaps of every track with every detection from joint histograms.

Each track's last observed mask, shifted by its predicted motion, is painted into a label
canvas (``0`` = no track, ``k + 1`` = track ``k``). Predicted masks may overlap (two people
crossing), and one canvas holds one label per pixel, so the masks are spread over as few
*layers* as keep every layer's boxes disjoint (usually one or two): no mask hides another and
each track's IoU is exactly that of its whole predicted mask. The current frame's detections are
turned into a compact index map. Per layer one ``np.bincount`` over ``canvas * (D + 1) +
detection`` gives every intersection and area at once, instead of one boolean mask per (track,
detection) pair, over the window around that layer's masks only. All maps are read on every
``stride``-th pixel; a reference computing per-pair
masks must subsample the same way to get the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Placement = tuple[int, int, np.ndarray]
"""``(x0, y0, crop)``: a crop ndarray[h, w] bool with its top-left pixel at column ``x0``, row
``y0`` of the image (may lie partly or wholly outside it)."""


def layers(masks: Sequence[Placement]) -> list[list[int]]:
    """Indices of ``masks`` grouped so that the boxes within a group are disjoint (greedy).

    Each mask in turn joins the first group none of whose boxes overlaps its box, else starts
    a new group. The pairwise overlaps come from one vectorised comparison of the boxes.
    """
    if not masks:
        return []
    boxes = np.array([(x0, y0, x0 + crop.shape[1], y0 + crop.shape[0])
                      for x0, y0, crop in masks], dtype=np.int64)
    overlap = ((boxes[:, None, 0] < boxes[None, :, 2]) & (boxes[None, :, 0] < boxes[:, None, 2])
               & (boxes[:, None, 1] < boxes[None, :, 3]) & (boxes[None, :, 1] < boxes[:, None, 3]))
    group_of = np.empty(len(masks), np.int64)
    groups: list[list[int]] = []
    for k in range(len(masks)):
        taken = set(group_of[:k][overlap[k, :k]].tolist())
        g = next((g for g in range(len(groups)) if g not in taken), len(groups))
        if g == len(groups):
            groups.append([])
        groups[g].append(k)
        group_of[k] = g
    return groups


def paint_masks(
    shape: tuple[int, int], masks: Sequence[Placement], indices: Sequence[int], stride: int = 1
) -> np.ndarray:
    """A label canvas of the masks ``indices`` (disjoint boxes, so the order does not matter).

    Args:
        shape: ``(H, W)`` of the image.
        masks: every track's placement.
        indices: which of ``masks`` to paint.
        stride: paint only every ``stride``-th row and column (the same pixels as painting the
            whole image and taking ``[::stride, ::stride]``, at a fraction of the cost).

    Returns:
        ndarray[ceil(H/stride), ceil(W/stride)] int32: ``k + 1`` on the pixels of mask ``k``, 0
        elsewhere.
    """
    height, width = shape
    canvas = np.zeros((-(-height // stride), -(-width // stride)), np.int32)
    for k in indices:
        x0, y0, crop = masks[k]
        h, w = crop.shape
        # First crop row/column on the image's sampling grid, clipped to the image.
        xa = max(x0, 0) + (-max(x0, 0)) % stride
        ya = max(y0, 0) + (-max(y0, 0)) % stride
        xb, yb = min(x0 + w, width), min(y0 + h, height)
        if xa >= xb or ya >= yb:
            continue
        part = crop[ya - y0:yb - y0:stride, xa - x0:xb - x0:stride]
        view = canvas[ya // stride:ya // stride + part.shape[0],
                      xa // stride:xa // stride + part.shape[1]]
        view[part] = k + 1
    return canvas


def detection_index(
    ids: np.ndarray, segment_ids: Sequence[int], stride: int, top: int | None = None
) -> np.ndarray:
    """Compact index map of chosen segments on the subsampled grid.

    Args:
        ids: ndarray[H, W] int32 panoptic label image.
        segment_ids: pixel values of the detections, in detection order.
        stride: subsampling step in both directions.
        top: the largest pixel value in ``ids`` if known (a result's largest segment id),
            which saves a pass over the image.

    Returns:
        ndarray[ceil(H/stride), ceil(W/stride)] int32: ``j + 1`` on pixels of detection ``j``,
        0 elsewhere.
    """
    sub = ids[::stride, ::stride]
    if top is None:
        top = int(sub.max(initial=0))
    top = max(top, int(max(segment_ids, default=0)))
    lut = np.zeros(top + 1, np.int32)
    lut[np.asarray(segment_ids, dtype=np.int64)] = np.arange(1, len(segment_ids) + 1)
    return np.take(lut, sub)


def mask_ious(
    shape: tuple[int, int], masks: Sequence[Placement], det_index: np.ndarray,
    detections: int, stride: int,
) -> np.ndarray:
    """IoU of every placed mask with every detection, in subsampled pixels.

    Args:
        shape: ``(H, W)`` of the image.
        masks: ``T`` placements (:data:`Placement`).
        det_index: from :func:`detection_index` with the same ``stride``.
        detections: ``D``, the number of detections indexed.
        stride: subsampling step.

    Returns:
        ndarray[T, D] float64; 0 where both masks are empty.
    """
    bins = (len(masks) + 1) * (detections + 1)
    hist = np.zeros(bins, np.int64)
    height, width = shape
    for group in layers(masks):
        canvas = paint_masks(shape, masks, group, stride)
        # Only the window around the layer's masks: outside it the canvas is 0 (no track).
        x0 = max(min(masks[k][0] for k in group), 0)
        y0 = max(min(masks[k][1] for k in group), 0)
        x1 = min(max(masks[k][0] + masks[k][2].shape[1] for k in group), width)
        y1 = min(max(masks[k][1] + masks[k][2].shape[0] for k in group), height)
        if x0 >= x1 or y0 >= y1:
            continue
        window = (slice(-(-y0 // stride), -(-y1 // stride)), slice(-(-x0 // stride),
                                                                  -(-x1 // stride)))
        joint = canvas[window] * (detections + 1) + det_index[window]
        hist += np.bincount(joint.reshape(-1), minlength=bins)
    hist = hist.reshape(len(masks) + 1, detections + 1)
    inter = hist[1:, 1:]
    track_area = hist[1:].sum(axis=1)
    det_area = np.bincount(det_index.reshape(-1), minlength=detections + 1)[1:]
    return iou_from_counts(inter, track_area, det_area)


def iou_from_counts(
    inter: np.ndarray, track_area: np.ndarray, det_area: np.ndarray
) -> np.ndarray:
    """ndarray[T, D] float64 IoU from pixel counts; 0 where both masks are empty."""
    union = track_area[:, None] + det_area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)
