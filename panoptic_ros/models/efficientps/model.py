"""The EfficientPS network: EfficientNet + two-way FPN + semantic head + Mask R-CNN heads.

A frame's path, in torchvision's ``GeneralizedRCNN`` order:

1. transform: :func:`~panoptic_ros.models.preprocess.normalize_and_pad`, RGB 0..255 to a
   normalised batch padded to ``size_divisibility`` (the Predictor's own step;
   :meth:`EfficientPS.preprocess` applies it to the raw images given to ``model(...)``, so a
   checkpoint carries its own normalisation);
2. backbone, FPN and heads: :meth:`EfficientPS.network`, semantic logits and detections;
3. postprocess: :func:`~panoptic_ros.models.efficientps.postprocess.postprocess`, the fusion and
   one :class:`~panoptic_ros.result.PanopticResult` per image.

:meth:`EfficientPS.predict` (the backend interface the Predictor calls) is steps 2 and 3;
``model(images)`` in eval mode is all three; ``model(images, targets)`` in training mode
returns the loss dict.

Training targets, one dict per image, at the image's own (unpadded) size ``h x w``:

* ``semantic``: Tensor[h, w] int64, training index per pixel (stuff first, then things),
  255 = ignored.
* ``boxes``: Tensor[N, 4] float32 ``(x0, y0, x1, y1)`` pixels of the thing instances.
* ``labels``: Tensor[N] int64, ``thing_index + 1`` (1..num_things; 0 is background).
* ``masks``: Tensor[N, h, w] uint8 or bool, one binary mask per instance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from panoptic_ros.categories import IGNORE_INDEX, LabelSet, check_label_divisor
from panoptic_ros.models.efficientps.backbone import EfficientNetBackbone
from panoptic_ros.models.efficientps.config import (
    EfficientPSConfig,
    FusionConfig,
    FusionSettings,
)
from panoptic_ros.models.efficientps.fpn import TwoWayFPN
from panoptic_ros.models.efficientps.instance_head import PanopticRoIHeads, SeparableMaskHead
from panoptic_ros.models.efficientps.layers import activation_factory, norm_factory
from panoptic_ros.models.efficientps.postprocess import postprocess
from panoptic_ros.models.efficientps.semantic_head import SemanticHead
from panoptic_ros.models.preprocess import check_batch, normalize_and_pad
from panoptic_ros.result import PanopticResult

LEVELS = ("0", "1", "2", "3")
"""Names of the FPN levels (strides 4, 8, 16, 32) seen by the RPN and the RoI pools."""

ImageInput = Tensor | Sequence[Tensor]


def ohem_cross_entropy(
    logits: Tensor, target: Tensor, fraction: float, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Cross-entropy over the hardest ``fraction`` of each image's valid pixels.

    Args:
        logits: Tensor[B, C, H, W] float.
        target: Tensor[B, H, W] int64, ``ignore_index`` for ignored pixels.
        fraction: share of valid pixels (per image, rounded up) whose losses are averaged.

    Returns:
        scalar Tensor; 0 (with a graph) when no pixel is valid.
    """
    loss = F.cross_entropy(
        logits.float(), target, ignore_index=ignore_index, reduction="none"
    ).flatten(1)
    valid = (target != ignore_index).flatten(1)
    keep = torch.ceil(valid.sum(1) * fraction)  # [B]
    ranked = torch.where(valid, loss, -1.0).sort(1, descending=True).values
    selected = torch.arange(ranked.shape[1], device=ranked.device)[None, :] < keep[:, None]
    return (ranked * selected).sum() / keep.sum().clamp(min=1)


def full_precision(device: torch.device):
    """A context in which autocast is off on ``device`` (fp32 box geometry and fusion)."""
    return torch.autocast(device.type, enabled=False)


