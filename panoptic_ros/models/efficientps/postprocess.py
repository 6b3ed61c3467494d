"""EfficientPS post-processing: raw network outputs -> one :class:`PanopticResult` per image.

The step after :meth:`~panoptic_ros.models.efficientps.model.EfficientPS.network`, for the model
and for exported graphs (:func:`panoptic_ros.export.panoptic_from_raw`) alike: each image's
semantic logits, cropped to its valid size, and its detections are fused in float32
(:func:`panoptic_ros.models.fusion.fuse`, on their device), and the fused map becomes a
:class:`PanopticResult` at the requested output size (one copy to the host).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from panoptic_ros.categories import LabelSet
from panoptic_ros.models.efficientps.config import FusionConfig
from panoptic_ros.models.fusion import fuse, to_panoptic_result
from panoptic_ros.result import PanopticResult


def postprocess(
    semantic: Tensor,
    detections: Sequence[Mapping[str, Tensor]],
    image_sizes: Sequence[Sequence[int]],
    output_sizes: Sequence[Sequence[int]] | None = None,
    *,
    label_set: LabelSet,
    label_divisor: int,
    fusion: FusionConfig,
    category_ids: Tensor | None = None,
) -> list[PanopticResult]:
    """Fuse each image's network outputs into its panoptic result.

    Args:
        semantic: Tensor[B, C, H_p, W_p] semantic logits (any float dtype) of a padded batch.
        detections: per image ``boxes`` Tensor[K, 4] float ``(x0, y0, x1, y1)`` pixels,
            ``scores`` Tensor[K], ``labels`` Tensor[K] int64 in ``1..num_things`` (detection
            classes: thing index + 1) and ``mask_logits`` Tensor[K, M, M].
        image_sizes: ``(h, w)`` per image, its valid region (top left of the padded input).
        output_sizes: ``(H, W)`` per image of the results (default: ``image_sizes``), a
            nearest-neighbour resize of the fused map.
        label_set: the categories, stuff first, in training-index order.
        label_divisor: ``id = category_id * label_divisor + instance``.
        fusion: the fusion settings.
        category_ids: Tensor[C] int64 ``label_set.ids`` already on the logits' device (saves a
            copy per frame); default: made from ``label_set``.

    Returns:
        one :class:`PanopticResult` per image.
    """
    if output_sizes is None:
        output_sizes = image_sizes
    if category_ids is None:
        category_ids = torch.as_tensor(label_set.ids, dtype=torch.int64, device=semantic.device)
    num_stuff = label_set.num_stuff
    results = []
    with torch.autocast(semantic.device.type, enabled=False):
        for logits, det, (h, w), size in zip(
            semantic, detections, image_sizes, output_sizes, strict=True
        ):
            h, w = int(h), int(w)
            fused = fuse(
                logits[:, :h, :w].float(),
                det["mask_logits"].float(),
                det["boxes"].float(),
                det["scores"].float(),
                det["labels"] + (num_stuff - 1),  # detection class -> training index
                strategy=fusion.strategy,
                num_stuff=num_stuff,
                category_ids=category_ids,
                label_divisor=label_divisor,
                score_threshold=fusion.score_threshold,
                overlap_threshold=fusion.overlap_threshold,
                stuff_area=fusion.stuff_area_at(h, w),
            )
            results.append(to_panoptic_result(fused, label_set, label_divisor, size))
    return results
