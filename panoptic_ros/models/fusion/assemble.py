"""From slots to ids: the fusion's output, its id map and its :class:`PanopticResult`.

Guarantees: slot 0 is void, slots ``1..S`` the stuff classes (training index ``slot - 1``),
slots ``S + 1 .. S + K`` the detections in descending score order. Panoptic ids are
``category_id * label_divisor + instance`` (int64 per slot, int32 in id maps; 0 = void); instance
numbers run ``1..`` per category in descending score order over the detections that kept
pixels. A stuff class smaller than the stuff area keeps its slot with id 0 and score 0.
Everything stays on the inputs' device until :func:`to_panoptic_result` copies the id map and a
small segment table to the host, once each.
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


@dataclass
class FusionOutput:
    """The panoptic fusion of one image, on the device of its inputs.

    Attributes:
        index_map: Tensor[H, W] int32 slot per pixel (module docstring).
        values: Tensor[1 + S + K] int64 panoptic id per slot.
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


def assemble(
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
    """Ids and scores per slot.

    Args:
        index_map: Tensor[H, W] int32 slots.
        area: Tensor[1 + S + K] int64 pixels per slot.
        prob_sum: Tensor[1 + S + K] float64 sum of the argmax class probability per slot.
        scores: Tensor[K] float32 detection scores, descending.
        labels: Tensor[K] int64 training index of each detection's class.
        num_stuff: ``S``.
        category_ids: Tensor[C] int64 dataset category id of each training index.
        label_divisor: the id encoding's divisor.
        stuff_area: stuff slots with fewer pixels get id 0 (void).
    """
    s = num_stuff
    c = category_ids.shape[0]
    device = index_map.device
    stuff_px = area[1:s + 1]
    big_enough = stuff_px >= stuff_area  # the others become void through their value
    stuff_scores = (torch.where(big_enough, prob_sum[1:s + 1], 0.0)
                    / stuff_px.clamp(min=1)).float()
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

    Segment areas and boxes are measured on the device (equal to
    :meth:`PanopticResult.from_ids` on the same map) and cross as one small table.

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
