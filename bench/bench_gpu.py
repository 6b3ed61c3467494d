"""GPU timings: EfficientPS b5 at 1024x2048 and narrow at 640x480 against torchvision Mask R-CNN.

    PYTHONPATH=. .venv/bin/python bench/bench_gpu.py            # CUDA: the full table
    PYTHONPATH=. .venv/bin/python bench/bench_gpu.py --smoke    # tiny sizes, CPU allowed

On CUDA it times, after a warm-up, the median and p90 of ``--repeats`` calls of:

* EfficientPS b5 at 1024x2048 (the paper's Cityscapes resolution) and narrow at 640x480, each
  in fp32 and fp16 (autocast), channels-last, eager and ``torch.compile`` (inductor, dense
  part), through the :class:`~panoptic_ros.inference.Predictor`: uint8 frame on the host in,
  id map on the host out (upload, resize, normalise, network, fusion, download);
* torchvision's Mask R-CNN R50-FPN (``weights=None, weights_backbone=None``: nothing is
  downloaded) at the same size, precision and layout, eager, in the same run: host frame in,
  its outputs on the device; every EfficientPS row prints its time / Mask R-CNN's;
* the node's per-frame work at 640x480 with the bundled demo model: a bgr8
  ``sensor_msgs/Image`` converted to RGB, the Predictor, the PanopticSegmentation and
  InstanceCounts messages built (no DDS: that cost is ``bench_node.py``'s), as frames/s.

Random weights (no trained b5 exists here): few detections pass the 0.5 score threshold, so
the instance branch costs mostly the RPN and the box head. ``torch.cuda.synchronize()`` on
every device used closes each timed call. Targets printed for comparison: the EfficientPS
paper's 166 ms per 1024x2048 image, and this project's goal of <= 100 ms for b5 at
1024x2048 in fp16 + channels-last. Rows are printed as they are measured (compiled rows last),
so a run cut short by a time limit still reports what it measured.

``--smoke``: tiny sizes, one warm-up, two repeats, fp16 and compile only on CUDA; runs on the
CPU where there is no GPU (the suite's ``test/test_bench_smoke.py``). Without CUDA and without
``--smoke`` it prints the machine facts and says there is nothing to time.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _host import host_line, sync_all  # noqa: E402

from panoptic_ros.categories import cityscapes  # noqa: E402
from panoptic_ros.data.synthetic import SceneConfig, generate_scene  # noqa: E402
from panoptic_ros.inference import Predictor  # noqa: E402

PAPER_MS = 166.0
"""EfficientPS paper: 166 ms per 1024x2048 Cityscapes image (their GPU, their code)."""
GOAL_MS = 100.0
"""This project's goal: b5 at 1024x2048, fp16 + channels-last, median <= 100 ms."""
NODE_SIZE = (480, 640)


@dataclass(frozen=True)
class Case:
    """One EfficientPS model at one input size."""

    name: str
    variant: str
    size: tuple[int, int]


def cuda_facts() -> list[str]:
    """``nvidia-smi`` and torch's view of the GPUs, one line each."""
    lines = []
    smi = shutil.which("nvidia-smi")
    if smi is None:
        lines.append("nvidia-smi: not found")
    else:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv"],
                capture_output=True, text=True, timeout=30)
            text = (out.stdout or out.stderr).strip().replace("\n", "; ")
            lines.append(f"nvidia-smi: {text or f'exit {out.returncode}'}")
        except (OSError, subprocess.TimeoutExpired) as err:
            lines.append(f"nvidia-smi: failed ({err})")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i}: {p.name}, compute capability {p.major}.{p.minor}, "
                         f"{p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
        lines.append(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
                     f"{torch.backends.cudnn.version()}, TF32 conv "
                     f"{torch.backends.cudnn.allow_tf32}, TF32 matmul "
                     f"{torch.backends.cuda.matmul.allow_tf32}")
    else:
        lines.append(f"torch {torch.__version__}: no CUDA device (torch.cuda.is_available() "
                     f"is false)")
    lines.append(f"python {platform.python_version()}, {platform.platform()}")
    return lines


def make_sync(device: torch.device) -> Callable[[], None]:
    """Wait for every CUDA device used (a no-op on the CPU)."""
    if device.type != "cuda":
        return lambda: None
    return sync_all


