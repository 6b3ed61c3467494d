"""Panoptic fusion: semantic logits + scored instance masks -> one panoptic id map.

Free functions of tensors; everything stays on the tensors' device until
:func:`to_panoptic_result` copies the final id map to the host once.

Two strategies share one output layout (:class:`FusionOutput`):

* :func:`efficientps_fusion` — the EfficientPS paper's parameter-free logit fusion. Detections
  scoring at least ``score_threshold`` are taken in descending score order; an overlap filter
  drops a detection whose binary mask (``sigmoid(logit) > 0.5``) is already claimed by kept ones
  for more than ``overlap_threshold`` of its area. For each kept detection ``ML_A = 4 x`` its
  pasted mask logit (0 outside its box), ``ML_B`` = the semantic logit of its class inside its
  box (0 outside), ``FL = (sigmoid(ML_A) + sigmoid(ML_B)) * (ML_A + ML_B)``. Each pixel takes the
  argmax over ``[stuff semantic logits; FL of every kept detection]``. Pixels not won by a
  detection take the semantic argmax over all classes: a stuff class, or void if it is a thing
  class; stuff classes smaller than the stuff area threshold become void.
* :func:`panoptic_fpn_fusion` — the Panoptic FPN / panopticapi heuristic: detections in score
  order (at least ``score_threshold``), empty masks skipped, a detection dropped when more than
  ``overlap_threshold`` of its mask is already assigned, else it takes its unassigned pixels;
  then every stuff class of the semantic argmax takes its unassigned pixels when their area
  reaches the stuff area threshold.

Conventions: ``C`` semantic classes in training-index order (stuff ``0..S-1`` first, then
things), ``K`` detections, ``(H, W)`` the fusion resolution. A detection's ``label`` is the
*semantic* (training) index of its class, ``S <= label < C``. Boxes are ``(x0, y0, x1, y1)`` in
pixels; pixel ``(x, y)`` lies inside a box when its centre ``(x + 0.5, y + 0.5)`` satisfies
``x0 <= x + 0.5 < x1`` and ``y0 <= y + 0.5 < y1``. Ties in an argmax go to the lower channel
(stuff before detections, higher-scoring detection first). Detections with an empty binary mask
are never kept. Instance ids are ``1..`` per category in descending score order, counting only
detections that end up with pixels.

The overlap filter is sequential by nature (each detection is compared with the union of the
kept ones before it). It runs box by box on the CPU and as a batched fixed-point update on
other devices; both are exact (see :func:`overlap_filter`). Pasting is two batched matmuls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from panoptic_ros.categories import VOID, LabelSet
from panoptic_ros.result import PanopticResult, Segment

MASK_LOGIT_SCALE = 4.0
"""EfficientPS scales pasted mask logits by 4 (``ML_A``) before fusing."""

BOX_LOOP_DEVICES = ("cpu",)
"""Device types on which the overlap filter walks the detections box by box."""

STRATEGIES = ("efficientps", "panoptic_fpn")
"""Fusion strategies accepted by :func:`fuse`."""

CHUNK_ELEMENTS = 1 << 25
"""Detections are fused in chunks of at most this many ``K x H x W`` elements (memory bound)."""


@dataclass
class FusionOutput:
    """The panoptic fusion of one image, on the device of its inputs.

    Pixels point at *slots*: slot 0 is void, slots ``1..S`` the stuff classes (training index
    ``slot - 1``), slots ``S + 1 .. S + K`` the detections in descending score order. Slots
    without pixels are simply absent from the map.

    Attributes:
        index_map: Tensor[H, W] int64 slot per pixel.
        values: Tensor[1 + S + K] int64 panoptic id per slot
            (``category_id * label_divisor + instance``; slot 0 -> 0).
        scores: Tensor[1 + S + K] float32: mean class probability over its pixels for stuff,
            detection score for instances, 0 for void.
        num_stuff: ``S``.
    """

    index_map: Tensor
    values: Tensor
    scores: Tensor
    num_stuff: int

    @property
    def ids(self) -> Tensor:
        """Tensor[H, W] int32 panoptic id map (0 = void)."""
        return self.values[self.index_map].to(torch.int32)


# -- pasting -------------------------------------------------------------------------------
def box_interior(boxes: Tensor, size: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Which rows and columns of an image have their pixel centres inside each box.

    Args:
        boxes: Tensor[K, 4] float ``(x0, y0, x1, y1)``.
        size: ``(H, W)``.

    Returns:
        ``rows`` Tensor[K, H] bool and ``cols`` Tensor[K, W] bool; pixel ``(y, x)`` is inside
        box ``k`` iff ``rows[k, y] & cols[k, x]``.
    """
    h, w = int(size[0]), int(size[1])
    ys = torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5
    rows = (ys >= boxes[:, 1:2]) & (ys < boxes[:, 3:4])
    cols = (xs >= boxes[:, 0:1]) & (xs < boxes[:, 2:3])
    return rows, cols


