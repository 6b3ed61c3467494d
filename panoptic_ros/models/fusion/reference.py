"""Plain, loop-per-instance panoptic fusion written straight from the fusion rules: the spec.

Slow and obvious on purpose, and never on a frame's path: the tests compare the fast paths of
:mod:`panoptic_ros.models.fusion` with it pixel for pixel, and ``bench/bench_fusion.py`` times
both. It lives in the package (not under ``test/``) so that both import it the ordinary way.

Inputs are the *pasted* mask logits (Tensor[K, H, W], 0 outside each box); pasting itself is
checked separately against per-box ``grid_sample``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def reference_paste(mask_logits: torch.Tensor, boxes: torch.Tensor, size) -> torch.Tensor:
    """Paste each [M, M] logit map into its box with one ``grid_sample`` per box.

    Pixel centres inside the box sample the mask bilinearly (border clamped, as
    ``align_corners=False`` resizing); everything else is 0.
    """
    h, w = size
    out = torch.zeros((len(boxes), h, w))
    for k in range(len(boxes)):
        x0, y0, x1, y1 = (float(v) for v in boxes[k])
        ys = torch.arange(h, dtype=torch.float32) + 0.5
        xs = torch.arange(w, dtype=torch.float32) + 0.5
        rows = torch.nonzero((ys >= y0) & (ys < y1))[:, 0]
        cols = torch.nonzero((xs >= x0) & (xs < x1))[:, 0]
        if len(rows) == 0 or len(cols) == 0:
            continue
        gy = (ys[rows] - y0) / (y1 - y0) * 2 - 1
        gx = (xs[cols] - x0) / (x1 - x0) * 2 - 1
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)[None]  # [1, h', w', 2]
        crop = F.grid_sample(
            mask_logits[k][None, None].float(), grid, mode="bilinear",
            padding_mode="border", align_corners=False,
        )[0, 0]
        out[k, rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1] = crop
    return out


def _inside(box, h: int, w: int) -> torch.Tensor:
    x0, y0, x1, y1 = (float(v) for v in box)
    ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    return (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)


def reference_fusion(
    strategy: str,
    semantic_logits: torch.Tensor,
    pasted: torch.Tensor,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_stuff: int,
    category_ids,
    label_divisor: int,
    score_threshold: float = 0.5,
    overlap_threshold: float = 0.5,
    stuff_area: float = 0.0,
) -> tuple[np.ndarray, dict[int, float]]:
    """Fuse one image; returns the id map (ndarray[H, W] int32) and a score per segment id.

    ``labels`` are semantic (training) indices; ``category_ids[c]`` is the dataset id of
    training index ``c``.
    """
    sem = semantic_logits.float()
    c, h, w = sem.shape
    s = num_stuff
    cats = [int(v) for v in category_ids]
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))

    owner = torch.full((h, w), -1, dtype=torch.int64)  # detection index per pixel
    claimed = torch.zeros((h, w), dtype=torch.bool)
    kept = []
    for i in order:
        if float(scores[i]) < score_threshold:
            continue
        binary = pasted[i] > 0
        area = int(binary.sum())
        if area == 0:
            continue
        overlap = int((binary & claimed).sum()) / area
        if overlap > overlap_threshold:
            continue
        kept.append(i)
        if strategy == "panoptic_fpn":
            owner[binary & ~claimed] = i
        claimed |= binary

    semantic = sem.argmax(0)
    if strategy == "efficientps" and kept:
        channels = [sem[:s]] if s else [torch.zeros((1, h, w))]
        for i in kept:
            inside = _inside(boxes[i], h, w)
            ml_a = pasted[i] * 4.0
            ml_b = torch.where(inside, sem[int(labels[i])], torch.zeros(()))
            fl = (torch.sigmoid(ml_a) + torch.sigmoid(ml_b)) * (ml_a + ml_b)
            channels.append(fl[None])
        win = torch.cat(channels).argmax(0)
        base = max(s, 1)
        for n, i in enumerate(kept):
            owner[win == base + n] = i
    elif strategy not in ("efficientps", "panoptic_fpn"):
        raise ValueError(strategy)

    ids = torch.zeros((h, w), dtype=torch.int64)
    seg_scores: dict[int, float] = {}
    prob = torch.softmax(sem, 0)
    free = owner < 0
    for cls in range(s):
        region = free & (semantic == cls)
        area = int(region.sum())
        if area == 0 or area < stuff_area:
            continue
        value = cats[cls] * label_divisor
        ids[region] = value
        seg_scores[value] = float(prob[cls][region].double().mean())
    counter: dict[int, int] = {}
    for i in order:
        region = owner == i
        if not bool(region.any()):
            continue
        cat = cats[int(labels[i])]
        counter[cat] = counter.get(cat, 0) + 1
        value = cat * label_divisor + counter[cat]
        ids[region] = value
        seg_scores[value] = float(scores[i])
    return ids.numpy().astype(np.int32), seg_scores
