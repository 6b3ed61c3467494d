"""Mask2Former panoptic post-processing speed: ours vs transformers', same outputs.

Builds realistic query outputs (133 COCO panoptic classes, stuff fused; 12 % of the queries
confident and covering segments of a random partition (25 % in the dense scene), the rest
"no object"; mask logits at 1/4 of the input resolution), runs transformers'
``Mask2FormerImageProcessor.post_process_panoptic_segmentation`` and ours (the backend's
``panoptic_from_queries`` with the processor's rules and resizing) on them, asserts the same
segmentation against transformers' own output (each of our segments takes the id transformers
lists for its queries: ids can differ by design, see
panoptic_ros/models/mask2former_postprocess.py) and prints the best-of-N times and the ratio.

    .venv/bin/python bench/bench_mask2former_postprocess.py            # COCO 640x640, 512x1024
    .venv/bin/python bench/bench_mask2former_postprocess.py --smoke    # CI size, seconds
    .venv/bin/python bench/bench_mask2former_postprocess.py --device cuda
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch
from _host import host_line, sync_all

from panoptic_ros.categories import coco_panoptic
from panoptic_ros.models.mask2former_postprocess import (
    QuerySegments,
    panoptic_from_queries,
    query_scores,
)

SCENES = {
    # name: (batch, queries, input height, input width, fraction of confident queries)
    # A trained model keeps roughly 10-20 % of its queries at threshold 0.8 (COCO: ~10-20
    # segments from 100 queries); "dense" doubles that, the hard case for us.
    "coco-640x640": (2, 100, 640, 640, 0.12),
    "cityscapes-512x1024": (2, 200, 512, 1024, 0.12),
    "dense-512x1024": (2, 200, 512, 1024, 0.25),
}
SMOKE = {"smoke-96x128": (2, 20, 96, 128, 0.25)}
PROCESSOR_LOGIT_SIZE = (384, 384)
"""Mask2FormerImageProcessor resizes mask logits to this before the sigmoid."""


def make_outputs(batch: int, queries: int, classes: int, mh: int, mw: int, device: str,
                 confident_fraction: float = 0.12,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits [B, Q, C+1] and mask logits [B, Q, mh, mw] shaped like a real model's."""
    g = torch.Generator().manual_seed(seed)
    cells = max(4, int(queries * confident_fraction))
    confident = torch.rand(batch, queries, generator=g) < confident_fraction
    labels = torch.randint(0, classes, (batch, queries), generator=g)
    labels = torch.where(confident, labels, classes)  # the rest: "no object"
    class_logits = torch.randn(batch, queries, classes + 1, generator=g)
    boost = torch.where(confident, 6.0 + 4.0 * torch.rand(batch, queries, generator=g), 12.0)
    class_logits.scatter_add_(2, labels[..., None], boost[..., None])
    pts = torch.rand(batch, cells, 2, generator=g) * torch.tensor([mh, mw])
    yy, xx = torch.meshgrid(torch.arange(mh) + 0.5, torch.arange(mw) + 0.5, indexing="ij")
    region = torch.stack([
        ((yy - p[:, 0, None, None]) ** 2 + (xx - p[:, 1, None, None]) ** 2).argmin(0)
        for p in pts
    ])
    cell = torch.randint(0, cells, (batch, queries), generator=g)
    inside = (region[:, None] == cell[..., None, None]).float()
    mask_logits = 6 * (2 * inside - 1) + 3 * torch.randn(batch, queries, mh, mw, generator=g)
    mask_logits = torch.nn.functional.avg_pool2d(mask_logits, 5, 1, 2)
    return class_logits.to(device), mask_logits.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        sync_all()


def timed_pair(fn_a, fn_b, repeats: int, device: str):
    """Best-of-``repeats`` times of two functions, runs interleaved (robust to a busy machine)."""
    times_a, times_b, out_a, out_b = [], [], None, None
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            _sync(device)
            t0 = time.perf_counter()
            out = fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
            if fn is fn_a:
                out_a = out
            else:
                out_b = out
    return min(times_a), min(times_b), out_a, out_b