def _bilinear_weights(lo: Tensor, hi: Tensor, n_out: int, m: int) -> Tensor:
    """Tensor[K, n_out, m]: weights that resample ``m`` mask cells onto output pixels ``[lo, hi)``.

    Output pixel centre ``p + 0.5`` maps to mask coordinate
    ``t = (p + 0.5 - lo) / (hi - lo) * m - 0.5``, clamped to ``[0, m - 1]`` (border
    replication, as ``F.interpolate(..., align_corners=False)``); pixels outside get weight 0.
    """
    centres = torch.arange(n_out, device=lo.device, dtype=torch.float32) + 0.5
    lo, hi = lo.float()[:, None], hi.float()[:, None]
    t = (centres - lo) / (hi - lo).clamp(min=1e-6) * m - 0.5
    inside = (centres >= lo) & (centres < hi)
    cells = torch.arange(m, device=lo.device, dtype=torch.float32)
    weights = (1.0 - (t.clamp(0, m - 1)[..., None] - cells).abs()).clamp(min=0)
    return weights * inside[..., None]


def paste_mask_logits(mask_logits: Tensor, boxes: Tensor, size: Sequence[int]) -> Tensor:
    """Paste per-box mask logits into full images, batched (no loop over boxes).

    Bilinear resampling is separable, so each box's pasted map is ``Wy @ M @ Wx^T`` with
    per-box interpolation matrices; two batched matmuls paste all boxes at once, exactly as a
    per-box ``F.interpolate(bilinear, align_corners=False)`` of the mask to the box would.

    Args:
        mask_logits: Tensor[K, M, M] float, one mask logit map per box.
        boxes: Tensor[K, 4] float ``(x0, y0, x1, y1)`` pixels.
        size: ``(H, W)`` of the output.

    Returns:
        Tensor[K, H, W] float32: the logits inside each box, 0 outside.
    """
    h, w = int(size[0]), int(size[1])
    k, mh, mw = mask_logits.shape
    if k == 0:
        return mask_logits.new_zeros((0, h, w), dtype=torch.float32)
    wy = _bilinear_weights(boxes[:, 1], boxes[:, 3], h, mh)  # [K, H, M]
    wx = _bilinear_weights(boxes[:, 0], boxes[:, 2], w, mw)  # [K, W, M]
    return torch.bmm(torch.bmm(wy, mask_logits.float()), wx.transpose(1, 2))