class EfficientPS(FusionSettings, nn.Module):
    """EfficientPS panoptic segmentation network.

    Args:
        config: architecture and inference settings.
        label_set: categories (the semantic head predicts all of them, the instance head the
            things).
        load_backbone_weights: read ``config.backbone_weights`` (if set) into the backbone;
            off when a checkpoint's weights follow anyway.
    """

    backend_name = "efficientps"

    def __init__(
        self,
        config: EfficientPSConfig,
        label_set: LabelSet,
        *,
        load_backbone_weights: bool = True,
    ) -> None:
        super().__init__()
        check_label_divisor(config.label_divisor, label_set)
        if label_set.num_things == 0:
            raise ValueError(f"label set {label_set.name!r} has no thing categories")
        self.config = config
        self.label_set = label_set
        self.fusion_config: FusionConfig = config.fusion
        norm = norm_factory(config.head_norm)
        act = activation_factory(config.activation)
        width, depth = config.scaling
        self.backbone = EfficientNetBackbone(
            config.variant, width, depth, config.backbone_norm, config.drop_path
        )
        if load_backbone_weights and config.backbone_weights:
            self.backbone.load_imagenet(config.backbone_weights)
        f = config.fpn_channels
        self.fpn = TwoWayFPN(self.backbone.out_channels, f, norm=norm, act=act)
        self.semantic_head = SemanticHead(
            f, config.semantic_channels, label_set.num_classes, norm=norm, act=act
        )
        anchors = AnchorGenerator(
            sizes=tuple((int(s),) for s in config.anchor_sizes),
            aspect_ratios=(tuple(float(a) for a in config.aspect_ratios),) * len(LEVELS),
        )
        self.rpn = RegionProposalNetwork(
            anchors,
            RPNHead(f, len(config.aspect_ratios)),
            fg_iou_thresh=0.7,
            bg_iou_thresh=0.3,
            batch_size_per_image=config.rpn_batch_size,
            positive_fraction=0.5,
            pre_nms_top_n={"training": config.rpn_pre_nms_train,
                           "testing": config.rpn_pre_nms_test},
            post_nms_top_n={"training": config.rpn_post_nms_train,
                            "testing": config.rpn_post_nms_test},
            nms_thresh=config.rpn_nms_threshold,
        )
        num_det_classes = label_set.num_things + 1
        self.roi_heads = PanopticRoIHeads(
            box_roi_pool=MultiScaleRoIAlign(list(LEVELS), 7, sampling_ratio=2),
            box_head=TwoMLPHead(f * 7 * 7, config.box_fc_channels),
            box_predictor=FastRCNNPredictor(config.box_fc_channels, num_det_classes),
            fg_iou_thresh=0.5,
            bg_iou_thresh=0.5,
            batch_size_per_image=config.roi_batch_size,
            positive_fraction=0.25,
            bbox_reg_weights=None,
            score_thresh=config.detection_score_threshold,
            nms_thresh=config.detection_nms_threshold,
            detections_per_img=config.detections_per_image,
            mask_roi_pool=MultiScaleRoIAlign(list(LEVELS), 14, sampling_ratio=2),
            mask_head=SeparableMaskHead(
                f, config.mask_channels, num_det_classes, norm=norm, act=act
            ),
        )
        self.register_buffer(
            "category_ids", torch.as_tensor(label_set.ids, dtype=torch.int64), persistent=False
        )
        self._compiled_dense = None  # torch.compile of _dense (compile_dense), else eager

    # -- properties ------------------------------------------------------------------------
    @property
    def num_stuff(self) -> int:
        """Stuff classes (the first semantic channels)."""
        return self.label_set.num_stuff

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.category_ids.device

    # -- backend interface (shared with the other backends, used by the Predictor) -----------
    def preprocess_spec(self) -> dict[str, Any]:
        """Input normalisation the Predictor applies: RGB, 0..255 units, padded."""
        return {
            "pixel_mean": tuple(self.config.pixel_mean),
            "pixel_std": tuple(self.config.pixel_std),
            "size_divisibility": self.config.size_divisibility,
            "max_input_pixels": int(math.prod(self.fusion_config.reference_size)),
        }

    def preprocess(
        self, images: ImageInput, image_sizes: Sequence[tuple[int, int]] | None = None
    ) -> tuple[Tensor, list[tuple[int, int]]]:
        """Normalise and pad raw images into a batch, as the Predictor does.

        The same :func:`~panoptic_ros.models.preprocess.normalize_and_pad` with
        :meth:`preprocess_spec`, for images given to the model itself (training, evaluation).

        Args:
            images: Tensor[B, 3, H, W] or a list of Tensor[3, H_i, W_i]; RGB 0..255, uint8 or
                float, on the model's device.
            image_sizes: valid ``(h, w)`` of each image of a batch tensor (default: all of it).

        Returns:
            Tensor[B, 3, H_p, W_p] float normalised, zero-padded to ``size_divisibility``, and
            the valid ``(h, w)`` of each image.
        """
        if isinstance(images, Tensor):
            if images.dim() != 4 or images.shape[1] != 3:
                raise ValueError(
                    f"images must be Tensor[B, 3, H, W] or a list of Tensor[3, H, W], got "
                    f"shape {tuple(images.shape)}"
                )
            if image_sizes is not None:
                if len(image_sizes) != images.shape[0]:
                    raise ValueError(f"{images.shape[0]} images but {len(image_sizes)} sizes")
                images = [im[:, :h, :w] for im, (h, w) in zip(images, image_sizes)]
        elif image_sizes is not None:
            raise ValueError("image_sizes is only for a batch tensor; a list carries its sizes")
        spec = self.preprocess_spec()
        return normalize_and_pad(
            list(images), spec["pixel_mean"], spec["pixel_std"], spec["size_divisibility"],
            channels_last=self._channels_last(),
        )

    def _channels_last(self) -> bool:
        weight = self.backbone.features[0][0].weight
        return weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last) \
            and not weight.is_contiguous()

    def _dense(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        feats = self.fpn(self.backbone(x))
        return feats, self.semantic_head(feats, x.shape[-2:])

    def dense(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """Backbone, FPN and semantic head.

        Args:
            x: Tensor[B, 3, H, W] normalised, H and W multiples of 32.

        Returns:
            FPN maps (strides 4..32) and semantic logits Tensor[B, C, H, W].
        """
        if self._compiled_dense is not None:
            return self._compiled_dense(x)
        return self._dense(x)

    def compile_dense(self, **kwargs: Any) -> None:
        """``torch.compile`` the dense part (backbone, FPN, semantic head) in place.

        The compiled function refers to this module (a reference cycle): releasing a compiled
        model needs a garbage collection, which :meth:`Predictor.release` runs.
        """
        self._compiled_dense = torch.compile(self._dense, **kwargs)

    # -- forward ---------------------------------------------------------------------------
    def forward(
        self,
        images: ImageInput,
        targets: Sequence[dict[str, Tensor]] | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
        output_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> dict[str, Tensor] | list[PanopticResult]:
        """Losses in training mode, panoptic results in eval mode.

        Args:
            images: raw images, see :meth:`preprocess`.
            targets: training targets, one dict per image (module docstring).
            image_sizes: valid size of each image of a batch tensor.
            output_sizes: eval only: ``(H, W)`` of each result (nearest-neighbour resize of
                the fused map); default: the valid image size.

        Returns:
            training: ``loss_semantic``, ``loss_objectness``, ``loss_rpn_box_reg``,
            ``loss_classifier``, ``loss_box_reg``, ``loss_mask`` (scalar Tensors, unweighted).
            eval: list of :class:`PanopticResult`.
        """
        x, sizes = self.preprocess(images, image_sizes)
        if self.training:
            if targets is None:
                raise ValueError("EfficientPS in training mode needs targets")
            return self.losses(x, sizes, targets)
        return self.predict(x, sizes, output_sizes)

    def predict(
        self,
        images: Tensor,
        image_sizes: Sequence[Sequence[int]],
        output_sizes: Sequence[Sequence[int]] | None = None,
    ) -> list[PanopticResult]:
        """Panoptic segmentation of a normalised, padded batch (the backend interface).

        Args:
            images: Tensor[B, 3, H_p, W_p] float on the model's device, normalised as
                :meth:`preprocess_spec` says and padded at the bottom and right.
            image_sizes: ``(h, w)`` per image, its valid region.
            output_sizes: ``(H, W)`` per image of the returned id maps (default: image_sizes),
                typically the camera image's size before the Predictor resized it.

        Returns:
            one :class:`PanopticResult` per image at its output size.
        """
        sizes = check_batch(images, image_sizes, output_sizes)
        semantic, detections = self.network(images, sizes)
        with full_precision(images.device):
            return postprocess(
                semantic.float(), detections, sizes, output_sizes, label_set=self.label_set,
                label_divisor=self.label_divisor, fusion=self.fusion_config,
                category_ids=self.category_ids,
            )

    def network(
        self, images: Tensor, image_sizes: Sequence[Sequence[int]]
    ) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """Backbone, FPN and heads, without the fusion (what :mod:`panoptic_ros.export` exports).

        Args:
            images: as :meth:`predict`.
            image_sizes: as :meth:`predict`.

        Returns:
            semantic logits Tensor[B, C, H_p, W_p] and, per image, the detections: ``boxes``
            Tensor[K, 4] float ``(x0, y0, x1, y1)``, ``scores`` Tensor[K] (descending),
            ``labels`` Tensor[K] int64 in ``1..num_things``, ``mask_logits`` Tensor[K, 28, 28].
        """
        sizes = check_batch(images, image_sizes)
        feats, semantic = self.dense(images)  # under the caller's autocast, if any
        # Box geometry in fp32 whatever the caller's autocast: anchors, proposals, boxes and
        # mask logits in bf16 would snap coordinates between 1024 and 2048 px to 8 px steps.
        with full_precision(images.device):
            feat_dict = {level: f.float() for level, f in zip(LEVELS, feats)}
            proposals, _ = self.rpn(ImageList(images.float(), sizes), feat_dict)
            detections, _ = self.roi_heads(feat_dict, proposals, sizes)
        return semantic, detections

    def losses(
        self,
        images: Tensor,
        image_sizes: Sequence[Sequence[int]],
        targets: Sequence[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """Training losses of a normalised, padded batch (see :meth:`forward`).

        Targets may be at the image's valid size or padded beyond it (cropped here).
        """
        sizes = check_batch(images, image_sizes)
        targets = self._check_targets(targets, sizes)
        feats, semantic = self.dense(images)
        semantic_target = torch.full(
            (images.shape[0], *images.shape[-2:]), IGNORE_INDEX, dtype=torch.int64,
            device=images.device,
        )
        for i, ((h, w), t) in enumerate(zip(sizes, targets)):
            semantic_target[i, :h, :w] = t["semantic"]
        losses = {
            "loss_semantic": ohem_cross_entropy(
                semantic, semantic_target, self.config.ohem_fraction
            )
        }
        feat_dict = dict(zip(LEVELS, feats))
        det_targets = [{k: t[k] for k in ("boxes", "labels", "masks")} for t in targets]
        proposals, rpn_losses = self.rpn(ImageList(images, sizes), feat_dict, det_targets)
        _, roi_losses = self.roi_heads(feat_dict, proposals, sizes, det_targets)
        losses.update(rpn_losses)
        losses.update(roi_losses)
        return losses

    def _check_targets(
        self, targets: Sequence[dict[str, Tensor]], sizes: Sequence[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        if len(targets) != len(sizes):
            raise ValueError(f"{len(sizes)} images but {len(targets)} targets")
        device = self.device
        out = []
        for i, (t, (h, w)) in enumerate(zip(targets, sizes)):
            missing = {"semantic", "boxes", "labels", "masks"} - set(t)
            if missing:
                raise ValueError(f"target {i} lacks {sorted(missing)}")
            semantic = t["semantic"].to(device=device, dtype=torch.int64)
            boxes = t["boxes"].to(device=device, dtype=torch.float32)
            labels = t["labels"].to(device=device, dtype=torch.int64)
            masks = t["masks"].to(device=device)
            n = boxes.shape[0]
            if semantic.dim() != 2 or semantic.shape[0] < h or semantic.shape[1] < w:
                raise ValueError(
                    f"target {i}: semantic must be Tensor[{h}, {w}] (the image size, or padded "
                    f"beyond it), got {tuple(semantic.shape)}"
                )
            if boxes.dim() != 2 or boxes.shape[1] != 4:
                raise ValueError(
                    f"target {i}: boxes must be Tensor[N, 4], got {tuple(boxes.shape)}"
                )
            if (labels.shape != (n,) or masks.dim() != 3 or masks.shape[0] != n
                    or masks.shape[1] < h or masks.shape[2] < w):
                raise ValueError(
                    f"target {i}: expected labels Tensor[{n}] and masks Tensor[{n}, {h}, {w}], "
                    f"got {tuple(labels.shape)} and {tuple(masks.shape)}"
                )
            if n and (int(labels.min()) < 1 or int(labels.max()) > self.label_set.num_things):
                raise ValueError(
                    f"target {i}: labels must lie in 1..{self.label_set.num_things} "
                    f"(thing index + 1)"
                )
            out.append({"semantic": semantic[:h, :w], "boxes": boxes, "labels": labels,
                        "masks": masks[:, :h, :w]})
        return out
