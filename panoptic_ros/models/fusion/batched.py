"""Instance pixels for all detections at once: the path for GPUs and other devices.

Guarantees, with detections sorted by descending score: the same index map as
:mod:`panoptic_ros.models.fusion.box_by_box` bit for bit (the pixels a detection wins hold its
slot ``S + 1 + k``, int32; every other pixel 0), including the EfficientPS pixels outside every
box, which this path decides densely. Memory is bounded by pasting and fusing
:data:`CHUNK_ELEMENTS` ``K x H x W`` elements at a time; host syncs are few and independent of
``K`` but for the overlap filter's rounds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from panoptic_ros.models.fusion.overlap import greedy_overlap_filter
from panoptic_ros.models.fusion.paste import MASK_LOGIT_SCALE, box_interior, paste_mask_logits

CHUNK_ELEMENTS = 1 << 25
"""Detections are pasted and fused in chunks of at most this many ``K x H x W`` elements."""


def claim_instances(
    semantic_logits: Tensor,
    mask_logits: Tensor,
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    index_map: Tensor,
    *,
    efficientps: bool,
    num_stuff: int,
    score_threshold: float,
    overlap_threshold: float,
) -> None:
    """Write the pixels the detections win into ``index_map``, batched.

    All masks pasted (in chunks), the fixed-point overlap filter, then the first kept mask per
    pixel (Panoptic FPN) or the argmax over ``[stuff; FL of the kept]`` (EfficientPS). Args as
    :func:`panoptic_ros.models.fusion.box_by_box.claim_instances`.
    """
    c, h, w = semantic_logits.shape
    k = boxes.shape[0]
    chunk = max(1, CHUNK_ELEMENTS // (h * w))
    binary = torch.cat([
        paste_mask_logits(mask_logits[s:s + chunk], boxes[s:s + chunk], (h, w)) > 0
        for s in range(0, k, chunk)
    ])
    keep, first = greedy_overlap_filter(
        binary.reshape(k, -1), scores >= score_threshold, overlap_threshold
    )
    del binary
    if efficientps:
        owner = _fused_logit_owner(
            semantic_logits, mask_logits, boxes, labels, keep, num_stuff, chunk
        )
    else:
        owner = first.reshape(h, w)
    index_map.copy_(torch.where(owner < k, owner + (1 + num_stuff), 0))


def _fused_logit_owner(
    semantic_logits: Tensor,
    mask_logits: Tensor,
    boxes: Tensor,
    labels: Tensor,
    keep: Tensor,
    num_stuff: int,
    chunk: int,
) -> Tensor:
    """Tensor[H, W] int64: the kept detection whose FL wins each pixel over stuff, K for none.

    ``FL`` of the kept detections only (one host sync finds them), ``chunk`` at a time, each
    pasted again: a running argmax where a later chunk must be strictly better, so the result
    equals one argmax over ``[stuff; FL of the kept]`` with ties to the lower channel.
    """
    c, h, w = semantic_logits.shape
    k = boxes.shape[0]
    owner = torch.full((h, w), k, dtype=torch.int64, device=semantic_logits.device)
    if num_stuff:
        best_value = semantic_logits[:num_stuff].amax(0)
    else:  # no stuff channels: a zero channel stands in, so FL <= 0 stays unclaimed
        best_value = semantic_logits.new_zeros((h, w))
    kept = keep.nonzero()[:, 0]
    for s in range(0, kept.shape[0], chunk):
        index = kept[s:s + chunk]
        ml_a = paste_mask_logits(mask_logits[index], boxes[index], (h, w)).mul_(MASK_LOGIT_SCALE)
        rows, cols = box_interior(boxes[index], (h, w))
        ml_b = semantic_logits[labels[index]].mul_(rows[:, :, None] & cols[:, None, :])
        fused = torch.sigmoid(ml_a).add_(torch.sigmoid(ml_b)).mul_(ml_a.add_(ml_b))
        value, winner = fused.max(0)  # first index among ties; much faster than argmax(0)
        better = value > best_value
        best_value = torch.where(better, value, best_value)
        owner = torch.where(better, index[winner], owner)
    return owner
