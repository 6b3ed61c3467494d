"""Hugging Face ``transformers``' panoptic post-processing, rebuilt on our inference (tests only).

:func:`post_process_panoptic` takes the arguments of
``<Processor>.post_process_panoptic_segmentation`` and gives the same segmentation, for each
family's resizing rules (:data:`FLAVOURS`), through
:func:`panoptic_ros.models.mask2former_postprocess.panoptic_from_queries` with
``rules="transformers"``. :func:`hf_segment_ids` replays transformers' segment numbering (its
counter restarts after a fused class) so outputs compare pixel for pixel. The parity tests in
``test_mask2former.py`` use them; the backend itself calls ``panoptic_from_queries`` directly.

Flavours differ only in how mask logits become probabilities at the target size: Mask2Former's
processor first resizes the logits of the whole padded canvas to 384 x 384, MaskFormer and
DETR resize probabilities directly, OneFormer resizes them with antialiasing (torchvision's
default).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from panoptic_ros.models.mask2former_postprocess import (
    DEFAULT_MAX_CHUNK_ELEMENTS,
    QuerySegments,
    panoptic_from_queries,
    query_scores,
)

FLAVOURS: dict[str, dict] = {
    # transformers' Mask2FormerImageProcessor: logits -> 384 x 384 -> sigmoid -> target size.
    "mask2former": {"logit_size": (384, 384), "antialias": False},
    # MaskFormerImageProcessor and DetrImageProcessor: sigmoid -> target size.
    "maskformer": {"logit_size": None, "antialias": False},
    "detr": {"logit_size": None, "antialias": False},
    # OneFormerImageProcessor: sigmoid -> torchvision resize (antialias on) since transformers
    # 5; plain bilinear like MaskFormer before (see oneformer_antialias).
    "oneformer": {"logit_size": None, "antialias": True},
}
"""Resizing rules of the Hugging Face image processors, by model type."""


def oneformer_antialias() -> bool:
    """Whether the installed transformers resizes OneFormer probabilities with antialiasing.

    transformers 5 resizes them with torchvision (antialias on); 4.x with plain bilinear
    interpolation. True when transformers is absent.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("transformers").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return True
    return major >= 5


def fuse_mask(num_classes: int, label_ids_to_fuse: Iterable[int] | torch.Tensor | None,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean Tensor[C + 1] marking the classes whose queries merge into one segment.

    Args:
        num_classes: ``C``, classes without "no object".
        label_ids_to_fuse: class indices to fuse (stuff), a bool Tensor[C] or None (none).
    """
    out = torch.zeros(num_classes + 1, dtype=torch.bool, device=device)
    if label_ids_to_fuse is None:
        return out
    if isinstance(label_ids_to_fuse, torch.Tensor) and label_ids_to_fuse.dtype == torch.bool:
        if label_ids_to_fuse.numel() != num_classes:
            raise ValueError(
                f"fuse mask must have {num_classes} entries, got {label_ids_to_fuse.numel()}"
            )
        out[:num_classes] = label_ids_to_fuse.to(out.device)
        return out
    ids = torch.as_tensor(list(label_ids_to_fuse) if not isinstance(label_ids_to_fuse,
                                                                     torch.Tensor)
                          else label_ids_to_fuse, dtype=torch.int64).reshape(-1)
    ids = ids[(ids >= 0) & (ids < num_classes)]
    out[ids.to(out.device)] = True
    return out


def post_process_panoptic(
    class_queries_logits: torch.Tensor,
    masks_queries_logits: torch.Tensor,
    *,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    label_ids_to_fuse: Iterable[int] | None = None,
    target_sizes: Sequence[Sequence[int]] | None = None,
    flavour: str = "mask2former",
    max_chunk_elements: int | None = DEFAULT_MAX_CHUNK_ELEMENTS,
) -> list[QuerySegments]:
    """Batch panoptic inference with the arguments of transformers' post-processing.

    Same segmentation as ``<Processor>.post_process_panoptic_segmentation(outputs, threshold,
    mask_threshold, overlap_mask_area_threshold, label_ids_to_fuse, target_sizes)`` for the
    model family ``flavour`` (the documented differences aside: see
    ``panoptic_ros/models/mask2former_postprocess.py``).

    Args:
        class_queries_logits: Tensor[B, Q, C + 1] (DETR: ``outputs.logits``).
        masks_queries_logits: Tensor[B, Q, h, w] (DETR: ``outputs.pred_masks``).
        target_sizes: ``(H, W)`` per image, or None for the probability map's size.
        flavour: one of :data:`FLAVOURS`.

    Returns:
        One :class:`QuerySegments` per image.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {sorted(FLAVOURS)}, got {flavour!r}")
    if class_queries_logits.ndim != 3 or masks_queries_logits.ndim != 4:
        raise ValueError(
            "expected class logits [B, Q, C+1] and mask logits [B, Q, h, w], got "
            f"{tuple(class_queries_logits.shape)} and {tuple(masks_queries_logits.shape)}"
        )
    batch = class_queries_logits.shape[0]
    if target_sizes is not None and len(target_sizes) != batch:
        raise ValueError(f"expected {batch} target sizes, got {len(target_sizes)}")
    num_classes = class_queries_logits.shape[-1] - 1
    fuse = fuse_mask(num_classes, label_ids_to_fuse, device=masks_queries_logits.device)
    scores, labels = query_scores(class_queries_logits)
    spec = dict(FLAVOURS[flavour])
    if flavour == "oneformer":
        spec["antialias"] = oneformer_antialias()
    return [
        panoptic_from_queries(
            scores[i], labels[i], masks_queries_logits[i],
            num_classes=num_classes,
            threshold=threshold,
            mask_threshold=mask_threshold,
            overlap_threshold=overlap_mask_area_threshold,
            fuse=fuse,
            target_size=None if target_sizes is None else target_sizes[i],
            logit_size=spec["logit_size"],
            antialias=spec["antialias"],
            max_chunk_elements=max_chunk_elements,
        )
        for i in range(batch)
    ]


def hf_segment_ids(result: QuerySegments, query_labels: torch.Tensor,
                   fuse: torch.Tensor) -> torch.Tensor:
    """The segment id transformers gives each of our segments (its counter restarts included).

    transformers numbers surviving queries in order, but after a query of an already-seen fused
    class it continues counting from that class's id, so later segments can share ids. This
    replays that counter for comparisons with its output.

    Args:
        result: output of :func:`panoptic_from_queries`.
        query_labels: Tensor[Q] int64, the query labels given to it.
        fuse: bool Tensor[C + 1], the fused classes given to it.

    Returns:
        Tensor[N + 1] int64 on the CPU: entry ``k`` is transformers' id of our segment ``k``
        (entry 0, void, stays 0).
    """
    seg = result.query_segment.cpu().tolist()
    labels = query_labels.cpu().tolist()
    fused = fuse.cpu().tolist()
    out = [0] * (result.num_segments + 1)
    counter = 0
    memory: dict[int, int] = {}
    for q, s in enumerate(seg):
        if s == 0:
            continue
        label = labels[q]
        if label in memory:
            counter = memory[label]
        else:
            counter += 1
        out[s] = counter
        if fused[label]:
            memory[label] = counter
    return torch.tensor(out, dtype=torch.int64)
