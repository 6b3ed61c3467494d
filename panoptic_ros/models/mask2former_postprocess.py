"""Panoptic inference for mask-classification models (Mask2Former, MaskFormer, OneFormer, DETR).

These models predict ``Q`` queries, each a class distribution over ``C`` classes plus "no object"
and a mask logit map. Panoptic inference (the Mask2Former rules of shared/REFERENCES.md):

1. ``score, label = softmax(class_logits).max(-1)``; keep the queries whose label is not
   "no object" and whose score is ``> threshold``.
2. Mask probabilities ``sigmoid(mask_logit)`` of the kept queries at the target size, weighted
   by the query's score.
3. Every pixel goes to the query with the highest weighted probability (the first on ties).
4. A query is dropped unless it wins a pixel and ``won area / binary mask area`` passes
   ``overlap_threshold``; its won pixels then become void.
5. Surviving queries of a *fused* class (stuff) merge into one segment; every other surviving
   query is a segment of its own. Segments are numbered 1.. in query order; 0 is void.

Two rule sets differ in the details (``rules``):

* ``"transformers"``: exactly Hugging Face ``transformers``' ``post_process_panoptic_segmentation``
  (the same segmentation for the same outputs and thresholds; see :func:`post_process_panoptic`):
  probabilities are resized (not logits), the binary mask area is measured on the
  *score-weighted* probabilities (``>= mask_threshold``), a query survives when the ratio is
  ``> overlap_threshold`` and then takes every pixel it won.
* ``"mask2former"``: the original Mask2Former implementation, which the published PQ figures
  come from: logits are resized before the sigmoid, the binary area is measured on the plain
  probabilities, a query survives when the ratio is ``>= overlap_threshold`` and keeps only the
  won pixels where its own probability is ``>= mask_threshold`` (the others become void).
  (REFERENCES.md's summary writes the ratio's numerator as "argmax pixels ∩ mask"; the
  implementation divides the whole won area, as here.)

Everything runs on the tensors' device as batched ops: one ``max`` over queries for the
assignment, one ``bincount`` for the won areas, one threshold-count reduction for the mask
areas and a gather for the map; no Python loop over queries. Queries are processed in chunks
to bound memory at large target sizes and keep buffers cache-sized (``max_chunk_elements``);
the result does not depend on the chunking.

Where the result differs from ``transformers`` (by design):

* ``transformers`` restarts its segment counter from a fused class's earlier id whenever that
  class recurs, so the next new segment *reuses* an id that is already taken (two different
  segments, even of different classes, share an id). Here every segment gets its own id, as in
  the original Mask2Former. :func:`hf_segment_ids` reproduces the transformers numbering from
  :attr:`QuerySegments.query_segment` for comparisons.
* An image with no kept query gives an all-void map of zeros (transformers: ``-1`` floats).
* A fused segment's score is the mean score of its queries (transformers lists one entry per
  query).

Flavours of the transformers rules differ only in how mask logits become probabilities at the
target size (see :data:`FLAVOURS`): Mask2Former's processor first resizes the logits of the
whole padded canvas to 384 x 384, MaskFormer and DETR resize probabilities directly, OneFormer
resizes them with antialiasing (torchvision's default).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FLAVOURS: dict[str, dict] = {
    # transformers' Mask2FormerImageProcessor: logits -> 384 x 384 -> sigmoid -> target size.
    "mask2former": {"logit_size": (384, 384), "antialias": False},
    # MaskFormerImageProcessor and DetrImageProcessor: sigmoid -> target size.
    "maskformer": {"logit_size": None, "antialias": False},
    "detr": {"logit_size": None, "antialias": False},
    # OneFormerImageProcessor: sigmoid -> torchvision resize (antialias on) since transformers
    # 5; plain bilinear like MaskFormer before (see _oneformer_antialias).
    "oneformer": {"logit_size": None, "antialias": True},
}
"""Resizing rules of the Hugging Face image processors, by model type."""


def _oneformer_antialias() -> bool:
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

RULES = ("transformers", "mask2former")
"""Segment rules: transformers' post-processing, or the original Mask2Former implementation."""

DEFAULT_MAX_CHUNK_ELEMENTS: int | None = None
"""Bound on ``queries x pixels`` processed at once; None picks per device: 4 Mi floats (16 MiB)
on the CPU, where small buffers stay in cache and are reused by the allocator (measured fastest
for 512 x 1024 targets), 64 Mi (256 MiB) on accelerators, where fewer larger kernels win."""


def chunk_elements(device: torch.device | str, requested: int | None = None) -> int:
    """The chunk bound in effect on ``device`` (see :data:`DEFAULT_MAX_CHUNK_ELEMENTS`)."""
    if requested is not None:
        if int(requested) < 1:
            raise ValueError(f"max_chunk_elements must be >= 1, got {requested}")
        return int(requested)
    return 1 << 22 if torch.device(device).type == "cpu" else 1 << 26