def timed(fn: Callable[[], object], warmup: int, repeats: int,
          sync: Callable[[], None]) -> tuple[float, float]:
    """``(median, p90)`` in ms of ``repeats`` synchronised calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), float(np.percentile(times, 90))


def scene_frame(size: tuple[int, int]) -> np.ndarray:
    """A generated street-like scene of ``size`` (H, W), uint8 RGB."""
    return generate_scene(0, SceneConfig(height=size[0], width=size[1])).image


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype={"fp16": torch.float16,
                                              "bf16": torch.bfloat16}[precision])


def maskrcnn_ms(size: tuple[int, int], precision: str, device: torch.device, frame: np.ndarray,
                warmup: int, repeats: int, light: bool) -> tuple[float, float]:
    """torchvision Mask R-CNN R50-FPN, random weights, channels-last, eager."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=cityscapes().num_things + 1,
        min_size=min(size), max_size=max(size)).eval().to(device)
    model = model.to(memory_format=torch.channels_last)
    if light:
        model.rpn._post_nms_top_n["testing"] = 50
        model.roi_heads.detections_per_img = 10
    held = [model]  # released before the cache is emptied
    del model
    host = torch.from_numpy(frame)
    if device.type == "cuda":
        host = host.pin_memory()

    @torch.inference_mode()
    def run():
        x = host.to(device, non_blocking=True).permute(2, 0, 1).float().div_(255.0)
        with autocast(device, precision):
            return held[0]([x])

    try:
        return timed(run, warmup, repeats, make_sync(device))
    finally:
        held.clear()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def efficientps_ms(case: Case, precision: str, compiled: bool, device: torch.device,
                   frame: np.ndarray, warmup: int, repeats: int) -> tuple[float, float]:
    """EfficientPS through the Predictor, random weights, channels-last."""
    torch.manual_seed(0)
    predictor = Predictor(weights=None, variant=case.variant, label_set="cityscapes",
                          device=str(device), precision=precision, channels_last=True,
                          compile=compiled, compile_backend="inductor")
    try:
        # A compiled model pays its compilation in the first calls: warm up longer.
        return timed(lambda: predictor(frame), warmup + (2 if compiled else 0), repeats,
                     make_sync(device))
    finally:
        predictor.release()


