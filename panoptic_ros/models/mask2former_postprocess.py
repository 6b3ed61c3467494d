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
  (the same segmentation for the same outputs and thresholds, with the processor's resizing
  passed as ``logit_size``/``antialias``; ``test/reference_hf_postprocess.py`` wraps this
  function in transformers' signature and the parity tests hold it to that): probabilities
  are resized (not logits), the binary mask area is measured on the *score-weighted*
  probabilities (``>= mask_threshold``), a query survives when the ratio is
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
  the original Mask2Former. :attr:`QuerySegments.query_segment` says which segment each query
  ended in, from which transformers' numbering can be replayed for comparisons.
* An image with no kept query gives an all-void map of zeros (transformers: ``-1`` floats).
* A fused segment's score is the mean score of its queries (transformers lists one entry per
  query).

:func:`panoptic_from_queries` reads as those steps: keep queries, assign pixels (chunked),
the area test, segment numbering; each step is a function that states what it guarantees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
        fuse: bool Tensor[C + 1], classes merged into one segment (stuff); None: none.
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
    fuse = _checked_inputs(scores, labels, mask_logits, num_classes, fuse, rules)
    original = rules == "mask2former"
    sizes = _Sizes.of(mask_logits, target_size, logit_size, crop)
    device = mask_logits.device
    query_segment = torch.zeros(mask_logits.shape[0], dtype=torch.int64, device=device)

    # 1. Keep the confident queries that are not "no object".
    kept = (labels.ne(num_classes) & (scores > threshold)).nonzero().squeeze(1)
    if kept.numel() == 0:
        return QuerySegments(
            segment_map=torch.zeros(sizes.out, dtype=torch.int64, device=device),
            labels=torch.zeros(0, dtype=torch.int64, device=device),
            scores=torch.zeros(0, dtype=torch.float32, device=device),
            query_segment=query_segment,
        )
    kept_scores, kept_labels = scores[kept], labels[kept]
    # 2-3. Every pixel to its best query; binary mask areas.
    assignment = _assign_pixels(
        mask_logits, kept, kept_scores, sizes, mask_threshold=mask_threshold,
        antialias=antialias, resize_logits=resize_logits, original=original,
        chunk=chunk_elements(device, max_chunk_elements),
    )
    # 4. The area test.
    valid = _survivors(assignment, overlap_threshold, original)
    # 5. Segment numbers, with fused classes merged.
    seg_of_kept, opens = _number_segments(valid, kept_labels, fuse)
    query_segment[kept] = seg_of_kept

    segment_map = seg_of_kept[assignment.query]
    if original:
        segment_map = torch.where(assignment.keeps, segment_map, 0)
    seg_scores = _segment_scores(seg_of_kept, kept_scores, int(opens.sum()))
    return QuerySegments(segment_map, kept_labels[opens], seg_scores, query_segment)


