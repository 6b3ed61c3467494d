"""Network measurements: parameters, CPU/GPU forward time, FLOPs; EfficientPS and Mask2Former
against torchvision's Mask R-CNN R50-FPN.

    PYTHONPATH=. .venv/bin/python bench/bench_network.py            # full (minutes on CPU)
    PYTHONPATH=. .venv/bin/python bench/bench_network.py --smoke    # tiny sizes, seconds

Times are the minimum (and median) over ``--repeats`` eval forwards after one warm-up, with
random weights: few or no detections pass the 0.5 score threshold, so the instance branch
mostly costs the RPN and the box head on the proposals. FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2) with every detection
forced through (score threshold 0: 1000 proposals in the box head, 100 detections in the mask
head and the fusion), so the count covers the whole network. The torchvision Mask R-CNN
R50-FPN baseline is built with ``weights=None, weights_backbone=None`` (nothing downloaded) and
its transform set to keep the input size. Mask2Former is the Swin-T configuration of the
``mask2former-swin-tiny`` checkpoints (Swin embed 96, depths 2-2-6-2, heads 3-6-12-24, window
7; transformers' defaults for the rest: 100 queries, 6 pixel-decoder and 10 decoder layers,
256 channels) with the 19 Cityscapes classes, random init, run through our backend (panoptic
inference included); its FLOP count misses the deformable attention's ``grid_sample``
(FlopCounterMode counts matmuls and convolutions). ``--smoke`` uses a tiny Mask2Former.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _host import host_line, sync_all  # noqa: E402

from panoptic_ros.categories import cityscapes  # noqa: E402
from panoptic_ros.models.efficientps import EfficientPS, EfficientPSConfig  # noqa: E402
from panoptic_ros.models.preprocess import normalize_and_pad  # noqa: E402

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


def efficientps_forced(variant: str, force: bool) -> EfficientPS:
    """:func:`efficientps` with 100 detections forced through, or none."""
    return efficientps(variant, 100 if force else 0)


def maskrcnn_forced(size: tuple[int, int], light: bool, force: bool) -> torch.nn.Module:
    """:func:`maskrcnn` with every detection forced through, or not; ``light``: 50 proposals,
    10 detections (smoke runs)."""
    model = maskrcnn(size, force_detections=force)
    if light:
        model.rpn._post_nms_top_n["testing"] = 50
        model.roi_heads.detections_per_img = 10
    return model


def mask2former(tiny: bool = False, force: bool = False) -> torch.nn.Module:
    """Random-init Mask2Former (Swin-T, or a tiny config) as our backend, Cityscapes classes.

    ``force`` is accepted for symmetry: every query reaches the panoptic inference anyway.
    """
    import transformers

    from panoptic_ros.models.hf_labels import map_labels
    from panoptic_ros.models.mask2former import Mask2FormerBackend

    transformers.logging.set_verbosity_error()
    id2label = {i: c.name for i, c in enumerate(LABELS)}
    kwargs = dict(id2label=id2label, label2id={v: k for k, v in id2label.items()})
    stages = ["stage1", "stage2", "stage3", "stage4"]
    if tiny:
        backbone = transformers.SwinConfig(
            embed_dim=12, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
            out_features=stages)
        kwargs.update(backbone_config=backbone, feature_size=32, mask_feature_size=32,
                      hidden_dim=32, encoder_feedforward_dim=32, dim_feedforward=32,
                      encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                      num_queries=10)
    else:  # Swin-T (transformers' default backbone is deeper: depths 2-2-18-2)
        kwargs["backbone_config"] = transformers.SwinConfig(
            embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
            out_features=stages)
    torch.manual_seed(0)
    config = transformers.Mask2FormerConfig(use_pretrained_backbone=False, **kwargs)
    model = transformers.Mask2FormerForUniversalSegmentation(config)
    return Mask2FormerBackend(model, map_labels(id2label, "cityscapes")).eval()


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
    elif hasattr(model, "preprocess_spec"):  # another backend of ours: normalise, pad, predict
        spec = model.preprocess_spec()
        batch, sizes = normalize_and_pad([image], spec["pixel_mean"], spec["pixel_std"],
                                         spec["size_divisibility"])
        model.predict(batch, sizes)
    else:
        model([image.float() / 255.0])


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def backbone_params(model: torch.nn.Module) -> int:
    if isinstance(model, EfficientPS):
        return params(model.backbone)
    if hasattr(model, "backbone"):  # torchvision Mask R-CNN
        return params(model.backbone.body)
    return params(model.model.model.pixel_level_module.encoder)  # transformers Mask2Former


@torch.inference_mode()
def forward_time(model: torch.nn.Module, size: tuple[int, int], repeats: int,
                 device: torch.device) -> tuple[float, float]:
    model = model.to(device)
    if device.type == "cuda":  # as the Predictor runs it there
        model = model.to(memory_format=torch.channels_last)
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, device=device)
    run_once(model, image)  # warm-up
    times = []
    for _ in range(repeats):
        sync_all()
        t = time.perf_counter()
        run_once(model, image)
        sync_all()
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
    parser.add_argument("--smoke", action="store_true",
                        help="CI: narrow, a tiny Mask2Former, a light Mask R-CNN, tiny sizes, "
                             "one repeat")
    parser.add_argument("--variants", default="narrow,b0,b5")
    parser.add_argument("--size", default="512x1024", help="timing and FLOP size HxW")
    parser.add_argument("--narrow-size", default="256x320", help="extra timing size of narrow")
    parser.add_argument("--narrow-detections", type=int, default=10,
                        help="detections forced through in the extra narrow timing")
    parser.add_argument("--flops-size", default="1024x2048",
                        help="size of the b5 FLOP count (the paper's resolution)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--no-maskrcnn", action="store_true", help="skip the baseline")
    parser.add_argument("--no-mask2former", action="store_true", help="skip Mask2Former")
    args = parser.parse_args(argv)
    if args.smoke:
        args.variants, args.size, args.narrow_size, args.flops_size, args.repeats = \
            "narrow", "64x128", "64x80", "", 1
    print(host_line())
    if args.threads:
        torch.set_num_threads(args.threads)
    size = parse_size(args.size)
    device = torch.device(args.device)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    print(f"device {device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")

    # (name, builder(force_detections) -> model)
    models: list[tuple[str, Callable[[bool], torch.nn.Module]]] = [
        (f"EfficientPS {v}", functools.partial(efficientps_forced, v)) for v in variants
    ]
    if not args.no_mask2former:
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("transformers is not installed: no Mask2Former row (pip install '.[hf]')")
        else:
            name = "Mask2Former tiny (test config)" if args.smoke else "Mask2Former Swin-T"
            models.append((f"{name} (transformers)",
                           functools.partial(mask2former, args.smoke)))
    if not args.no_maskrcnn:
        models.append(("Mask R-CNN R50-FPN (torchvision)",
                       functools.partial(maskrcnn_forced, size, args.smoke)))

    rows = []
    for name, build in models:
        model = build(False)
        t_min, t_med = forward_time(model, size, args.repeats, device)
        # FLOPs of the whole network: every detection forced through (module docstring).
        if args.no_flops:
            n_flops = None
        else:
            n_flops = flops(model.cpu() if name.startswith("Mask2Former") else build(True), size)
        rows.append((name, params(model), backbone_params(model), n_flops, t_min, t_med))
        if name == "EfficientPS narrow" and args.narrow_size:
            n_size = parse_size(args.narrow_size)
            for forced in (0, args.narrow_detections):
                n_model = efficientps("narrow", forced) if forced else model
                n_min, n_med = forward_time(n_model, n_size, max(1, args.repeats * 4), device)
                what = f"{forced} forced detections" if forced else "random weights"
                print(f"EfficientPS narrow at {args.narrow_size} ({what}): min "
                      f"{n_min * 1e3:.1f} ms, median {n_med * 1e3:.1f} ms")
    base = rows[-1][4] if not args.no_maskrcnn else None
    print(f"\n| model | params | backbone params | GFLOPs {args.size} | forward {args.size} "
          f"min / median (ms) |" + (" time / Mask R-CNN |" if base else ""))
    print("|---|---|---|---|---|" + ("---|" if base else ""))
    for name, n, nb, n_flops, t_min, t_med in rows:
        ratio = f" {t_min / base:.2f} |" if base else ""
        gflops = "-" if n_flops is None else f"{n_flops / 1e9:.1f}"
        print(f"| {name} | {n / 1e6:.2f} M | {nb / 1e6:.2f} M | {gflops} | "
              f"{t_min * 1e3:.0f} / {t_med * 1e3:.0f} |{ratio}")

    if args.no_flops or not args.flops_size or "b5" not in variants:
        return 0
    flops_size = parse_size(args.flops_size)
    print(f"\nEfficientPS b5 FLOPs at {args.flops_size} (FlopCounterMode, multiply-add = 2 "
          f"FLOPs):")
    model = efficientps("b5", force_detections=100)
    dense = flops(model, flops_size, dense_only=True)
    full = flops(model, flops_size)
    cfg = model.config
    print(f"| EfficientPS b5 backbone+FPN+semantic head | {dense / 1e9:.1f} GFLOPs |")
    print(f"| EfficientPS b5 full ({cfg.rpn_post_nms_test} proposals, "
          f"{cfg.detections_per_image} detections) | {full / 1e9:.1f} GFLOPs |")
    if not args.no_maskrcnn:
        mr = flops(maskrcnn(flops_size, force_detections=True), flops_size)
        print(f"| Mask R-CNN R50-FPN full (1000 proposals, 100 detections) | "
              f"{mr / 1e9:.1f} GFLOPs |")
        print(f"| ratio EfficientPS b5 / Mask R-CNN | {full / mr:.2f} |")
    print("The EfficientPS paper's own FLOP figure is not in our references "
          "(shared/REFERENCES.md): no comparison with it is made.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
