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

Two execution paths give the same output, selected by device (:data:`BOX_LOOP_DEVICES`):

* *Box by box* (the CPU): every detection is pasted, filtered and fused only inside its box
  window, in a Python loop over detections (a batched op would need ``K x H x W`` memory and
  work). ``FL`` is exactly 0 outside a detection's box, so the dense argmax equals a sequence of
  strict ``>`` updates inside each kept box, in score order, plus one rule outside the boxes:
  where every stuff logit is negative, the first kept detection's ``FL = 0`` wins (see
  :func:`_fused_logit_walk`).
* *Batched* (other devices): all masks pasted at once, the overlap filter as a fixed-point
  update (:func:`greedy_overlap_filter`), ``FL`` of the kept detections in chunks.

Pasting is separable two-tap interpolation by gathers, products and sums, so a pixel's pasted
logit is the same bit for bit in a box window, in the batched paste and on any device. The
dense part, the same on both paths, is one semantic pass in row blocks (:func:`_semantic_pass`):
no softmax (the argmax class's probability is ``1 / sum_c exp(l_c - max_c l_c)``, summed per
segment in float64) and no ``argmax`` kernel (exact first-maximum codes from ``sign``).
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
"""Device types on which fusion works box by box (paste, overlap filter and ``FL``)."""

STRATEGIES = ("efficientps", "panoptic_fpn")
"""Fusion strategies accepted by :func:`fuse`."""

CHUNK_ELEMENTS = 1 << 25
"""Batched path: detections are pasted and fused in chunks of at most this many ``K x H x W``
elements (memory bound)."""

BLOCK_ELEMENTS = {"cpu": 1 << 19}
"""Semantic pass: logits (``C x rows x W``) per row block, by device type; a CPU block and its
two temporaries stay in cache. Other devices: :data:`DEFAULT_BLOCK_ELEMENTS`."""

DEFAULT_BLOCK_ELEMENTS = 1 << 26
"""Semantic pass block on devices not in :data:`BLOCK_ELEMENTS` (bounds temporary memory)."""

LANES = 8
"""Semantic pass: interleaved accumulators of the per-slot probability sums."""

LOG2E = 1.4426950408889634
"""``log2(e)``: ``exp(x) = exp2(x * LOG2E)``."""

VECTOR_PAD = 64
"""Window buffers for ``FL`` are padded to a multiple of this many elements (see
:func:`_fused_logit_window`)."""


@dataclass
class FusionOutput:
    """The panoptic fusion of one image, on the device of its inputs.

    Pixels point at *slots*: slot 0 is void, slots ``1..S`` the stuff classes (training index
    ``slot - 1``), slots ``S + 1 .. S + K`` the detections in descending score order. Slots
    without pixels are simply absent from the map. A stuff class whose region is smaller than
    the stuff area threshold keeps its slot, with value 0 (void) and score 0.

    Attributes:
        index_map: Tensor[H, W] int32 slot per pixel.
        values: Tensor[1 + S + K] int64 panoptic id per slot
            (``category_id * label_divisor + instance``; 0 = void).
        scores: Tensor[1 + S + K] float32: mean class probability over its pixels for stuff,
            detection score for instances, 0 for void and for stuff slots without pixels.
        num_stuff: ``S``.
    """

    index_map: Tensor
    values: Tensor
    scores: Tensor
    num_stuff: int

    @property
    def ids(self) -> Tensor:
        """Tensor[H, W] int32 panoptic id map (0 = void)."""
        return lookup_ids(self.values, self.index_map)


def lookup_ids(values: Tensor, index_map: Tensor) -> Tensor:
    """Tensor[h, w] int32 ``values[index_map]``, through an int32 table (no int64 image).

    Args:
        values: Tensor[N] int64 panoptic id per slot, below 2**31.
        index_map: Tensor[h, w] int32 or int64 slots.
    """
    flat = values.to(torch.int32).index_select(0, index_map.reshape(-1))
    return flat.view(index_map.shape)


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