@dataclass
class QuerySegments:
    """Panoptic segments of one image, in model class space.

    Attributes:
        segment_map: Tensor[H, W] int64, segment number per pixel, 1..N, 0 = void.
        labels: Tensor[N] int64, model class index of segment ``k + 1``.
        scores: Tensor[N] float32, class score of the segment (mean over its queries if fused).
        query_segment: Tensor[Q] int64, the segment number each query ended in (0 = dropped:
            below threshold, "no object", or failed the area test).
    """

    segment_map: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    query_segment: torch.Tensor

    @property
    def num_segments(self) -> int:
        """Number of segments ``N``."""
        return int(self.labels.numel())


def query_scores(class_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Score and label of every query.

    Args:
        class_logits: Tensor[..., Q, C + 1] float, the last class being "no object".

    Returns:
        ``scores`` Tensor[..., Q] float (max softmax probability) and ``labels`` Tensor[..., Q]
        int64 (its class index; ``C`` means "no object").
    """
    return F.softmax(class_logits, dim=-1).max(-1)


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


def _resize(x: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    """Bilinear resize of Tensor[K, h, w] to ``size`` (align_corners=False)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(
        x.unsqueeze(0), size=tuple(size), mode="bilinear", align_corners=False,
        antialias=antialias,
    )[0]


def _count_at_least(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per-plane count of ``x >= threshold`` for Tensor[K, H, W].

    Summed as int32: much faster than the default int64 reduction of bool tensors on the CPU.
    """
    return (x >= threshold).reshape(x.shape[0], -1).sum(1, dtype=torch.int32).long()


def panoptic_from_queries(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask_logits: torch.Tensor,
    *,
    num_classes: int,
    threshold: float = 0.8,
    mask_threshold: float = 0.5,
    overlap_threshold: float = 0.8,
    fuse: torch.Tensor | None = None,
    target_size: Sequence[int] | None = None,
    logit_size: Sequence[int] | None = None,
    crop: Sequence[int] | None = None,
    antialias: bool = False,
    rules: str = "transformers",
    resize_logits: bool = False,
    max_chunk_elements: int | None = DEFAULT_MAX_CHUNK_ELEMENTS,
) -> QuerySegments:
    """Panoptic segments of one image from its query scores, labels and mask logits.

    Args:
        scores: Tensor[Q] float, query scores (see :func:`query_scores`).
        labels: Tensor[Q] int64, query class indices; ``num_classes`` means "no object".
        mask_logits: Tensor[Q, h, w] float, mask logits (any resolution).
        num_classes: ``C``, number of classes without "no object".
        threshold: keep queries with ``score > threshold``.
        mask_threshold: binarisation threshold of the mask probabilities (see ``rules``).
        overlap_threshold: keep a query if its won area over its binary mask area is larger
            (``rules="mask2former"``: at least as large).
        fuse: bool Tensor[C + 1] (see :func:`fuse_mask`), classes merged into one segment.
        target_size: ``(H, W)`` of the output map; None keeps the probability map's size.
        logit_size: resize the logits to ``(h', w')`` before the sigmoid (Mask2Former's
            processor uses 384 x 384; the backend uses the padded input size).
        crop: keep the top-left ``(h'', w'')`` of the (resized) logits: the valid image region
            of a padded input.
        antialias: resize probabilities with antialiasing (OneFormer's processor).
        rules: one of :data:`RULES`: ``"transformers"`` (binary areas of score-weighted
            probabilities, every won pixel assigned) or ``"mask2former"`` (the original
            implementation: plain probabilities, a query keeps only the won pixels where its
            own probability reaches ``mask_threshold``, the rest become void).
        resize_logits: resize to ``target_size`` before the sigmoid (the original
            Mask2Former), not after.
        max_chunk_elements: process at most this many ``query x pixel`` values at once (None:
            per device, see :func:`chunk_elements`); the result does not depend on it.

    Returns:
        :class:`QuerySegments` on the device of ``mask_logits``.
    """
    if mask_logits.ndim != 3:
        raise ValueError(f"mask_logits must be [Q, h, w], got shape {tuple(mask_logits.shape)}")
    num_queries = mask_logits.shape[0]
    if scores.shape != (num_queries,) or labels.shape != (num_queries,):
        raise ValueError(
            f"scores and labels must be [{num_queries}], got {tuple(scores.shape)} and "
            f"{tuple(labels.shape)}"
        )
    device = mask_logits.device
    if fuse is None:
        fuse = torch.zeros(num_classes + 1, dtype=torch.bool, device=device)
    elif fuse.shape != (num_classes + 1,):
        raise ValueError(f"fuse must be bool [{num_classes + 1}], got {tuple(fuse.shape)}")
    fuse = fuse.to(device)

    # Size of the probability maps before the final resize.
    prob_size = tuple(logit_size) if logit_size is not None else tuple(mask_logits.shape[-2:])
    if crop is not None:
        prob_size = (min(int(crop[0]), prob_size[0]), min(int(crop[1]), prob_size[1]))
    out_size = tuple(int(v) for v in target_size) if target_size is not None else prob_size
    height, width = out_size

    keep = labels.ne(num_classes) & (scores > threshold)
    kept = keep.nonzero().squeeze(1)
    num_kept = int(kept.numel())
    query_segment = torch.zeros(num_queries, dtype=torch.int64, device=device)
    if num_kept == 0:
        return QuerySegments(
            segment_map=torch.zeros(out_size, dtype=torch.int64, device=device),
            labels=torch.zeros(0, dtype=torch.int64, device=device),
            scores=torch.zeros(0, dtype=torch.float32, device=device),
            query_segment=query_segment,
        )
    kept_scores = scores[kept]
    kept_labels = labels[kept]

    if rules not in RULES:
        raise ValueError(f"rules must be one of {RULES}, got {rules!r}")
    original = rules == "mask2former"

    # Assignment (running max over query chunks: strict '>' keeps the first query on ties,
    # as argmax does) and per-query binary-mask areas. Large buffers are updated in place.
    best_value = best_query = best_ok = None
    mask_area = torch.zeros(num_kept, dtype=torch.int64, device=device)
    per_query = max(height * width, prob_size[0] * prob_size[1],
                    (logit_size[0] * logit_size[1]) if logit_size is not None else 0)
    chunk = max(1, chunk_elements(device, max_chunk_elements) // max(per_query, 1))
    for start in range(0, num_kept, chunk):
        stop = min(start + chunk, num_kept)
        logits = mask_logits[kept[start:stop]].float()  # a copy: safe to modify in place
        if logit_size is not None:
            logits = _resize(logits, tuple(logit_size), antialias=False)
        if crop is not None:
            logits = logits[:, : prob_size[0], : prob_size[1]]
        if resize_logits:
            probs = _resize(logits, out_size, antialias).sigmoid_()
        else:
            probs = _resize(logits.sigmoid_(), out_size, antialias)
        chunk_scores = kept_scores[start:stop].view(-1, 1, 1)
        if original:
            mask_area[start:stop] = _count_at_least(probs, mask_threshold)
            weighted = probs * chunk_scores
        else:
            weighted = probs.mul_(chunk_scores)
            mask_area[start:stop] = _count_at_least(weighted, mask_threshold)
        value, index = weighted.max(0)
        # Original rule: the winner keeps the pixel only where its own probability is high.
        ok = probs.gather(0, index[None])[0] >= mask_threshold if original else None
        if best_value is None:
            best_value, best_query, best_ok = value, index, ok
        else:
            better = value > best_value
            best_value = torch.where(better, value, best_value)
            best_query = torch.where(better, index + start, best_query)
            if original:
                best_ok = torch.where(better, ok, best_ok)
        del logits, probs, weighted

    won_area = torch.bincount(best_query.reshape(-1), minlength=num_kept)
    if original:
        # Python's division of the two counts (float64), kept when >= the threshold; the
        # query must also keep some pixel.
        kept_pixels = torch.where(best_ok, best_query, num_kept).reshape(-1)
        assigned = torch.bincount(kept_pixels, minlength=num_kept + 1)[:num_kept]
        ratio = won_area.double() / mask_area.clamp(min=1).double()
        valid = (won_area > 0) & (mask_area > 0) & (assigned > 0) & (ratio >= overlap_threshold)
    else:
        # transformers divides integer tensors (float32) and compares the Python float.
        ratio = torch.true_divide(won_area, mask_area.clamp(min=1)).double()
        valid = (won_area > 0) & (mask_area > 0) & (ratio > overlap_threshold)

    # Segment numbers: a surviving query opens a new segment unless an earlier surviving
    # query of the same fused class did; then it joins that one.
    fused = valid & fuse[kept_labels]
    same = (kept_labels[:, None] == kept_labels[None, :]) & fused[:, None] & fused[None, :]
    earlier = torch.ones(num_kept, num_kept, dtype=torch.bool, device=device).tril(-1)
    opens = valid & ~(same & earlier).any(1)
    number = torch.cumsum(opens.long(), 0) * opens
    first = torch.where(fused, same.long().argmax(1), torch.arange(num_kept, device=device))
    seg_of_kept = torch.where(valid, number[first], 0)
    query_segment[kept] = seg_of_kept

    num_segments = int(opens.sum())
    seg_labels = kept_labels[opens]
    score_sum = torch.zeros(num_segments + 1, dtype=torch.float32, device=device)
    score_sum.index_add_(0, seg_of_kept, kept_scores.float())
    count = torch.bincount(seg_of_kept, minlength=num_segments + 1)
    seg_scores = (score_sum / count.clamp(min=1))[1:]

    segment_map = seg_of_kept[best_query]
    if original:
        segment_map = torch.where(best_ok, segment_map, 0)
    return QuerySegments(segment_map, seg_labels, seg_scores, query_segment)


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
    model family ``flavour`` (see the module docstring for the documented differences).

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
        spec["antialias"] = _oneformer_antialias()
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