# -- overlap filter ------------------------------------------------------------------------
def greedy_overlap_filter(
    masks: Tensor, candidates: Tensor, overlap_threshold: float
) -> tuple[Tensor, Tensor]:
    """Keep masks in order unless more than ``overlap_threshold`` of one is already claimed.

    The rule is sequential: mask ``k`` is compared with the union of the masks kept before it.
    Instead of K dependent steps over the image, the keep vector is found as the fixed point of
    a batched update: given a guess ``keep``, every pixel's first kept mask (its *owner*) gives,
    for all masks at once, how much of each is owned by an earlier kept mask. Decision ``k``
    depends only on decisions ``< k``, so the update fixes at least one more leading decision per
    round and its fixed point is exactly the greedy result; in practice 1-3 rounds, each a few
    ops over ``[K, N]`` and one host sync for the convergence test.

    Args:
        masks: Tensor[K, N] bool, binary masks (flattened) in priority order.
        candidates: Tensor[K] bool, masks allowed to be kept at all; empty masks never are.
        overlap_threshold: largest claimed fraction that still keeps a mask.

    Returns:
        ``keep`` Tensor[K] bool and ``owner`` Tensor[N] int64: the first kept mask covering each
        pixel, ``K`` where none does.
    """
    k, n = masks.shape
    device = masks.device
    if k == 0:
        return torch.zeros(0, dtype=torch.bool, device=device), torch.zeros(
            n, dtype=torch.int64, device=device
        )
    dtype = torch.int16 if k < 2**15 - 1 else torch.int32
    index = torch.arange(k, device=device, dtype=dtype)[:, None]
    none = torch.tensor(k, device=device, dtype=dtype)
    area = masks.sum(1)
    eligible = candidates & (area > 0)
    area_f = area.clamp(min=1).to(torch.float64)
    keep = eligible
    for _ in range(k + 1):
        owner = torch.where(masks & keep[:, None], index, none).amin(0)  # [N]
        claimed = (masks & (owner[None, :] < index)).sum(1)
        new_keep = eligible & (claimed.to(torch.float64) / area_f <= overlap_threshold)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep, owner.to(torch.int64)


def greedy_overlap_filter_boxes(
    masks: Tensor, boxes: Tensor, candidates: Tensor, overlap_threshold: float
) -> tuple[Tensor, Tensor]:
    """The same decisions as :func:`greedy_overlap_filter`, one mask at a time inside its box.

    Every step touches only the pixels of one box, so the work is the sum of the box areas
    instead of ``K x H x W`` per round: the cheaper choice on a CPU, where kernel launches cost
    little. One host sync reads the boxes; the decisions stay on the device.

    Args:
        masks: Tensor[K, H, W] bool in priority order, empty outside each mask's box.
        boxes: Tensor[K, 4] float ``(x0, y0, x1, y1)``; pixels whose centres lie outside are
            ``False`` in ``masks``.
        candidates: Tensor[K] bool, masks allowed to be kept at all.
        overlap_threshold: largest claimed fraction that still keeps a mask.

    Returns:
        ``keep`` Tensor[K] bool and ``owner`` Tensor[H, W] int64 (``K`` where no kept mask).
    """
    k, h, w = masks.shape
    device = masks.device
    owner = torch.full((h, w), k, dtype=torch.int64, device=device)
    if k == 0:
        return torch.zeros(0, dtype=torch.bool, device=device), owner
    # Pixel ranges of the box centres, widened by a pixel (the masks are empty there anyway).
    lo = torch.floor(boxes[:, :2] - 0.5).long() - 1
    hi = torch.ceil(boxes[:, 2:] - 0.5).long() + 1
    limits = torch.tensor([w, h], device=device)
    spans = torch.cat([lo.clamp(min=0), torch.minimum(hi, limits)], 1).tolist()
    area_f = masks.reshape(k, -1).sum(1).to(torch.float64)
    eligible = candidates & (area_f > 0)
    claimed = torch.zeros((h, w), dtype=torch.bool, device=device)
    keep = []
    for i, (x0, y0, x1, y1) in enumerate(spans):
        mask = masks[i, y0:y1, x0:x1]
        taken = claimed[y0:y1, x0:x1]
        overlap = (mask & taken).sum().to(torch.float64) / area_f[i].clamp(min=1)
        ok = eligible[i] & (overlap <= overlap_threshold)
        keep.append(ok)
        new = mask & ok
        region = owner[y0:y1, x0:x1]
        region.masked_fill_(new & ~taken, i)
        taken |= new
    return torch.stack(keep), owner


