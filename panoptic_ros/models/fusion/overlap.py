"""The overlap filter: masks in priority order, each dropped if too much of it is already taken.

Rule (EfficientPS fusion step 4, the Panoptic FPN heuristic alike): a mask is the pasted logit's
``> 0`` (``sigmoid > 0.5``); mask ``k`` is kept when it may be kept at all (a *candidate*: its
score reaches the threshold), is not empty, and at most ``overlap_threshold`` of its pixels
belong to masks kept before it. The claimed fraction is a Python float64 division in both
implementations, so they take the same decisions:

* :func:`greedy_overlap_filter`: every mask at once, as a fixed point (the batched path);
* :func:`claim`: one decision inside one box window (the box-by-box path).
"""

from __future__ import annotations

import torch
from torch import Tensor

from panoptic_ros.models.fusion.paste import Window

MAX_CHUNK_ELEMENTS = 2**24
"""Mask elements (masks x pixels) one round of :func:`greedy_overlap_filter` holds at once:
its transients are a few bytes per element (~64 MB at 2**24), whatever K and the image size
(unchunked, 100 masks of a 2 MP image took ~1 GB: too much for a Jetson)."""


def greedy_overlap_filter(
    masks: Tensor, candidates: Tensor, overlap_threshold: float,
    max_chunk_elements: int = MAX_CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Every keep decision at once, equal to the sequential rule.

    Instead of K dependent steps over the image, the keep vector is the fixed point of a
    batched update: given a guess ``keep``, every pixel's first kept mask (its *owner*) gives,
    for all masks at once, how much of each is owned by an earlier kept mask. Decision ``k``
    depends only on decisions ``< k``, so each round fixes at least one more leading decision
    and the fixed point is exactly the greedy result; in practice 1-3 rounds, each a few ops
    over ``[K, N]`` (in pixel chunks of at most ``max_chunk_elements / K``) and one host sync.

    Args:
        masks: Tensor[K, N] bool, binary masks (flattened) in priority order.
        candidates: Tensor[K] bool, masks allowed to be kept at all; empty masks never are.
        overlap_threshold: largest claimed fraction that still keeps a mask.
        max_chunk_elements: memory bound of one step (see :data:`MAX_CHUNK_ELEMENTS`).

    Returns:
        ``keep`` Tensor[K] bool and ``owner`` Tensor[N] int64: each pixel's first kept mask,
        ``K`` where none.
    """
    k, n = masks.shape
    device = masks.device
    if k == 0 or n == 0:
        return (
            torch.zeros(k, dtype=torch.bool, device=device),
            torch.full((n,), k, dtype=torch.int64, device=device),
        )
    dtype = torch.int16 if k < 2**15 - 1 else torch.int32
    index = torch.arange(k, device=device, dtype=dtype)[:, None]
    none = torch.tensor(k, device=device, dtype=dtype)
    area = masks.sum(1)
    eligible = candidates & (area > 0)
    area_f = area.clamp(min=1).to(torch.float64)
    step = max(1, int(max_chunk_elements) // k)
    keep = eligible
    for _ in range(k + 1):
        claimed = torch.zeros(k, dtype=torch.int64, device=device)
        owners = []
        for start in range(0, n, step):
            part = masks[:, start:start + step]
            owner = torch.where(part & keep[:, None], index, none).amin(0)  # [chunk]
            claimed += (part & (owner[None, :] < index)).sum(1)
            owners.append(owner)
        new_keep = eligible & (claimed.to(torch.float64) / area_f <= overlap_threshold)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep, torch.cat(owners).to(torch.int64)


def claim(
    claimed: Tensor, window: Window, binary: Tensor, overlap_threshold: float,
    new_pixels: bool = False,
) -> Tensor | bool:
    """One step of the sequential filter, inside one box window (a host decision).

    Args:
        claimed: Tensor[H, W] bool, pixels of the masks kept so far; updated in place.
        window: the mask's box window; the mask is empty outside it.
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
    if int((binary & taken).sum(dtype=torch.int32)) / area > overlap_threshold:
        return False
    new = binary & ~taken if new_pixels else True
    taken |= binary
    return new
