"""EfficientPS network measurements: parameters, CPU/GPU forward time, FLOPs; vs Mask R-CNN.

    PYTHONPATH=. .venv/bin/python bench/bench_network.py            # full (minutes on CPU)
    PYTHONPATH=. .venv/bin/python bench/bench_network.py --smoke    # tiny sizes, seconds

Times are the minimum (and median) over ``--repeats`` eval forwards after one warm-up, with
random weights: few or no detections pass the 0.5 score threshold, so the instance branch
mostly costs the RPN and the box head on the proposals. FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2) with every detection
forced through (score threshold 0: 1000 proposals in the box head, 100 detections in the mask
head and the fusion), so the count covers the whole network. The torchvision Mask R-CNN
R50-FPN baseline is built with ``weights=None, weights_backbone=None`` (nothing downloaded) and
its transform set to keep the input size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panoptic_ros.categories import cityscapes  # noqa: E402
from panoptic_ros.models.efficientps import EfficientPS, EfficientPSConfig  # noqa: E402

LABELS = cityscapes()


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def efficientps(variant: str, force_detections: int = 0) -> EfficientPS:
    """Random-weight model; ``force_detections`` > 0 lets that many detections through."""
    data = {"variant": variant}
    if force_detections:
        data.update(detection_score_threshold=0.0, detections_per_image=force_detections,
                    fusion={"score_threshold": 0.0})
    torch.manual_seed(0)
    return EfficientPS(EfficientPSConfig.from_dict(data), LABELS).eval()


def maskrcnn(size: tuple[int, int], force_detections: bool = False) -> torch.nn.Module:
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=LABELS.num_things + 1,
        min_size=min(size), max_size=max(size),
        box_score_thresh=0.0 if force_detections else 0.05,
    )
    return model.eval()


def run_once(model: torch.nn.Module, image: torch.Tensor) -> None:
    if isinstance(model, EfficientPS):
        model([image])
    else:
        model([image.float() / 255.0])


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def forward_time(model: torch.nn.Module, size: tuple[int, int], repeats: int,
                 device: torch.device) -> tuple[float, float]:
    model = model.to(device)
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, device=device)
    run_once(model, image)  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        run_once(model, image)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


@torch.inference_mode()
def flops(model: torch.nn.Module, size: tuple[int, int], dense_only: bool = False) -> int:
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8)
    with FlopCounterMode(display=False) as counter:
        if dense_only:
            x, _ = model.preprocess([image])
            model.dense(x)
        else:
            run_once(model, image)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--variants", default="narrow,b0,b5")
    parser.add_argument("--size", default="512x1024", help="timing size HxW")
    parser.add_argument("--narrow-size", default="256x320", help="extra timing size of narrow")
    parser.add_argument("--narrow-detections", type=int, default=10,
                        help="detections forced through in the extra narrow timing")
    parser.add_argument("--flops-size", default="1024x2048", help="FLOP count size HxW")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--no-maskrcnn", action="store_true", help="skip the baseline")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.narrow_size, args.flops_size, args.repeats = "64x128", "64x80", \
            "128x256", 1
    if args.threads:
        torch.set_num_threads(args.threads)
    size, flops_size = parse_size(args.size), parse_size(args.flops_size)
    device = torch.device(args.device)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    print(f"device {device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")

    rows = []
    for variant in variants:
        model = efficientps(variant)
        t_min, t_med = forward_time(model, size, args.repeats, device)
        rows.append((f"EfficientPS {variant}", params(model), params(model.backbone),
                     t_min, t_med))
        if variant == "narrow" and args.narrow_size:
            n_size = parse_size(args.narrow_size)
            for forced in (0, args.narrow_detections):
                n_model = efficientps("narrow", forced) if forced else model
                n_min, n_med = forward_time(n_model, n_size, args.repeats * 4, device)
                what = f"{forced} forced detections" if forced else "random weights"
                print(f"EfficientPS narrow at {args.narrow_size} ({what}): min "
                      f"{n_min * 1e3:.1f} ms, median {n_med * 1e3:.1f} ms")
    base = None
    if not args.no_maskrcnn:
        model = maskrcnn(size)
        t_min, t_med = forward_time(model, size, args.repeats, device)
        base = t_min
        rows.append(("Mask R-CNN R50-FPN (torchvision)", params(model),
                     params(model.backbone.body), t_min, t_med))

    print(f"\n| model | params | backbone params | forward {args.size} min / median (ms) |"
          + (" time / Mask R-CNN |" if base else ""))
    print("|---|---|---|---|" + ("---|" if base else ""))
    for name, n, nb, t_min, t_med in rows:
        ratio = f" {t_min / base:.2f} |" if base else ""
        print(f"| {name} | {n / 1e6:.2f} M | {nb / 1e6:.2f} M | "
              f"{t_min * 1e3:.0f} / {t_med * 1e3:.0f} |{ratio}")

    if args.no_flops:
        return 0
    print(f"\nFLOPs at {args.flops_size} (FlopCounterMode, multiply-add = 2 FLOPs):")
    flop_variant = "b5" if "b5" in variants else variants[-1]
    model = efficientps(flop_variant, force_detections=100)
    dense = flops(model, flops_size, dense_only=True)
    full = flops(model, flops_size)
    print(f"| EfficientPS {flop_variant} backbone+FPN+semantic head | {dense / 1e9:.1f} GFLOPs |")
    cfg = model.config
    print(f"| EfficientPS {flop_variant} full ({cfg.rpn_post_nms_test} proposals, "
          f"{cfg.detections_per_image} detections) | {full / 1e9:.1f} GFLOPs |")
    if not args.no_maskrcnn:
        mr = flops(maskrcnn(flops_size, force_detections=True), flops_size)
        print(f"| Mask R-CNN R50-FPN full (1000 proposals, 100 detections) | "
              f"{mr / 1e9:.1f} GFLOPs |")
        print(f"| ratio EfficientPS {flop_variant} / Mask R-CNN | {full / mr:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