def overlap_filter(
    masks: Tensor, boxes: Tensor, candidates: Tensor, overlap_threshold: float
) -> tuple[Tensor, Tensor]:
    """:func:`greedy_overlap_filter_boxes` on the CPU, :func:`greedy_overlap_filter` elsewhere.

    Args and returns as :func:`greedy_overlap_filter_boxes`.
    """
    if masks.device.type in BOX_LOOP_DEVICES:
        return greedy_overlap_filter_boxes(masks, boxes, candidates, overlap_threshold)
    k, h, w = masks.shape
    keep, owner = greedy_overlap_filter(masks.reshape(k, -1), candidates, overlap_threshold)
    return keep, owner.reshape(h, w)


# -- fusion --------------------------------------------------------------------------------
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
) -> FusionOutput:
    """Panoptic fusion of one image (see the module docstring for the rules).

    Args:
        semantic_logits: Tensor[C, H, W] float at the output resolution.
        mask_logits: Tensor[K, M, M] float, each detection's mask logit of its own class.
        boxes: Tensor[K, 4] float ``(x0, y0, x1, y1)`` pixels at the output resolution.
        scores: Tensor[K] float detection scores (any order).
        labels: Tensor[K] int64 semantic (training) index of each detection's class.
        strategy: ``"efficientps"`` or ``"panoptic_fpn"``.
        num_stuff: ``S``, the number of stuff classes (the first ``S`` channels).
        category_ids: Tensor[C] int64 dataset category id of each training index.
        label_divisor: ``id = category_id * label_divisor + instance``.
        score_threshold: detections scoring below are ignored.
        overlap_threshold: see :func:`greedy_overlap_filter`.
        stuff_area: stuff classes with fewer pixels become void (pixels at this resolution;
            see :meth:`~panoptic_ros.models.efficientps.config.FusionConfig.stuff_area_at`).

    Returns:
        :class:`FusionOutput` on the inputs' device.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"fusion strategy must be one of {STRATEGIES}, got {strategy!r}")
    _check_inputs(semantic_logits, mask_logits, boxes, scores, labels, num_stuff, category_ids)
    semantic_logits = semantic_logits.float()
    c, h, w = semantic_logits.shape
    order = torch.sort(scores, descending=True, stable=True).indices
    mask_logits, boxes = mask_logits[order], boxes[order].float()
    scores, labels = scores[order].float(), labels[order]
    k = boxes.shape[0]
    owner = torch.full((h, w), k, dtype=torch.int64, device=semantic_logits.device)
    if k:
        # Pasted logits are kept for the FL step when all detections fit one chunk.
        chunk = max(1, CHUNK_ELEMENTS // (h * w))
        pasted = paste_mask_logits(mask_logits, boxes, (h, w)) if k <= chunk else None
        if pasted is not None:
            binary = pasted > 0
        else:
            binary = torch.cat([
                paste_mask_logits(mask_logits[s:s + chunk], boxes[s:s + chunk], (h, w)) > 0
                for s in range(0, k, chunk)
            ])
        keep, first = overlap_filter(
            binary, boxes, scores >= score_threshold, overlap_threshold
        )
        del binary
        if strategy == "panoptic_fpn":
            owner = first
        else:
            owner = _fused_logit_owner(
                semantic_logits, mask_logits, boxes, labels, keep, num_stuff, pasted, chunk
            )
    return _assemble(
        semantic_logits, owner, scores, labels, num_stuff, category_ids, label_divisor,
        stuff_area,
    )


def efficientps_fusion(*args, **kwargs) -> FusionOutput:
    """:func:`fuse` with ``strategy="efficientps"``."""
    return fuse(*args, strategy="efficientps", **kwargs)


def panoptic_fpn_fusion(*args, **kwargs) -> FusionOutput:
    """:func:`fuse` with ``strategy="panoptic_fpn"``."""
    return fuse(*args, strategy="panoptic_fpn", **kwargs)


def _fused_logit_owner(
    semantic_logits: Tensor,
    mask_logits: Tensor,
    boxes: Tensor,
    labels: Tensor,
    keep: Tensor,
    num_stuff: int,
    pasted: Tensor | None,
    chunk: int,
) -> Tensor:
    """Tensor[H, W] int64: the kept detection whose FL wins each pixel over stuff, K for none.

    ``pasted`` holds all pasted logits, or is ``None`` to paste ``chunk`` detections at a time.
    """
    c, h, w = semantic_logits.shape
    k = boxes.shape[0]
    owner = torch.full((h, w), k, dtype=torch.int64, device=semantic_logits.device)
    rows, cols = box_interior(boxes, (h, w))
    if num_stuff:
        best_value = semantic_logits[:num_stuff].amax(0)
    else:  # no stuff channels: a zero channel stands in, so FL <= 0 stays unclaimed
        best_value = semantic_logits.new_zeros((h, w))
    # Running argmax over chunks of detections; a later chunk must be strictly better, so the
    # result equals one argmax over [stuff; FL_0 .. FL_K-1] with ties to the lower channel.
    for s in range(0, k, chunk):
        e = min(k, s + chunk)
        part = paste_mask_logits(mask_logits[s:e], boxes[s:e], (h, w)) if pasted is None \
            else pasted
        ml_a = part.mul_(MASK_LOGIT_SCALE)
        ml_b = semantic_logits[labels[s:e]].mul_(rows[s:e, :, None] & cols[s:e, None, :])
        fused = torch.sigmoid(ml_a).add_(torch.sigmoid(ml_b)).mul_(ml_a.add_(ml_b))
        fused.masked_fill_(~keep[s:e, None, None], float("-inf"))
        value, index = fused.max(0)  # first index among ties; much faster than argmax(0)
        better = value > best_value
        best_value = torch.where(better, value, best_value)
        owner = torch.where(better, index + s, owner)
    return owner


def _assemble(
    semantic_logits: Tensor,
    owner: Tensor,
    scores: Tensor,
    labels: Tensor,
    num_stuff: int,
    category_ids: Tensor,
    label_divisor: int,
    stuff_area: float,
) -> FusionOutput:
    """Slots, ids and scores from the instance owner map ([H, W], K = none) and the semantics."""
    c, h, w = semantic_logits.shape
    k = scores.shape[0]
    s = num_stuff
    device = semantic_logits.device
    semantic = semantic_logits.max(0).indices
    prob = torch.softmax(semantic_logits, 0).gather(0, semantic[None])[0]
    is_instance = owner < k
    stuff_pixel = ~is_instance & (semantic < s)
    stuff_slot = torch.where(stuff_pixel, semantic, s)  # s = not stuff
    stuff_area_px = torch.bincount(stuff_slot.reshape(-1), minlength=s + 1)
    big_enough = stuff_area_px >= stuff_area
    big_enough[s] = False
    stuff_slot = torch.where(big_enough[stuff_slot], stuff_slot, s)
    index_map = torch.where(
        is_instance, owner + (1 + s), torch.where(stuff_slot < s, stuff_slot + 1, 0)
    )

    stuff_kept_area = torch.bincount(stuff_slot.reshape(-1), minlength=s + 1)[:s]
    prob_sum = torch.zeros(s + 1, dtype=torch.float64, device=device).index_add_(
        0, stuff_slot.reshape(-1), prob.reshape(-1).to(torch.float64)
    )[:s]
    stuff_scores = (prob_sum / stuff_kept_area.clamp(min=1)).float()

    # Instance ids: 1.. per category, in score order, over detections that kept pixels.
    instance_area = torch.bincount(owner.reshape(-1), minlength=k + 1)[:k]
    per_class = F.one_hot(labels, c) * (instance_area > 0)[:, None]
    rank = per_class.cumsum(0).gather(1, labels[:, None])[:, 0]
    category_ids = category_ids.to(device=device, dtype=torch.int64)
    zero = torch.zeros(1, dtype=torch.int64, device=device)
    values = torch.cat(
        [zero, category_ids[:s] * label_divisor, category_ids[labels] * label_divisor + rank]
    )
    slot_scores = torch.cat([zero.float(), stuff_scores, scores.float()])
    return FusionOutput(index_map=index_map, values=values, scores=slot_scores, num_stuff=s)


# -- results -------------------------------------------------------------------------------
def resize_index_map(index_map: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize of an integer map (pixel-centre aligned, exact integers).

    Args:
        index_map: Tensor[h, w] integer.
        size: ``(H, W)`` of the output.

    Returns:
        Tensor[H, W] of the same dtype; output pixel ``(y, x)`` takes input pixel
        ``(floor((y + 0.5) * h / H), floor((x + 0.5) * w / W))``.
    """
    h, w = index_map.shape
    out_h, out_w = int(size[0]), int(size[1])
    if (out_h, out_w) == (h, w):
        return index_map
    device = index_map.device
    rows = (torch.arange(out_h, device=device) * 2 + 1) * h // (2 * out_h)
    cols = (torch.arange(out_w, device=device) * 2 + 1) * w // (2 * out_w)
    return index_map.index_select(0, rows).index_select(1, cols)