def box_windows(boxes: Tensor, size: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """Each box's interior as a pixel window: the rows and columns of :func:`box_interior`.

    Args:
        boxes: Tensor[K, 4] float ``(x0, y0, x1, y1)``.
        size: ``(H, W)``.

    Returns:
        K host tuples ``(x0, y0, x1, y1)`` of ints: pixel ``(y, x)`` is inside box ``k`` iff
        ``x0 <= x < x1`` and ``y0 <= y < y1``; an empty interior has ``x1 == x0`` or
        ``y1 == y0``. One host sync.
    """
    rows, cols = box_interior(boxes, size)
    spans = []
    for inside in (cols, rows):
        n = inside.shape[1]
        index = torch.arange(n, device=boxes.device)
        lo = torch.where(inside, index, n).amin(1)
        hi = torch.where(inside, index + 1, 0).amax(1)
        spans += [lo, torch.maximum(hi, lo)]
    x0, x1, y0, y1 = spans
    return [tuple(s) for s in torch.stack([x0, y0, x1, y1], 1).tolist()]


def _taps(lo: Tensor, hi: Tensor, centres: Tensor, m: int) -> tuple[Tensor, ...]:
    """Two-tap linear interpolation of ``m`` mask cells onto output pixels, along one axis.

    Output pixel centre ``c`` (``p + 0.5``, float32) maps to mask coordinate
    ``t = (c - lo) / (hi - lo) * m - 0.5``, clamped to ``[0, m - 1]`` (border replication, as
    ``F.interpolate(..., align_corners=False)``); it reads cells ``i0 = floor(t)`` and
    ``i1 = min(i0 + 1, m - 1)`` with weights ``1 - f`` and ``f``, ``f = t - i0``; pixels outside
    ``[lo, hi)`` get weights 0. ``lo``, ``hi`` (float32 box edges) broadcast against
    ``centres``; every value depends only on its own pixel and box.

    Returns:
        ``i0``, ``i1`` int64 and ``w0``, ``w1`` float32, each of the broadcast shape.
    """
    t = ((centres - lo) / (hi - lo).clamp(min=1e-6) * m - 0.5).clamp(0, m - 1)
    i0 = t.floor()
    frac = t - i0  # exact
    inside = (centres >= lo) & (centres < hi)
    i0 = i0.long()
    return i0, (i0 + 1).clamp(max=m - 1), (1.0 - frac) * inside, frac * inside


def _centres(n: int, device: torch.device) -> Tensor:
    """Tensor[n] float32 pixel centres ``0.5 .. n - 0.5``."""
    return torch.arange(n, device=device, dtype=torch.float32) + 0.5


def paste_mask_logits(mask_logits: Tensor, boxes: Tensor, size: Sequence[int]) -> Tensor:
    """Paste per-box mask logits into full images, batched (no loop over boxes).

    Separable bilinear resampling (as a per-box ``F.interpolate(bilinear,
    align_corners=False)`` of the mask to the box, within float rounding): each row of mask
    cells is interpolated along x, ``C = M[:, i0x] * w0x + M[:, i1x] * w1x``, then the output
    rows along y, ``C[i0y] * w0y + C[i1y] * w1y`` (:func:`_taps`). Only gathers, products and
    sums, each rounded on its own: a pixel's value is the same on every device and whether it
    is computed here or in its box window (:func:`paste_mask_window`).

    Args:
        mask_logits: Tensor[K, M, M] float, one mask logit map per box.
        boxes: Tensor[K, 4] float ``(x0, y0, x1, y1)`` pixels.
        size: ``(H, W)`` of the output.

    Returns:
        Tensor[K, H, W] float32: the logits inside each box, 0 outside.
    """
    h, w = int(size[0]), int(size[1])
    k, mh, mw = mask_logits.shape
    masks, boxes = mask_logits.float(), boxes.float()
    if k == 0:
        return masks.new_zeros((0, h, w))
    x0, x1, wx0, wx1 = _taps(boxes[:, 0:1], boxes[:, 2:3], _centres(w, boxes.device), mw)
    y0, y1, wy0, wy1 = _taps(boxes[:, 1:2], boxes[:, 3:4], _centres(h, boxes.device), mh)
    cols = masks.gather(2, x0[:, None].expand(k, mh, w)).mul_(wx0[:, None])  # [K, M, W]
    cols.add_(masks.gather(2, x1[:, None].expand(k, mh, w)).mul_(wx1[:, None]))
    out = cols.gather(1, y0[:, :, None].expand(k, h, w)).mul_(wy0[:, :, None])  # [K, H, W]
    return out.add_(cols.gather(1, y1[:, :, None].expand(k, h, w)).mul_(wy1[:, :, None]))


def _window_taps(
    boxes: Tensor, windows: Sequence[Sequence[int]], m: int, axis: int
) -> list[tuple[Tensor, ...]]:
    """:func:`_taps` of many box windows along one axis, computed in one go.

    Args:
        boxes: Tensor[N, 4] float32 ``(x0, y0, x1, y1)``.
        windows: N windows ``(x0, y0, x1, y1)`` (:func:`box_windows`).
        m: mask cells along the axis.
        axis: 0 for rows (y), 1 for columns (x).

    Returns:
        Per window ``(i0, i1, w0, w1)`` of its ``n_i`` pixels (``y1 - y0`` or ``x1 - x0``):
        the values :func:`paste_mask_logits` uses for them.
    """
    device = boxes.device
    starts = [window[1 - axis] for window in windows]
    lengths = [window[3 - axis] - window[1 - axis] for window in windows]
    owner = torch.repeat_interleave(
        torch.arange(len(windows), device=device), torch.tensor(lengths, device=device)
    )
    shift = torch.tensor(
        [start - offset for start, offset in zip(starts, np.cumsum([0] + lengths[:-1]))],
        device=device,
    )
    pixels = torch.arange(owner.shape[0], device=device) + shift[owner]  # ints < 2**24: exact
    lo, hi = boxes[owner, 1 - axis], boxes[owner, 3 - axis]
    taps = [tap.split(lengths) for tap in _taps(lo, hi, pixels.float() + 0.5, m)]
    return list(zip(*taps, strict=True))


def paste_mask_window(mask_logits: Tensor, box: Tensor, window: Sequence[int]) -> Tensor:
    """One box's pasted mask logits inside its window, no full-image tensor.

    Args:
        mask_logits: Tensor[M, M] float.
        box: Tensor[4] float ``(x0, y0, x1, y1)``.
        window: ``(x0, y0, x1, y1)`` pixel window (:func:`box_windows`), not empty.

    Returns:
        Tensor[y1 - y0, x1 - x0] float32, equal to ``paste_mask_logits(...)[k, y0:y1, x0:x1]``
        bit for bit (outside the box interior the pasted logits are 0 anyway).
    """
    boxes = box.float()[None]
    mh, mw = mask_logits.shape
    rows, cols = _window_taps(boxes, [window], mh, 0), _window_taps(boxes, [window], mw, 1)
    return _paste_window(mask_logits, rows[0], cols[0])


def _paste_window(mask_logits: Tensor, rows: Sequence[Tensor], cols: Sequence[Tensor]) -> Tensor:
    """Tensor[h, w] float32 pasted logits from Tensor[M, M] and a window's taps.

    The same operations per pixel as :func:`paste_mask_logits` (columns, then rows).
    """
    masks = mask_logits.float()
    x0, x1, wx0, wx1 = cols
    y0, y1, wy0, wy1 = rows
    c = masks.index_select(1, x0).mul_(wx0).add_(masks.index_select(1, x1).mul_(wx1))
    out = c.index_select(0, y0).mul_(wy0[:, None])
    return out.add_(c.index_select(0, y1).mul_(wy1[:, None]))


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


def _claim(
    claimed: Tensor, window: Sequence[int], binary: Tensor, overlap_threshold: float,
    new_pixels: bool = False,
) -> Tensor | bool:
    """One step of the sequential overlap filter, inside one box window (host decision).

    Args:
        claimed: Tensor[H, W] bool, pixels of the masks kept so far; updated in place.
        window: ``(x0, y0, x1, y1)`` of the mask's box; the mask is empty outside.
        binary: Tensor[y1 - y0, x1 - x0] bool, the mask inside the window.
        overlap_threshold: largest claimed fraction that still keeps a mask.
        new_pixels: return the pixels the mask claims first instead of ``True``.

    Returns:
        ``False`` when the mask is empty or overlaps too much; else ``True`` or, with
        ``new_pixels``, Tensor[y1 - y0, x1 - x0] bool ``binary & ~claimed`` (before the update).
    """
    x0, y0, x1, y1 = window
    area = int(binary.sum(dtype=torch.int32))  # a window has fewer than 2**31 pixels
    if area == 0:
        return False
    taken = claimed[y0:y1, x0:x1]
    # Python's float64 division, as the batched filter's
    if int((binary & taken).sum(dtype=torch.int32)) / area > overlap_threshold:
        return False
    new = binary & ~taken if new_pixels else True
    taken |= binary
    return new


def greedy_overlap_filter_boxes(
    masks: Tensor, boxes: Tensor, candidates: Tensor, overlap_threshold: float
) -> tuple[Tensor, Tensor]:
    """The same decisions as :func:`greedy_overlap_filter`, one mask at a time inside its box.

    Every step touches only the pixels of one box, so the work is the sum of the box areas
    instead of ``K x H x W`` per round: the cheaper choice on a CPU, where kernel launches and
    host syncs (one per mask) cost little.

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
    claimed = torch.zeros((h, w), dtype=torch.bool, device=device)
    keep = [False] * k
    for i, (window, candidate) in enumerate(
        zip(box_windows(boxes, (h, w)), candidates.tolist(), strict=True)
    ):
        x0, y0, x1, y1 = window
        if not candidate or x1 == x0 or y1 == y0:
            continue
        new = _claim(claimed, window, masks[i, y0:y1, x0:x1], overlap_threshold, True)
        if new is not False:
            keep[i] = True
            owner[y0:y1, x0:x1].masked_fill_(new, i)
    return torch.tensor(keep, dtype=torch.bool, device=device), owner


def overlap_filter(
    masks: Tensor, boxes: Tensor, candidates: Tensor, overlap_threshold: float
) -> tuple[Tensor, Tensor]:
    """The box-by-box filter on :data:`BOX_LOOP_DEVICES`, the batched one elsewhere.

    :func:`greedy_overlap_filter_boxes` or :func:`greedy_overlap_filter`, for masks pasted
    already; :func:`fuse` itself pastes and filters inside the box windows on
    the CPU. Args and returns as :func:`greedy_overlap_filter_boxes`.
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
    """Panoptic fusion of one image (see the module docstring for the rules and the paths).

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
    s = num_stuff
    order = torch.sort(scores, descending=True, stable=True).indices
    mask_logits, boxes = mask_logits[order], boxes[order].float()
    scores, labels = scores[order].float(), labels[order]
    k = boxes.shape[0]
    settings = dict(efficientps=strategy == "efficientps", num_stuff=s,
                    score_threshold=score_threshold, overlap_threshold=overlap_threshold)
    # Instance slots (S + 1 + k) first; the semantic pass fills in the rest.
    index_map = torch.zeros((h, w), dtype=torch.int32, device=semantic_logits.device)
    outside = None
    if k and semantic_logits.device.type in BOX_LOOP_DEVICES:
        outside = _box_local_instances(
            semantic_logits, mask_logits, boxes, scores, labels, index_map, **settings
        )
    elif k:
        owner = _batched_owner(semantic_logits, mask_logits, boxes, scores, labels, **settings)
        index_map = torch.where(owner < k, owner + (1 + s), 0).to(torch.int32)
    area, prob_sum = _semantic_pass(semantic_logits, index_map, s, 1 + s + k, outside)
    return _assemble(
        index_map, area, prob_sum, scores, labels, s, category_ids, label_divisor, stuff_area
    )


def efficientps_fusion(*args, **kwargs) -> FusionOutput:
    """:func:`fuse` with ``strategy="efficientps"``."""
    return fuse(*args, strategy="efficientps", **kwargs)


def panoptic_fpn_fusion(*args, **kwargs) -> FusionOutput:
    """:func:`fuse` with ``strategy="panoptic_fpn"``."""
    return fuse(*args, strategy="panoptic_fpn", **kwargs)


# -- box-by-box path (CPU) -----------------------------------------------------------------
def _box_local_instances(
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
) -> tuple[int, tuple[int, int, int, int]] | None:
    """Paste, filter and (EfficientPS) fuse the sorted detections one box window at a time.

    A Python loop over detections: each step touches only its window (a batched op would need
    ``K x H x W`` memory). Decisions are host values (free on the CPU).

    Args:
        index_map: Tensor[H, W] int32, 0 everywhere; instance slots ``S + 1 + k`` are written
            in place.
        Others as :func:`fuse`, detections sorted by descending score.

    Returns:
        :func:`_fused_logit_walk`'s rule for the pixels outside the kept boxes, or ``None``.
    """
    h, w = index_map.shape
    s = num_stuff
    claimed = torch.zeros((h, w), dtype=torch.bool, device=index_map.device)
    candidates, classes = (scores >= score_threshold).tolist(), labels.tolist()
    todo = [(i, window) for i, (window, candidate) in enumerate(
        zip(box_windows(boxes, (h, w)), candidates, strict=True)
    ) if candidate and window[2] > window[0] and window[3] > window[1]]
    if not todo:
        return None
    index, windows = zip(*todo, strict=True)
    selected = boxes[list(index)]
    mh, mw = mask_logits.shape[1:]
    rows, cols = _window_taps(selected, windows, mh, 0), _window_taps(selected, windows, mw, 1)
    kept = []
    for i, window, row_taps, col_taps in zip(index, windows, rows, cols, strict=True):
        x0, y0, x1, y1 = window
        pasted = _paste_window(mask_logits[i], row_taps, col_taps)
        new = _claim(claimed, window, pasted > 0, overlap_threshold, not efficientps)
        if new is False:
            continue
        if efficientps:
            kept.append((s + 1 + i, window, classes[i], pasted))
        else:
            index_map[y0:y1, x0:x1].masked_fill_(new, s + 1 + i)
    if not kept:
        return None
    return _fused_logit_walk(semantic_logits, kept, index_map, s)


def _fused_logit_walk(
    semantic_logits: Tensor,
    kept: list[tuple[int, tuple[int, int, int, int], int, Tensor]],
    index_map: Tensor,
    num_stuff: int,
) -> tuple[int, tuple[int, int, int, int]] | None:
    """EfficientPS's argmax over ``[stuff; FL of the kept detections]``, box by box.

    An argmax with ties to the lower channel is a scan over the channels in order that replaces
    the running maximum only by a strictly greater value. ``FL_k`` is exactly 0 outside box
    ``k`` (``ML_A = ML_B = 0``), so, starting from the stuff maximum, kept detection ``k`` (in
    score order) wins a pixel inside its box where ``FL_k > best`` and outside it where
    ``0 > best``. ``best`` never decreases: after the first kept detection, ``best >= 0``
    outside its box, so the second rule can fire only inside the first kept box (where every
    stuff logit is negative: few pixels, kept as a list). Outside the bounding rectangle ``U``
    of the kept boxes the first kept detection wins exactly where the stuff maximum is
    negative, which :func:`_semantic_pass` applies; inside ``U`` this function writes the
    winners, reading the stuff maximum over ``U`` once.

    Args:
        semantic_logits: Tensor[C, H, W] float32.
        kept: ``(slot, window, class, pasted)`` per kept detection in score order: its slot,
            box window ``(x0, y0, x1, y1)``, semantic class and Tensor[h, w] pasted logits.
        index_map: Tensor[H, W] int32, written in place inside ``U``.
        num_stuff: ``S``; with no stuff classes a zero channel stands in, so ``FL <= 0`` stays
            unclaimed.

    Returns:
        ``(slot of the first kept detection, U as (x0, y0, x1, y1))``, or ``None`` without
        stuff classes (nothing outside ``U`` can be won).
    """
    s = num_stuff
    windows = [window for _, window, _, _ in kept]
    ux0, uy0 = min(x0 for x0, _, _, _ in windows), min(y0 for _, y0, _, _ in windows)
    ux1, uy1 = max(x1 for _, _, x1, _ in windows), max(y1 for _, _, _, y1 in windows)
    region = index_map[uy0:uy1, ux0:ux1]
    if s:
        best = semantic_logits[:s, uy0:uy1, ux0:ux1].amax(0)
    else:
        best = semantic_logits.new_zeros((uy1 - uy0, ux1 - ux0))
    # Pixels of U where `0 > best` can fire: few (every stuff logit negative), so they are
    # kept as a list of (y, x) rather than rescanned densely at every step.
    rows = (best.amin(1) < 0).nonzero()[:, 0] if s else best.new_zeros(0, dtype=torch.int64)
    row, xs = (best.index_select(0, rows) < 0).nonzero().unbind(1)
    ys = rows[row]
    most = max((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in windows)
    workspace = best.new_empty(4 * -(-most // VECTOR_PAD) * VECTOR_PAD)
    for n, (slot, (x0, y0, x1, y1), cls, pasted) in enumerate(kept):
        fused = _fused_logit_window(pasted, semantic_logits[cls, y0:y1, x0:x1], workspace)
        x0, y0, x1, y1 = x0 - ux0, y0 - uy0, x1 - ux0, y1 - uy0
        if ys.shape[0]:  # detection n outside its box where 0 > best (inside U)
            take = ~((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1))
            if n:
                take &= best[ys, xs] < 0
            region[ys[take], xs[take]] = slot
            best[ys[take], xs[take]] = 0.0
        sub = best[y0:y1, x0:x1]
        better = fused > sub
        torch.maximum(sub, fused, out=sub)
        region[y0:y1, x0:x1].masked_fill_(better, slot)
        if ys.shape[0]:  # best >= 0 outside the first box from here on
            still = best[ys, xs] < 0
            ys, xs = ys[still], xs[still]
    return (kept[0][0], (ux0, uy0, ux1, uy1)) if s else None


def _fused_logit_window(pasted: Tensor, semantic: Tensor, workspace: Tensor) -> Tensor:
    """``FL`` over one box window, Tensor[h, w] float32 (a view of ``workspace``).

    Args:
        pasted: Tensor[h, w] float32 pasted mask logits (``ML_A / 4``).
        semantic: Tensor[h, w] float32 (any strides), the class's semantic logits (``ML_B``).
        workspace: Tensor[4 * n] float32 or more, ``n`` = ``h * w`` rounded up to
            :data:`VECTOR_PAD` (reused from window to window: no fresh pages each time).

    Both sigmoids run as one call on a buffer whose halves are padded to :data:`VECTOR_PAD`
    elements: torch evaluates ``exp`` in vector registers except in a loop's scalar tail, whose
    rounding may differ in the last bit; with the padding every pixel of the window takes the
    vector path, as (with one thread) all but the last few elements of a whole-image
    evaluation do.
    """
    h, w = pasted.shape
    n = h * w
    half = -(-n // VECTOR_PAD) * VECTOR_PAD
    buf, sig = workspace[:2 * half], workspace[2 * half:4 * half]
    buf[n:half].zero_()
    buf[half + n:].zero_()
    ml_a, ml_b = buf[:n], buf[half:half + n]
    torch.mul(pasted.reshape(n), MASK_LOGIT_SCALE, out=ml_a)
    ml_b.view(h, w).copy_(semantic)
    torch.sigmoid(buf, out=sig)
    fused = sig[:n].add_(sig[half:half + n]).mul_(ml_a.add_(ml_b))
    return fused.view(h, w)


# -- batched path (other devices) ----------------------------------------------------------
def _batched_owner(
    semantic_logits: Tensor,
    mask_logits: Tensor,
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    *,
    efficientps: bool,
    num_stuff: int,
    score_threshold: float,
    overlap_threshold: float,
) -> Tensor:
    """Tensor[H, W] int64: each pixel's winning detection (``K`` for none), batched.

    All masks pasted (in chunks of :data:`CHUNK_ELEMENTS`), the fixed-point overlap filter,
    then the first kept mask per pixel (Panoptic FPN) or the ``FL`` argmax (EfficientPS).
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
    if not efficientps:
        return first.reshape(h, w)
    return _fused_logit_owner(semantic_logits, mask_logits, boxes, labels, keep, num_stuff, chunk)


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


# -- semantic pass and assembly ------------------------------------------------------------
def _semantic_pass(
    logits: Tensor,
    index_map: Tensor,
    num_stuff: int,
    slots: int,
    outside: tuple[int, tuple[int, int, int, int]] | None,
) -> tuple[Tensor, Tensor]:
    """Stuff slots of the semantic argmax, per-slot areas and probability sums, in row blocks.

    All float ops that torch vectorises over a block of ``C x rows x W`` logits (``max(0)``
    with indices and ``argmax(0)`` are not vectorised):

    * argmax: with ``d_c = l_c - max_c l_c``, ``sign(d_c)`` is 0 exactly at the maximal
      channels and -1 elsewhere, so ``max_c(w_c + BIG * sign(d_c))`` is the largest ``w`` among
      the maximal channels. ``w`` decreases with the channel (ties go to the lower one) and is
      congruent to the slot modulo ``2**e > S``: ``(S - c) * 2**e + c + 1`` for stuff class
      ``c`` (slot ``c + 1``), ``2**e`` for every thing class (slot 0, void: a thing argmax is
      void unless an instance claims the pixel). The thing classes share one weight, so they
      enter as one channel, ``max`` of their ``d``.
    * probability of the argmax class, no softmax: ``1 / sum_c exp(d_c)``, with
      ``exp(d) = exp2(d * log2(e))`` (torch's float32 ``exp2`` is several times faster than its
      ``exp``; relative error below 1e-6 per pixel), summed per slot in float64.

    Args:
        logits: Tensor[C, H, W] float32.
        index_map: Tensor[H, W] int32: instance slots (``> S``), 0 elsewhere; the stuff slot
            of the semantic argmax (or 0, void) is written where it is 0, in place.
        num_stuff: ``S``.
        slots: ``1 + S + K``.
        outside: ``(slot, (x0, y0, x1, y1))``: pixels outside that window whose stuff maximum
            is negative take ``slot`` (:func:`_fused_logit_walk`); or ``None``.

    Returns:
        ``area`` Tensor[slots] int64 pixels per slot and ``prob_sum`` Tensor[slots] float64,
        the sum of the argmax class's probability over each slot's pixels.
    """
    c, h, w = logits.shape
    s = num_stuff
    device = logits.device
    e = s.bit_length()  # 2**e > S
    things = int(c > s)
    channel = torch.arange(s + things, dtype=torch.float64, device=device)
    weight = torch.where(channel < s, (s - channel) * 2**e + channel + 1, 2**e)
    big = 2.0 ** (s * 2**e + s + 1).bit_length()  # > every weight
    # Weights (and weight - big) are integers; float32 holds them exactly below 2**24.
    code_dtype = torch.float32 if big <= 2**24 else torch.float64
    weight = weight.to(code_dtype)[:, None, None]
    elements = BLOCK_ELEMENTS.get(device.type, DEFAULT_BLOCK_ELEMENTS)
    rows = max(1, min(h, elements // max(1, c * w)))
    diff = torch.empty((c, rows, w), dtype=torch.float32, device=device)
    code = torch.empty((s + things, rows, w), dtype=code_dtype, device=device)
    # Probability sums interleave LANES accumulators: consecutive pixels (mostly one slot)
    # would otherwise form one serial chain of float64 additions.
    lane = torch.arange(rows * w, dtype=torch.int32, device=device) % LANES * slots
    prob_sum = torch.zeros(LANES * slots, dtype=torch.float64, device=device)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        # One streaming read of the rows into the buffer: reducing over the channels of the
        # strided input directly reads C planes at once (slow for large C).
        block = diff[:, :r1 - r0]
        block.copy_(logits[:, r0:r1])
        top = block.amax(0)
        if outside is not None:
            negative = block[:s].amax(0) < 0
        d = block.sub_(top)
        sign = code[:, :r1 - r0]
        if code_dtype == torch.float32:
            torch.sign(d[:s], out=sign[:s])
        else:  # sign(out=) keeps the input's dtype
            sign[:s].copy_(d[:s]).sign_()
        if things:
            sign[s].copy_(d[s:].amax(0)).sign_()
        top = torch.add(weight, sign, alpha=big, out=sign).amax(0)
        out = index_map[r0:r1]
        torch.maximum(out, top.to(torch.int32).bitwise_and_(2**e - 1), out=out)  # instances win
        if outside is not None:
            slot, (x0, y0, x1, y1) = outside
            if y0 < r1 and y1 > r0:
                negative[max(y0, r0) - r0:min(y1, r1) - r0, x0:x1] = False
            out.masked_fill_(negative, slot)
        prob = torch.sum(d.mul_(LOG2E).exp2_(), 0).reciprocal_().view(-1).double()
        flat = out.view(-1)
        prob_sum += torch.bincount(
            flat + lane[:flat.shape[0]], weights=prob, minlength=LANES * slots
        )
    area = torch.bincount(index_map.view(-1), minlength=slots)
    prob_sum = prob_sum.view(LANES, slots).sum(0)
    return area, prob_sum


def _assemble(
    index_map: Tensor,
    area: Tensor,
    prob_sum: Tensor,
    scores: Tensor,
    labels: Tensor,
    num_stuff: int,
    category_ids: Tensor,
    label_divisor: int,
    stuff_area: float,
) -> FusionOutput:
    """Ids and scores per slot; stuff slots below ``stuff_area`` pixels get id 0 (void)."""
    s = num_stuff
    c = category_ids.shape[0]
    device = index_map.device
    stuff_px = area[1:s + 1]
    big_enough = stuff_px >= stuff_area  # the others become void through their value
    stuff_scores = (torch.where(big_enough, prob_sum[1:s + 1], 0.0)
                    / stuff_px.clamp(min=1)).float()

    # Instance ids: 1.. per category, in score order, over detections that kept pixels.
    per_class = F.one_hot(labels, c) * (area[s + 1:] > 0)[:, None]
    rank = per_class.cumsum(0).gather(1, labels[:, None])[:, 0]
    category_ids = category_ids.to(device=device, dtype=torch.int64)
    zero = torch.zeros(1, dtype=torch.int64, device=device)
    values = torch.cat([
        zero, category_ids[:s] * label_divisor * big_enough,
        category_ids[labels] * label_divisor + rank,
    ])
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
    ids = lookup_ids(output.values, index_map).cpu().numpy()
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
