"""Instance pixels box by box: paste, overlap filter and ``FL`` inside each detection's window.

The CPU path (a batched op would need ``K x H x W`` memory and work; here each detection costs
its window, decisions are host values). Guarantees, with detections sorted by descending score:
the same index map as :mod:`panoptic_ros.models.fusion.batched` bit for bit, where the pixels a
detection wins hold its slot ``S + 1 + k`` (int32) and every other pixel holds 0, plus, for
EfficientPS, an :class:`~panoptic_ros.models.fusion.semantic.OutsideRule` for the pixels
outside every kept box, applied by the semantic pass.

Why outside pixels need a rule: ``FL`` is exactly 0 outside a detection's box
(``ML_A = ML_B = 0``), so the dense argmax over ``[stuff; FL of every kept detection]`` is a
scan over the channels in order that replaces the running maximum only by a strictly greater
value: starting from the stuff maximum, kept detection ``k`` (in score order) wins a pixel inside
its box where ``FL_k > best`` and outside it where ``0 > best``. ``best`` never decreases, so
after the first kept detection ``best >= 0`` outside its box and the second rule can fire only
inside the first kept box. Outside the bounding rectangle ``U`` of the kept boxes the first kept
detection wins exactly where the stuff maximum is negative (the rule handed back); inside ``U``
:func:`_fused_logit_walk` writes the winners.
"""

from __future__ import annotations

import torch
from torch import Tensor

from panoptic_ros.models.fusion.overlap import claim
from panoptic_ros.models.fusion.paste import (
    MASK_LOGIT_SCALE,
    Window,
    box_windows,
    paste_window,
    window_taps,
)
from panoptic_ros.models.fusion.semantic import OutsideRule

VECTOR_PAD = 64
"""Window buffers for ``FL`` are padded to a multiple of this many elements (see
:func:`_fused_logit_window`)."""

Kept = tuple[int, Window, int, Tensor]
"""A kept detection: its slot, window, semantic class and Tensor[h, w] pasted logits."""


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
) -> OutsideRule | None:
    """Write the pixels the detections win into ``index_map``, one box window at a time.

    Args:
        semantic_logits: Tensor[C, H, W] float32.
        mask_logits: Tensor[K, M, M] float, sorted by descending score.
        boxes: Tensor[K, 4] float32, sorted alike.
        scores: Tensor[K] float32, descending.
        labels: Tensor[K] int64 semantic (training) class of each detection.
        index_map: Tensor[H, W] int32, 0 everywhere; detection slots ``S + 1 + k`` are
            written in place.
        efficientps: the EfficientPS ``FL`` argmax, else Panoptic FPN (a kept detection takes
            the pixels of its mask no earlier one took).
        num_stuff, score_threshold, overlap_threshold: as
            :func:`~panoptic_ros.models.fusion.fuse`.

    Returns:
        The rule for the pixels outside the kept boxes (EfficientPS with stuff classes and a
        kept detection), else ``None``.
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
    rows, cols = window_taps(selected, windows, mh, 0), window_taps(selected, windows, mw, 1)
    kept: list[Kept] = []
    for i, window, row_taps, col_taps in zip(index, windows, rows, cols, strict=True):
        x0, y0, x1, y1 = window
        pasted = paste_window(mask_logits[i], row_taps, col_taps)
        new = claim(claimed, window, pasted > 0, overlap_threshold, not efficientps)
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
    semantic_logits: Tensor, kept: list[Kept], index_map: Tensor, num_stuff: int
) -> OutsideRule | None:
    """EfficientPS's argmax over ``[stuff; FL of the kept detections]`` inside ``U``.

    Args:
        semantic_logits: Tensor[C, H, W] float32.
        kept: the kept detections in score order.
        index_map: Tensor[H, W] int32, written in place inside ``U``.
        num_stuff: ``S``; with no stuff classes a zero channel stands in, so ``FL <= 0`` stays
            unclaimed.

    Returns:
        ``(slot of the first kept detection, U)``, or ``None`` without stuff classes (nothing
        outside ``U`` can be won).
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
    return OutsideRule(kept[0][0], (ux0, uy0, ux1, uy1)) if s else None


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