def segment_stats_torch(index_map: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Torch twin of :func:`panoptic_ros.result.segment_stats` (same results, on device).

    Args:
        index_map: Tensor[H, W] int64 in ``0..count-1``.
        count: number of segment indices.

    Returns:
        ``areas`` Tensor[count] int64 and ``boxes`` Tensor[count, 4] int64 ``(x, y, w, h)``;
        empty segments get area 0 and box ``(0, 0, 0, 0)``.
    """
    h, w = index_map.shape
    device = index_map.device
    flat = index_map.reshape(-1)
    areas = torch.bincount(flat, minlength=count)[:count]
    ys = torch.arange(h, device=device)
    xs = torch.arange(w, device=device)
    rows = torch.bincount((ys[:, None] * count + index_map).reshape(-1), minlength=h * count)
    cols = torch.bincount((xs[None, :] * count + index_map).reshape(-1), minlength=w * count)
    rows = rows.reshape(h, count) > 0
    cols = cols.reshape(w, count) > 0
    y0 = torch.where(rows, ys[:, None], h).amin(0)
    y1 = torch.where(rows, ys[:, None] + 1, 0).amax(0)
    x0 = torch.where(cols, xs[:, None], w).amin(0)
    x1 = torch.where(cols, xs[:, None] + 1, 0).amax(0)
    boxes = torch.stack([x0, y0, x1 - x0, y1 - y0], 1)
    boxes = torch.where((areas > 0)[:, None], boxes, 0)
    return areas, boxes


def to_panoptic_result(
    output: FusionOutput,
    label_set: LabelSet,
    label_divisor: int,
    size: Sequence[int] | None = None,
) -> PanopticResult:
    """A :class:`PanopticResult` from a fusion output, optionally resized to ``size``.

    The id map crosses to the host once; segment areas and boxes are measured on the device
    (equal to :meth:`PanopticResult.from_ids` on the same map) and cross as one small table.

    Args:
        output: the fusion of one image.
        label_set: the categories the ids refer to.
        label_divisor: the encoding's divisor.
        size: ``(H, W)`` of the result; nearest-neighbour resize of the slot map when it
            differs from the fusion resolution. ``None``: the fusion resolution.
    """
    index_map = output.index_map if size is None else resize_index_map(output.index_map, size)
    count = output.values.shape[0]
    areas, boxes = segment_stats_torch(index_map, count)
    table = torch.cat(
        [output.values[:, None], areas[:, None], boxes, output.scores[:, None].double()], 1
    ).to(torch.float64)  # [count, 7]; ids < 2**31 are exact in float64
    ids = output.values[index_map].to(torch.int32).cpu().numpy()
    table_np = table.cpu().numpy()
    present = (table_np[:, 1] > 0) & (table_np[:, 0] != VOID)
    rows = np.flatnonzero(present)
    rows = rows[np.argsort(table_np[rows, 0], kind="stable")]
    segments = []
    for r in rows.tolist():
        value, area, x, y, bw, bh = (int(v) for v in table_np[r, :6])
        cat, inst = divmod(value, label_divisor)
        segments.append(
            Segment(
                id=value,
                category_id=cat,
                is_thing=label_set.is_thing(cat),
                instance_id=inst,
                score=float(table_np[r, 6]),
                area=area,
                bbox=(x, y, bw, bh),
            )
        )
    return PanopticResult(ids=ids, segments=segments, label_divisor=label_divisor)