def node_rate(device: torch.device, precision: str, size: tuple[int, int], warmup: int,
              repeats: int) -> tuple[tuple[float, float], tuple[float, float]] | str:
    """``((median, p90) of the node's per-frame work, (median, p90) of the Predictor alone)``
    with the demo model, or why it could not run."""
    try:
        from panoptic_ros.ros.conversions import array_to_image, image_to_rgb
        from panoptic_ros.ros.messages import instance_counts_msg, panoptic_msg
    except ImportError as err:
        return f"ROS messages not importable ({err}; `make dev` builds them)"
    predictor = Predictor(weights="demo", device=str(device), precision=precision)
    try:
        rgb = scene_frame(size)
        msg = array_to_image(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8")
        msg.header.frame_id = "camera"
        label_set = predictor.label_set
        sync = make_sync(device)

        def frame():
            result = predictor(image_to_rgb(msg))
            return (panoptic_msg(result, msg.header, label_set),
                    instance_counts_msg(result, msg.header, label_set))

        return (timed(frame, warmup, repeats, sync),
                timed(lambda: predictor(rgb), warmup, repeats, sync))
    finally:
        predictor.release()


def short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160] if text else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="CI: tiny sizes, one warm-up, two repeats; CPU allowed")
    parser.add_argument("--device", default="auto", help="auto (cuda if available) | cuda:N")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--compile-precisions", default=None,
                        help="precisions also timed with torch.compile (default: all of "
                             "--precisions; '' for none)")
    parser.add_argument("--no-node", action="store_true", help="skip the node rate")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # nothing starts rclpy

    print(host_line())
    for line in cuda_facts():
        print(line)
    has_cuda = torch.cuda.is_available()
    device = torch.device("cuda" if args.device == "auto" and has_cuda else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not has_cuda:
        print(f"--device {args.device}: no CUDA device here")
        return 1
    if device.type != "cuda" and not args.smoke:
        print("no CUDA device: nothing to time (bench_gpu.py measures GPUs; --smoke runs "
              "its tiny sizes on the CPU)")
        return 0

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    compile_precisions = precisions if args.compile_precisions is None else [
        p.strip() for p in args.compile_precisions.split(",") if p.strip()]
    cases = [Case("EfficientPS b5", "b5", (1024, 2048)),
             Case("EfficientPS narrow", "narrow", (480, 640))]
    node_size = NODE_SIZE
    if args.smoke:
        cases = [Case("EfficientPS b5", "b5", (64, 128)),
                 Case("EfficientPS narrow", "narrow", (48, 64))]
        node_size, args.warmup, args.repeats = (48, 64), 1, 2
    notes = []
    if device.type != "cuda":
        if precisions != ["fp32"] or compile_precisions:
            notes.append("CPU smoke run: fp32 eager only (fp16 autocast and the compiled "
                         "rows are timed on CUDA)")
        precisions, compile_precisions = ["fp32"], []
    print(f"device {device}; median and p90 of {args.repeats} calls after {args.warmup} "
          f"warm-up calls; random weights, Cityscapes classes; channels-last throughout"
          + ("; SMOKE SIZES: times say nothing" if args.smoke else ""))
    for note in notes:
        print(note)

    header = ("| model | input | precision | layout | compile | median ms | p90 ms "
              "| time / Mask R-CNN |")
    print()
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    baseline: dict[tuple[tuple[int, int], str], float] = {}
    ours: dict[tuple[str, str, bool], float] = {}
    frames = {case.size: scene_frame(case.size) for case in cases}

    def row(name, size, precision, compiled, median, p90, ratio):
        print(f"| {name} | {size[1]}x{size[0]} | {precision} | channels-last | "
              f"{'inductor' if compiled else 'eager'} | {median:.1f} | {p90:.1f} | "
              f"{ratio} |", flush=True)

    def measure(case: Case, precision: str, compiled: bool) -> None:
        try:
            median, p90 = efficientps_ms(case, precision, compiled, device, frames[case.size],
                                         args.warmup, args.repeats)
        except Exception as err:  # a failed configuration is a finding, not the end
            print(f"| {case.name} | {case.size[1]}x{case.size[0]} | {precision} | "
                  f"channels-last | {'inductor' if compiled else 'eager'} | failed: "
                  f"{short(err)} | | |", flush=True)
            return
        ours[(case.variant, precision, compiled)] = median
        base = baseline.get((case.size, precision))
        row(case.name, case.size, precision, compiled, median, p90,
            f"{median / base:.2f}" if base else "n/a")

    for case in cases:
        for precision in precisions:
            try:
                median, p90 = maskrcnn_ms(case.size, precision, device, frames[case.size],
                                          args.warmup, args.repeats, light=args.smoke)
                baseline[(case.size, precision)] = median
                row("Mask R-CNN R50-FPN (torchvision)", case.size, precision, False, median,
                    p90, "1.00")
            except Exception as err:
                print(f"| Mask R-CNN R50-FPN | {case.size[1]}x{case.size[0]} | {precision} | "
                      f"channels-last | eager | failed: {short(err)} | | |", flush=True)
            measure(case, precision, compiled=False)
    for case in cases:  # compiled rows last: minutes of compilation
        for precision in compile_precisions:
            measure(case, precision, compiled=True)

    print()
    if not args.no_node:
        node_precisions = ["fp32", "fp16"] if device.type == "cuda" else ["fp32"]
        for precision in node_precisions:
            got = node_rate(device, precision, node_size, args.warmup, args.repeats)
            if isinstance(got, str):
                print(f"node per-frame work: skipped: {got}")
                break
            (median, p90), (pmedian, _) = got
            print(f"node per-frame work {node_size[1]}x{node_size[0]} bgr8 (demo model, "
                  f"{precision}, convert + Predictor + messages): median {median:.1f} ms, p90 "
                  f"{p90:.1f} ms, {1e3 / median:.1f} frames/s; ratio to the Predictor alone "
                  f"{median / pmedian:.2f}x")

    for case in cases:
        ratios = [(ms / baseline[(case.size, p)], p, c) for (v, p, c), ms in ours.items()
                  if v == case.variant and (case.size, p) in baseline]
        if ratios:
            best = min(ratios)
            print(f"ratio {case.name} / Mask R-CNN at {case.size[1]}x{case.size[0]}: best "
                  f"{best[0]:.2f}x ({best[1]}, {'inductor' if best[2] else 'eager'})")
    b5 = [ms for (v, p, _), ms in ours.items() if v == "b5" and p == "fp16"]
    b5_any = [ms for (v, _, _), ms in ours.items() if v == "b5"]
    size = cases[0].size
    print(f"target: EfficientPS paper {PAPER_MS:.0f} ms per 1024x2048 image; ours b5 "
          f"{size[1]}x{size[0]} best median: "
          + (f"{min(b5_any):.1f} ms" if b5_any else "not measured"))
    if args.smoke or device.type != "cuda":
        print(f"goal: b5 1024x2048 fp16 + channels-last <= {GOAL_MS:.0f} ms: not judged "
              f"(smoke sizes / no CUDA)")
    elif b5:
        verdict = "MET" if min(b5) <= GOAL_MS else "NOT MET"
        print(f"goal: b5 1024x2048 fp16 + channels-last <= {GOAL_MS:.0f} ms: {min(b5):.1f} ms "
              f"(best of eager/compiled): {verdict}")
    else:
        print(f"goal: b5 1024x2048 fp16 + channels-last <= {GOAL_MS:.0f} ms: not measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