def _checked_inputs(scores: torch.Tensor, labels: torch.Tensor, mask_logits: torch.Tensor,
                    num_classes: int, fuse: torch.Tensor | None, rules: str) -> torch.Tensor:
    """Raise ``ValueError`` on inconsistent shapes or rules; the fuse mask on the logits' device.

    Returns:
        bool Tensor[C + 1] (all False when ``fuse`` is None).
    """
    if mask_logits.ndim != 3:
        raise ValueError(f"mask_logits must be [Q, h, w], got shape {tuple(mask_logits.shape)}")
    num_queries = mask_logits.shape[0]
    if scores.shape != (num_queries,) or labels.shape != (num_queries,):
        raise ValueError(
            f"scores and labels must be [{num_queries}], got {tuple(scores.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if rules not in RULES:
        raise ValueError(f"rules must be one of {RULES}, got {rules!r}")
    device = mask_logits.device
    if fuse is None:
        return torch.zeros(num_classes + 1, dtype=torch.bool, device=device)
    if fuse.shape != (num_classes + 1,):
        raise ValueError(f"fuse must be bool [{num_classes + 1}], got {tuple(fuse.shape)}")
    return fuse.to(device)


@dataclass(frozen=True)
class _Sizes:
    """The resolutions mask logits pass through on their way to the output map."""

    logit: tuple[int, int] | None  # resize the logits to this first (None: keep)
    crop: tuple[int, int] | None  # keep the top-left of the (resized) logits (None: all)
    prob: tuple[int, int]  # size after the optional resize and crop
    out: tuple[int, int]  # the output map's size

    @classmethod
    def of(cls, mask_logits: torch.Tensor, target_size: Sequence[int] | None,
           logit_size: Sequence[int] | None, crop: Sequence[int] | None) -> _Sizes:
        """Sizes of :func:`panoptic_from_queries`' arguments of the same names."""
        logit = tuple(int(v) for v in logit_size) if logit_size is not None else None
        prob = logit if logit is not None else tuple(mask_logits.shape[-2:])
        if crop is not None:
            prob = (min(int(crop[0]), prob[0]), min(int(crop[1]), prob[1]))
        out = tuple(int(v) for v in target_size) if target_size is not None else prob
        return cls(logit, None if crop is None else prob, prob, out)

    def per_query(self) -> int:
        """The largest map one query passes through (elements)."""
        logit = self.logit[0] * self.logit[1] if self.logit is not None else 0
        return max(self.out[0] * self.out[1], self.prob[0] * self.prob[1], logit)


def _probabilities(logits: torch.Tensor, sizes: _Sizes, antialias: bool,
                   resize_logits: bool) -> torch.Tensor:
    """Mask probabilities Tensor[K, H, W] at the output size from logits Tensor[K, h, w].

    ``logits`` must be a private copy: it is modified in place.
    """
    if sizes.logit is not None:
        logits = _resize(logits, sizes.logit, antialias=False)
    if sizes.crop is not None:
        logits = logits[:, : sizes.crop[0], : sizes.crop[1]]
    if resize_logits:
        return _resize(logits, sizes.out, antialias).sigmoid_()
    return _resize(logits.sigmoid_(), sizes.out, antialias)


@dataclass
class _Assignment:
    """Which kept query wins each pixel, and each kept query's binary mask area.

    Attributes:
        query: Tensor[H, W] int64, index into the kept queries of the pixel's winner (the
            first on ties).
        keeps: Tensor[H, W] bool, the winner's own probability reaches the mask threshold
            (original rules only; None otherwise).
        mask_area: Tensor[K] int64, pixels of the query's binary mask.
    """

    query: torch.Tensor
    keeps: torch.Tensor | None
    mask_area: torch.Tensor


def _assign_pixels(mask_logits: torch.Tensor, kept: torch.Tensor, kept_scores: torch.Tensor,
                   sizes: _Sizes, *, mask_threshold: float, antialias: bool,
                   resize_logits: bool, original: bool, chunk: int) -> _Assignment:
    """Per-pixel argmax of the score-weighted probabilities over the kept queries.

    A running max over chunks of at most ``chunk`` query x pixel values: a strict ``>`` keeps
    the first query on ties, as one argmax does, so the result does not depend on the
    chunking. Large buffers are updated in place. The binary mask area is measured on the
    weighted probabilities (transformers) or the plain ones (``original``).
    """
    num_kept = int(kept.numel())
    step = max(1, chunk // max(sizes.per_query(), 1))
    mask_area = torch.zeros(num_kept, dtype=torch.int64, device=mask_logits.device)
    best_value = best_query = best_ok = None
    for start in range(0, num_kept, step):
        stop = min(start + step, num_kept)
        # Indexing makes a copy: safe to modify in place.
        probs = _probabilities(mask_logits[kept[start:stop]].float(), sizes, antialias,
                               resize_logits)
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
        del probs, weighted
    return _Assignment(best_query, best_ok, mask_area)


def _survivors(assignment: _Assignment, overlap_threshold: float,
               original: bool) -> torch.Tensor:
    """Bool Tensor[K]: the kept queries that pass the area test (``won / mask area``)."""
    num_kept = int(assignment.mask_area.numel())
    mask_area = assignment.mask_area
    won_area = torch.bincount(assignment.query.reshape(-1), minlength=num_kept)
    if original:
        # Python's division of the two counts (float64), kept when >= the threshold; the
        # query must also keep some pixel.
        kept_pixels = torch.where(assignment.keeps, assignment.query, num_kept).reshape(-1)
        assigned = torch.bincount(kept_pixels, minlength=num_kept + 1)[:num_kept]
        ratio = won_area.double() / mask_area.clamp(min=1).double()
        return (won_area > 0) & (mask_area > 0) & (assigned > 0) & (ratio >= overlap_threshold)
    # transformers divides integer tensors (float32) and compares the Python float.
    ratio = torch.true_divide(won_area, mask_area.clamp(min=1)).double()
    return (won_area > 0) & (mask_area > 0) & (ratio > overlap_threshold)


def _number_segments(valid: torch.Tensor, kept_labels: torch.Tensor,
                     fuse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment numbers 1..N of the kept queries, in query order (0: dropped).

    A surviving query opens a new segment unless an earlier surviving query of the same fused
    class did; then it joins that one.

    Returns:
        ``segment`` Tensor[K] int64 per kept query and ``opens`` Tensor[K] bool, the queries
        that opened a segment (segment ``k`` was opened by the ``k``-th of them).
    """
    num_kept = int(valid.numel())
    device = valid.device
    fused = valid & fuse[kept_labels]
    same = (kept_labels[:, None] == kept_labels[None, :]) & fused[:, None] & fused[None, :]
    earlier = torch.ones(num_kept, num_kept, dtype=torch.bool, device=device).tril(-1)
    opens = valid & ~(same & earlier).any(1)
    number = torch.cumsum(opens.long(), 0) * opens
    first = torch.where(fused, same.long().argmax(1), torch.arange(num_kept, device=device))
    return torch.where(valid, number[first], 0), opens


def _segment_scores(segment: torch.Tensor, kept_scores: torch.Tensor,
                    num_segments: int) -> torch.Tensor:
    """Tensor[N] float32: the mean score of each segment's queries."""
    score_sum = torch.zeros(num_segments + 1, dtype=torch.float32, device=segment.device)
    score_sum.index_add_(0, segment, kept_scores.float())
    count = torch.bincount(segment, minlength=num_segments + 1)
    return (score_sum / count.clamp(min=1))[1:]
