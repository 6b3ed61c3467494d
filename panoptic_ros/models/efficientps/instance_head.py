"""Instance head of EfficientPS: torchvision's RPN and RoI heads with a separable mask head.

torchvision's ``RoIHeads`` turns mask logits into probabilities at inference and pastes them
per box in a Python loop. The panoptic fusion needs the logits, so :class:`PanopticRoIHeads`
runs the mask branch itself and returns the 28x28 logit of each detection's own class; pasting
is batched in :mod:`panoptic_ros.models.fusion`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, maskrcnn_loss

from panoptic_ros.models.efficientps.layers import NormFactory, SeparableConv


class SeparableMaskHead(nn.Sequential):
    """Four separable 3x3 convs, a stride-2 deconv, and a 1x1 classifier.

    Maps RoI features Tensor[R, C_in, 14, 14] to per-class logits Tensor[R, num_classes, 28, 28]
    (``num_classes`` includes the unused background channel 0, as torchvision's losses expect).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        *,
        norm: NormFactory,
        act: Callable[[], nn.Module],
    ) -> None:
        convs = [
            SeparableConv(in_channels if i == 0 else channels, channels, norm=norm, act=act)
            for i in range(4)
        ]
        super().__init__(
            *convs,
            nn.ConvTranspose2d(channels, channels, 2, stride=2, bias=False),
            norm(channels),
            act(),
            nn.Conv2d(channels, num_classes, 1),
        )


def bucket_size(k: int) -> int:
    """The mask head's batch for ``k`` detections when bucketing: the next power of two."""
    return 1 if k <= 1 else 1 << (k - 1).bit_length()


class PanopticRoIHeads(RoIHeads):
    """``RoIHeads`` whose inference keeps mask logits.

    Constructed like :class:`torchvision.models.detection.roi_heads.RoIHeads` with
    ``mask_roi_pool`` and ``mask_head`` given; ``mask_head`` must output per-class logits (no
    separate ``mask_predictor``).
    """

    def forward(  # type: ignore[override]
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Box and mask branches.

        Args:
            features: FPN maps by level name.
            proposals: Tensor[P_i, 4] float boxes ``(x0, y0, x1, y1)`` per image.
            image_shapes: ``(height, width)`` of each image's valid region.
            targets: training only: per image ``boxes`` Tensor[N, 4] float, ``labels``
                Tensor[N] int64 in ``1..num_things``, ``masks`` Tensor[N, H, W] uint8/bool.

        Returns:
            ``(detections, losses)``. In training ``detections`` is empty and ``losses`` has
            ``loss_classifier``, ``loss_box_reg``, ``loss_mask``. In eval ``losses`` is empty and
            each detection dict holds ``boxes`` Tensor[K, 4] float, ``scores`` Tensor[K] float
            (descending), ``labels`` Tensor[K] int64 in ``1..num_things`` and ``mask_logits``
            Tensor[K, 28, 28] float (the logit of the detection's own class).
        """
        if self.training:
            if targets is None:
                raise ValueError("PanopticRoIHeads needs targets in training mode")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
            box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
            class_logits, box_regression = self.box_predictor(box_features)
            loss_classifier, loss_box_reg = fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets
            )
            positive = [torch.where(lab > 0)[0] for lab in labels]
            mask_proposals = [p[pos] for p, pos in zip(proposals, positive)]
            pos_matched = [m[pos] for m, pos in zip(matched_idxs, positive)]
            mask_logits = self.mask_head(
                self.mask_roi_pool(features, mask_proposals, image_shapes)
            )
            loss_mask = maskrcnn_loss(
                mask_logits,
                mask_proposals,
                [t["masks"] for t in targets],
                [t["labels"] for t in targets],
                pos_matched,
            )
            losses = {
                "loss_classifier": loss_classifier,
                "loss_box_reg": loss_box_reg,
                "loss_mask": loss_mask,
            }
            return [], losses

        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        mask_logits = self._mask_logits(features, boxes, image_shapes)
        flat_labels = torch.cat(labels)
        # 0..K-1 derived from the data, not torch.arange(device=...): a trace keeps no device.
        index = torch.ones_like(flat_labels).cumsum(0) - 1
        own = mask_logits[index, flat_labels]
        per_image = own.split([b.shape[0] for b in boxes])
        detections = [
            {"boxes": b, "scores": s, "labels": lab, "mask_logits": m}
            for b, s, lab, m in zip(boxes, scores, labels, per_image)
        ]
        return detections, {}

    bucket_detections = False
    """Pad the mask head's batch to a power of two (:func:`bucket_size`): with cuDNN autotuning
    on a GPU every new detection count K would be tuned afresh (a slow frame each time); with
    buckets there are at most 8 shapes up to 100 detections. The Predictor turns it on for
    CUDA; results are identical (the padding rows are dropped)."""

    def _mask_logits(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """Mask logits Tensor[K, classes, 28, 28] of the detections' boxes."""
        k = sum(int(b.shape[0]) for b in boxes)
        if not self.bucket_detections or torch.jit.is_tracing() or k == 0:
            return self.mask_head(self.mask_roi_pool(features, boxes, image_shapes))
        pad = bucket_size(k) - k
        padded = [*boxes[:-1], torch.cat([boxes[-1], boxes[-1].new_zeros((pad, 4))])]
        return self.mask_head(self.mask_roi_pool(features, padded, image_shapes))[:k]