def ours(class_logits: torch.Tensor, mask_logits: torch.Tensor, fuse: torch.Tensor,
         target_size: tuple[int, int], **thresholds: float) -> list[QuerySegments]:
    """Our post-processing of a batch with transformers' rules, as the backend calls it."""
    scores, labels = query_scores(class_logits)
    return [
        panoptic_from_queries(scores[i], labels[i], mask_logits[i],
                              num_classes=class_logits.shape[-1] - 1, fuse=fuse,
                              target_size=target_size, logit_size=PROCESSOR_LOGIT_SIZE,
                              rules="transformers", **thresholds)
        for i in range(class_logits.shape[0])
    ]


def same_segmentation(ours_image: QuerySegments, query_labels: torch.Tensor, ref: dict) -> bool:
    """Whether our segments are transformers' ``ref`` (one image), ids mapped.

    transformers lists one ``segments_info`` entry per surviving query, in query order: each of
    our segments takes the id listed for its queries (one id each), and then the maps must be
    equal pixel for pixel (transformers' -1 for an empty image is void).
    """
    surviving = (ours_image.query_segment > 0).nonzero().squeeze(1).cpu()
    info = ref["segments_info"]
    labels = query_labels.cpu()[surviving].tolist()
    if labels != [s["label_id"] for s in info]:
        return False
    pairs = set(zip(ours_image.query_segment.cpu()[surviving].tolist(), [s["id"] for s in info]))
    to_hf = dict(pairs)
    if len(to_hf) != len(pairs):  # one of our segments got two ids
        return False
    lut = torch.zeros(ours_image.num_segments + 1, dtype=torch.int64)
    for segment, hf_id in to_hf.items():
        lut[segment] = hf_id
    expected = ref["segmentation"].long().clamp(min=0).cpu()
    return torch.equal(lut[ours_image.segment_map.cpu()], expected)


def run_scene(name: str, batch: int, queries: int, height: int, width: int,
              confident_fraction: float, device: str, repeats: int, processor) -> float:
    table = coco_panoptic()
    classes = len(table)
    stuff = [k for k, c in enumerate(table) if not c.is_thing]
    class_logits, mask_logits = make_outputs(batch, queries, classes, height // 4, width // 4,
                                             device, confident_fraction)
    thresholds = dict(threshold=0.8, mask_threshold=0.5, overlap_threshold=0.8)
    fuse = torch.tensor([not c.is_thing for c in table] + [False], device=device)
    outputs = SimpleNamespace(class_queries_logits=class_logits,
                              masks_queries_logits=mask_logits)
    ours_fn = lambda: ours(class_logits, mask_logits, fuse, (height, width),  # noqa: E731
                           **thresholds)
    ref_fn = lambda: processor.post_process_panoptic_segmentation(  # noqa: E731
        outputs, threshold=0.8, mask_threshold=0.5, overlap_mask_area_threshold=0.8,
        label_ids_to_fuse=set(stuff), target_sizes=[(height, width)] * batch)
    ours_fn(), ref_fn()  # warm-up
    t_ref, t_ours, ref, out = timed_pair(ref_fn, ours_fn, repeats, device)

    scores, labels = query_scores(class_logits)
    segments = 0
    for i in range(batch):
        if not same_segmentation(out[i], labels[i], ref[i]):
            raise SystemExit(f"{name}: segmentation differs from transformers' in image {i}")
        segments += out[i].num_segments
    kept = int(((labels != classes) & (scores > 0.8)).sum())
    print(
        f"{name:22s} B={batch} Q={queries} C={classes} masks {height // 4}x{width // 4} "
        f"-> {height}x{width}, {kept} kept queries, {segments} segments: "
        f"transformers {t_ref * 1e3:8.1f} ms, ours {t_ours * 1e3:7.1f} ms, "
        f"{t_ref / t_ours:5.1f}x (identical output)"
    )
    return t_ref / t_ours


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for CI (seconds)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per scene")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    print(host_line())
    try:
        import transformers
    except ImportError:
        print("transformers is not installed (pip install '.[hf]'): nothing to compare with")
        return 0
    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    processor = transformers.Mask2FormerImageProcessor()
    scenes = SMOKE if args.smoke else SCENES
    repeats = args.repeats or (2 if args.smoke else 5)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"device {args.device}, {torch.get_num_threads()} threads, best of {repeats}")
    ratios = [run_scene(name, *spec, args.device, repeats, processor)
              for name, spec in scenes.items()]
    print(f"speed-up: min {min(ratios):.1f}x, target >= 3x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
