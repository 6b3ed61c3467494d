"""Pasting per-box mask logits into the image: all boxes at once, or one box window at a time.

Guarantees:

* Boxes are Tensor[K, 4] float ``(x0, y0, x1, y1)`` in pixels. Pixel ``(x, y)`` lies inside a box
  when its centre satisfies ``x0 <= x + 0.5 < x1`` and ``y0 <= y + 0.5 < y1``
  (:func:`box_interior`); a box's *window* is the rectangle of those pixels (:func:`box_windows`).
* Pasted logits are float32 and exactly 0 outside the box interior.
* Pasting is separable two-tap (bilinear, ``align_corners=False``) interpolation done with
  gathers, products and sums, each rounded on its own: a pixel's pasted logit is the same bit
  for bit in the full-image paste (:func:`paste_mask_logits`), in its window
  (:func:`paste_window`), and on every device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

MASK_LOGIT_SCALE = 4.0
"""EfficientPS fuses pasted mask logits scaled by 4 (``ML_A``)."""

Window = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` host ints: pixels ``x0 <= x < x1``, ``y0 <= y < y1``."""

Taps = tuple[Tensor, Tensor, Tensor, Tensor]
"""``(i0, i1, w0, w1)`` of :func:`taps`: two mask cells (int64) and their weights (float32)."""


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


def box_windows(boxes: Tensor, size: Sequence[int]) -> list[Window]:
    """Each box's interior (:func:`box_interior`) as a pixel window; one host sync.

    Args:
        boxes: Tensor[K, 4] float ``(x0, y0, x1, y1)``.
        size: ``(H, W)``.

    Returns:
        K windows; an empty interior has ``x1 == x0`` or ``y1 == y0``.
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


def taps(lo: Tensor, hi: Tensor, centres: Tensor, m: int) -> Taps:
    """Two-tap linear interpolation of ``m`` mask cells onto output pixels, along one axis.

    Output pixel centre ``c`` (float32) maps to mask coordinate
    ``t = (c - lo) / (hi - lo) * m - 0.5``, clamped to ``[0, m - 1]`` (border replication, as
    ``F.interpolate(..., align_corners=False)``); it reads cells ``i0 = floor(t)`` and
    ``i1 = min(i0 + 1, m - 1)`` with weights ``1 - f`` and ``f``, ``f = t - i0``; pixels outside
    ``[lo, hi)`` get weights 0. ``lo``, ``hi`` (float32 box edges) broadcast against
    ``centres``; every value depends only on its own pixel and box.
    """
    t = ((centres - lo) / (hi - lo).clamp(min=1e-6) * m - 0.5).clamp(0, m - 1)
    i0 = t.floor()
    frac = t - i0  # exact
    inside = (centres >= lo) & (centres < hi)
    i0 = i0.long()
    return i0, (i0 + 1).clamp(max=m - 1), (1.0 - frac) * inside, frac * inside


def paste_mask_logits(mask_logits: Tensor, boxes: Tensor, size: Sequence[int]) -> Tensor:
    """Paste per-box mask logits into full images, all boxes at once.

    Each row of mask cells is interpolated along x, ``C = M[:, i0x] * w0x + M[:, i1x] * w1x``,
    then the output rows along y, ``C[i0y] * w0y + C[i1y] * w1y`` (:func:`taps`): a per-box
    ``F.interpolate(bilinear, align_corners=False)`` of the mask to the box, within float
    rounding.

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
    x0, x1, wx0, wx1 = taps(boxes[:, 0:1], boxes[:, 2:3], _centres(w, boxes.device), mw)
    y0, y1, wy0, wy1 = taps(boxes[:, 1:2], boxes[:, 3:4], _centres(h, boxes.device), mh)
    cols = masks.gather(2, x0[:, None].expand(k, mh, w)).mul_(wx0[:, None])  # [K, M, W]
    cols.add_(masks.gather(2, x1[:, None].expand(k, mh, w)).mul_(wx1[:, None]))
    out = cols.gather(1, y0[:, :, None].expand(k, h, w)).mul_(wy0[:, :, None])  # [K, H, W]
    return out.add_(cols.gather(1, y1[:, :, None].expand(k, h, w)).mul_(wy1[:, :, None]))


def window_taps(boxes: Tensor, windows: Sequence[Window], m: int, axis: int) -> list[Taps]:
    """:func:`taps` of the pixels of many box windows along one axis, computed in one go.

    Args:
        boxes: Tensor[N, 4] float32 ``(x0, y0, x1, y1)``.
        windows: the N boxes' windows (:func:`box_windows`).
        m: mask cells along the axis.
        axis: 0 for rows (y), 1 for columns (x).

    Returns:
        Per window, the taps of its ``y1 - y0`` rows or ``x1 - x0`` columns: the values
        :func:`paste_mask_logits` uses for those pixels.
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
    split = [tap.split(lengths) for tap in taps(lo, hi, pixels.float() + 0.5, m)]
    return list(zip(*split, strict=True))


def paste_window(mask_logits: Tensor, rows: Taps, cols: Taps) -> Tensor:
    """One box's pasted logits inside its window, no full-image tensor.

    Args:
        mask_logits: Tensor[M, M] float.
        rows, cols: the window's :func:`window_taps` along y and x.

    Returns:
        Tensor[y1 - y0, x1 - x0] float32, equal bit for bit to
        ``paste_mask_logits(...)[k, y0:y1, x0:x1]`` (the same operations per pixel).
    """
    masks = mask_logits.float()
    x0, x1, wx0, wx1 = cols
    y0, y1, wy0, wy1 = rows
    c = masks.index_select(1, x0).mul_(wx0).add_(masks.index_select(1, x1).mul_(wx1))
    out = c.index_select(0, y0).mul_(wy0[:, None])
    return out.add_(c.index_select(0, y1).mul_(wy1[:, None]))


def _centres(n: int, device: torch.device) -> Tensor:
    """Tensor[n] float32 pixel centres ``0.5 .. n - 0.5``."""
    return torch.arange(n, device=device, dtype=torch.float32) + 0.5
