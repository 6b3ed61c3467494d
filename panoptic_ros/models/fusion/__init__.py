"""Panoptic fusion: semantic logits + scored instance masks -> one panoptic id map.

:func:`fuse` is the whole algorithm in a few steps; the modules it calls each do one part and
state what they guarantee:

* :mod:`~panoptic_ros.models.fusion.paste`: mask logits into their boxes, bit-identical
  everywhere;
* :mod:`~panoptic_ros.models.fusion.overlap`: the overlap filter, batched or per window;
* :mod:`~panoptic_ros.models.fusion.box_by_box` (CPU) and
  :mod:`~panoptic_ros.models.fusion.batched` (other devices): the pixels the detections win, the
  same map either way;
* :mod:`~panoptic_ros.models.fusion.semantic`: the one dense pass over the semantic logits;
* :mod:`~panoptic_ros.models.fusion.assemble`: ids, scores and the :class:`PanopticResult`.

The plain per-detection loop these must equal lives in ``reference.py`` beside this module.

Rules (``strategy``):

* ``"efficientps"``, the EfficientPS paper's parameter-free fusion: detections scoring at least
  ``score_threshold``, in descending score order; the overlap filter drops one whose binary
  mask (``sigmoid(logit) > 0.5``) is already claimed by kept ones for more than
  ``overlap_threshold`` of its area. For each kept detection ``ML_A = 4 x`` its pasted mask
  logit (0 outside its box), ``ML_B`` = the semantic logit of its class inside its box (0
  outside), ``FL = (sigmoid(ML_A) + sigmoid(ML_B)) * (ML_A + ML_B)``; each pixel takes the argmax
  over ``[stuff semantic logits; FL of every kept detection]``.
* ``"panoptic_fpn"``, the Panoptic FPN / panopticapi heuristic: the same order and filter; a
  kept detection takes the pixels of its mask no earlier one took.

Either way, pixels no detection won take the semantic argmax over all classes: a stuff class,
or void for a thing class; stuff classes smaller than the stuff area become void.

Conventions: ``C`` semantic classes in training-index order (stuff ``0..S-1`` first, then
things), ``K`` detections, ``(H, W)`` the fusion resolution. A detection's ``label`` is the
*semantic* (training) index of its class, ``S <= label < C``. Boxes are ``(x0, y0, x1, y1)``
pixels (see :mod:`~panoptic_ros.models.fusion.paste` for which pixels are inside). Ties in an
argmax go to the lower channel (stuff before detections, higher score first; equal scores keep
their input order). Detections with an empty mask are never kept. Ids as in
:mod:`~panoptic_ros.models.fusion.assemble`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from panoptic_ros.models.fusion import batched, box_by_box
from panoptic_ros.models.fusion.assemble import (
    FusionOutput,
    assemble,
    lookup_ids,
    resize_index_map,
    segment_stats_torch,
    to_panoptic_result,
)
from panoptic_ros.models.fusion.overlap import greedy_overlap_filter
from panoptic_ros.models.fusion.paste import box_interior, box_windows, paste_mask_logits
from panoptic_ros.models.fusion.semantic import semantic_pass

__all__ = [
    "BOX_BY_BOX_DEVICES", "PATHS", "STRATEGIES", "FusionOutput", "box_interior", "box_windows",
    "fuse", "greedy_overlap_filter", "lookup_ids", "paste_mask_logits", "resize_index_map",
    "segment_stats_torch", "to_panoptic_result",
]

STRATEGIES = ("efficientps", "panoptic_fpn")
"""Fusion rules accepted by :func:`fuse`."""

PATHS = ("auto", "boxes", "batched")
"""How :func:`fuse` finds the detections' pixels: box by box, batched, or by device
(:data:`BOX_BY_BOX_DEVICES`). Every path gives the same output."""

BOX_BY_BOX_DEVICES = ("cpu",)
"""Device types on which ``path="auto"`` works box by box."""


def fuse(
    semantic_logits: Tensor,
    mask_logits: Tensor,
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    *,
    strategy: str = "efficientps",
    num_stuff: int,
    category_ids: Tensor,
    label_divisor: int,
    score_threshold: float = 0.5,
    overlap_threshold: float = 0.5,
    stuff_area: float = 0.0,
    path: str = "auto",
) -> FusionOutput:
    """Panoptic fusion of one image (rules in the module docstring).

    Args:
        semantic_logits: Tensor[C, H, W] float at the output resolution.
        mask_logits: Tensor[K, M, M] float, each detection's mask logit of its own class.
        boxes: Tensor[K, 4] float ``(x0, y0, x1, y1)`` pixels at the output resolution.
        scores: Tensor[K] float detection scores (any order).
        labels: Tensor[K] int64 semantic (training) index of each detection's class.
        strategy: one of :data:`STRATEGIES`.
        num_stuff: ``S``, the number of stuff classes (the first ``S`` channels).
        category_ids: Tensor[C] int64 dataset category id of each training index.
        label_divisor: ``id = category_id * label_divisor + instance``.
        score_threshold: detections scoring below are ignored.
        overlap_threshold: largest share of a mask already claimed that still keeps it.
        stuff_area: stuff classes with fewer pixels become void (pixels at this resolution;
            see :meth:`~panoptic_ros.models.efficientps.config.FusionConfig.stuff_area_at`).
        path: one of :data:`PATHS`.

    Returns:
        :class:`FusionOutput` on the inputs' device.

    Raises:
        ValueError: unknown strategy or path, or inputs of the wrong shapes.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"fusion strategy must be one of {STRATEGIES}, got {strategy!r}")
    if path not in PATHS:
        raise ValueError(f"fusion path must be one of {PATHS}, got {path!r}")
    _check_inputs(semantic_logits, mask_logits, boxes, scores, labels, num_stuff, category_ids)
    semantic_logits = semantic_logits.float()
    device = semantic_logits.device
    s, k = num_stuff, boxes.shape[0]

    # 1. Detections by descending score (a stable sort: equal scores keep their order).
    order = torch.sort(scores, descending=True, stable=True).indices
    mask_logits, boxes = mask_logits[order], boxes[order].float()
    scores, labels = scores[order].float(), labels[order]

    # 2. Each detection in turn: paste its mask, drop it if it overlaps kept ones too much,
    #    else claim its pixels. Slots: 0 void, 1..S stuff, S + 1 + i detection i.
    index_map = torch.zeros(semantic_logits.shape[1:], dtype=torch.int32, device=device)
    outside = None
    if k:
        if path == "auto":
            path = "boxes" if device.type in BOX_BY_BOX_DEVICES else "batched"
        claim = box_by_box.claim_instances if path == "boxes" else batched.claim_instances
        outside = claim(
            semantic_logits, mask_logits, boxes, scores, labels, index_map,
            efficientps=strategy == "efficientps", num_stuff=s,
            score_threshold=score_threshold, overlap_threshold=overlap_threshold,
        )

    # 3. Every pixel left: its semantic argmax, if a stuff class (else void); per-slot areas
    #    and argmax probabilities for the stuff scores.
    area, prob_sum = semantic_pass(semantic_logits, index_map, s, 1 + s + k, outside)

    # 4. Ids and scores per slot; stuff regions below the stuff area become void.
    return assemble(
        index_map, area, prob_sum, scores, labels, s, category_ids, label_divisor, stuff_area
    )


def _check_inputs(
    semantic_logits: Tensor,
    mask_logits: Tensor,
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    num_stuff: int,
    category_ids: Tensor,
) -> None:
    if semantic_logits.dim() != 3:
        raise ValueError(
            f"semantic_logits must be Tensor[C, H, W], got shape {tuple(semantic_logits.shape)}"
        )
    c = semantic_logits.shape[0]
    k = boxes.shape[0]
    if mask_logits.dim() != 3 or mask_logits.shape[0] != k:
        raise ValueError(
            f"mask_logits must be Tensor[K, M, M] with K = {k} boxes, got "
            f"{tuple(mask_logits.shape)}"
        )
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be Tensor[K, 4], got {tuple(boxes.shape)}")
    if scores.shape != (k,) or labels.shape != (k,):
        raise ValueError(
            f"scores and labels must be Tensor[{k}], got {tuple(scores.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if not 0 <= num_stuff <= c:
        raise ValueError(f"num_stuff must lie in 0..{c}, got {num_stuff}")
    if category_ids.shape != (c,):
        raise ValueError(
            f"category_ids must be Tensor[{c}] (one per class), got {tuple(category_ids.shape)}"
        )
