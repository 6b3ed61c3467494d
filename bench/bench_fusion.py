"""Panoptic fusion speed: panoptic_ros.models.fusion vs the per-instance loop reference.

Both strategies (EfficientPS logit fusion, Panoptic-FPN heuristic) on Cityscapes-like inputs at
1024x2048 with 5, 20 and 50 detections: 19 classes (11 stuff, 8 things), smooth semantic logits
upsampled from stride 8 (a network's output), boxes of varied size and shape (people tall,
vehicles wide, 24 px to 40 % of the width), overlapping, with elliptical 28x28 mask logits,
scores 0.3-1.0 (a third below the 0.5 threshold), and the thing class raised in the semantic
logits under each detection, as a trained network has it.

Ours: ``fuse`` (on the CPU box by box: paste, overlap filter and FL inside each box window;
a blocked semantic pass without softmax) and the id map. Reference:
``panoptic_ros/models/fusion/reference.py`` (one ``grid_sample`` paste per box, then one
full-image pass per instance). The outputs must be identical: the reference fusion is run on
our pasted logits for that check (float rounding of the two pastes can flip a pixel whose
logit is ~0; those pixels are counted and printed for the reference's own paste).

    PYTHONPATH=. .venv/bin/python bench/bench_fusion.py            # 1024x2048, K = 5, 20, 50
    PYTHONPATH=. .venv/bin/python bench/bench_fusion.py --smoke    # CI size, seconds
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _host import host_line  # noqa: E402

from panoptic_ros.categories import cityscapes  # noqa: E402
from panoptic_ros.models.fusion import STRATEGIES, fuse, paste_mask_logits  # noqa: E402
from panoptic_ros.models.fusion.reference import (  # noqa: E402
    reference_fusion,
    reference_paste,
)

LABELS = cityscapes()
DIVISOR = 1000
SETTINGS = dict(score_threshold=0.5, overlap_threshold=0.5)
TARGET = 10.0


def scene(k: int, h: int, w: int, seed: int) -> dict[str, torch.Tensor]:
    """Semantic logits [C, H, W] and K detections (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    c, s = LABELS.num_classes, LABELS.num_stuff
    lh, lw = math.ceil(h / 8), math.ceil(w / 8)
    low = F.avg_pool2d(torch.randn((1, c, lh, lw), generator=g) * 6, 5, 1, 2)[0] * 2.5
    low[s:] -= 2.0  # things only where a detection is
    # Boxes: width log-uniform 24 px .. 40 % of the image, height/width 0.5 .. 3.
    bw = torch.exp(torch.empty(k).uniform_(math.log(24), math.log(0.4 * w), generator=g))
    bh = (bw * torch.exp(torch.empty(k).uniform_(math.log(0.5), math.log(3.0), generator=g)))
    bh = bh.clamp(max=0.9 * h)
    x0 = torch.rand(k, generator=g) * (w - bw)
    y0 = torch.rand(k, generator=g) * (h - bh)
    boxes = torch.stack([x0, y0, x0 + bw, y0 + bh], 1)
    labels = torch.randint(s, c, (k,), generator=g)
    scores = torch.rand(k, generator=g) * 0.7 + 0.3
    # Mask logits: an ellipse filling most of the box, soft edges, some noise.
    m = 28
    t = (torch.arange(m) + 0.5) / m * 2 - 1
    r2 = t[None, :, None] ** 2 / 0.8 + t[None, None, :] ** 2 / 0.7
    masks = 6.0 * (1.0 - r2) - 1.5 + torch.randn((k, m, m), generator=g)
    masks = F.avg_pool2d(masks[:, None], 3, 1, 1)[:, 0]
    # Semantic: the detection's class raised under its box (a stride-8 bump).
    ys = (torch.arange(lh) + 0.5) * 8
    xs = (torch.arange(lw) + 0.5) * 8
    for i in range(k):
        cx, cy = (boxes[i, 0] + boxes[i, 2]) / 2, (boxes[i, 1] + boxes[i, 3]) / 2
        bump = torch.exp(-(((ys[:, None] - cy) / (bh[i] / 2)) ** 2
                           + ((xs[None, :] - cx) / (bw[i] / 2)) ** 2))
        low[labels[i]] += 9.0 * bump
    semantic = F.interpolate(low[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return {"semantic": semantic.contiguous(), "masks": masks, "boxes": boxes,
            "scores": scores, "labels": labels}


def ours(strategy: str, inp: dict[str, torch.Tensor], stuff_area: float) -> np.ndarray:
    out = fuse(inp["semantic"], inp["masks"], inp["boxes"], inp["scores"], inp["labels"],
               strategy=strategy, num_stuff=LABELS.num_stuff,
               category_ids=torch.as_tensor(LABELS.ids), label_divisor=DIVISOR,
               stuff_area=stuff_area, **SETTINGS)
    return out.ids.cpu().numpy()


def reference(strategy: str, inp: dict[str, torch.Tensor], pasted: torch.Tensor,
              stuff_area: float) -> np.ndarray:
    ids, _ = reference_fusion(strategy, inp["semantic"], pasted, inp["boxes"], inp["scores"],
                              inp["labels"], num_stuff=LABELS.num_stuff,
                              category_ids=LABELS.ids, label_divisor=DIVISOR,
                              stuff_area=stuff_area, **SETTINGS)
    return ids


def dense_floor(semantic: torch.Tensor) -> None:
    """The reference's whole-image work: class probabilities and the argmax."""
    torch.softmax(semantic, 0)
    semantic.max(0)


def ours_floor(inp: dict[str, torch.Tensor], stuff_area: float) -> np.ndarray:
    """Our whole-image work, paid at any K: ``fuse`` without detections (semantic argmax,
    argmax probability, per-segment sums) and the id map."""
    empty = {"semantic": inp["semantic"], "masks": inp["masks"][:0], "boxes": inp["boxes"][:0],
             "scores": inp["scores"][:0], "labels": inp["labels"][:0]}
    return ours("efficientps", empty, stuff_area)


def best(repeats: int, fn, *args) -> tuple[float, object]:
    """Fastest of ``repeats`` calls ``fn(*args)`` (seconds) and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - t)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="128x256, K = 2 and 5 (seconds)")
    parser.add_argument("--size", default="1024x2048", help="HxW")
    parser.add_argument("--instances", default="5,20,50")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours (best counts)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.instances, args.repeats = "128x256", "2,5", 1
    if args.threads:
        torch.set_num_threads(args.threads)
    print(host_line())
    h, w = (int(v) for v in args.size.lower().split("x"))
    counts = [int(v) for v in args.instances.split(",")]
    stuff_area = 2048 * h * w / (1024 * 2048)
    print(f"fusion at {h}x{w}, {LABELS.num_classes} classes ({LABELS.num_things} things), "
          f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads; ours: best of "
          f"{args.repeats}, reference: one run (its paste + its fusion)")
    ratios = []
    with torch.inference_mode():
        warm = scene(3, 64, 96, seed=0)
        for strategy in STRATEGIES:  # first calls pay one-off costs
            ours(strategy, warm, 0.0)
        for k in counts:
            inp = scene(k, h, w, seed=k)
            t_paste, pasted_ref = best(1, reference_paste, inp["masks"], inp["boxes"], (h, w))
            pasted = paste_mask_logits(inp["masks"], inp["boxes"], (h, w))
            for strategy in STRATEGIES:
                t_ours, ids = best(args.repeats, ours, strategy, inp, stuff_area)
                t_ref, ids_ref = best(1, reference, strategy, inp, pasted, stuff_area)
                if not np.array_equal(ids, ids_ref):
                    print(f"MISMATCH {strategy} K={k}: {(ids != ids_ref).sum()} pixels differ")
                    return 1
                own_paste = reference(strategy, inp, pasted_ref, stuff_area)
                flips = int((own_paste != ids).sum())
                t_total = t_paste + t_ref
                ratio = t_total / t_ours
                ratios.append(ratio)
                kept = len(np.unique(ids[ids % DIVISOR > 0]))
                print(f"{strategy:12s} K={k:3d} ({kept:2d} instances in the map): ours "
                      f"{t_ours * 1e3:8.1f} ms  reference {t_total * 1e3:9.1f} ms "
                      f"(paste {t_paste * 1e3:.0f})  ratio {ratio:6.1f}x  identical; "
                      f"with the reference's own paste {flips} px differ")
    print(f"min ratio {min(ratios):.1f}x (target >= {TARGET:.0f}x)")
    with torch.inference_mode():
        inp = scene(1, h, w, seed=0)
        t_floor, _ = best(args.repeats, dense_floor, inp["semantic"])
        t_ours_floor, _ = best(args.repeats, ours_floor, inp, stuff_area)
    print(f"dense floor of the reference (softmax + max over the [{LABELS.num_classes}, {h}, "
          f"{w}] logits): {t_floor * 1e3:.1f} ms; of ours (fuse with no detection: argmax, "
          f"argmax probability, per-segment sums, ids): {t_ours_floor * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
