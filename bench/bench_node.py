"""Per-frame cost of the node around the network: conversion, fusion, messages, publishing.

    PYTHONPATH=. .venv/bin/python bench/bench_node.py                  # narrow model, CPU
    PYTHONPATH=. .venv/bin/python bench/bench_node.py --variant b0 --device cuda

For 640x480 and 1920x1080 camera frames (bgr8, the usual driver encoding) it times, each as
the fastest of ``--repeats`` runs after a warm-up (20 runs for the cheap stages):

* conversion: ``image_to_rgb`` of the sensor_msgs/Image (cv_bridge-equivalent bgr8 -> rgb8),
* pre-processing: upload, resize to ``--input-size``, normalise and pad (the Predictor's steps),
* forward: the network alone (backbone, FPN, semantic head, RPN, box and mask heads),
* fusion: semantic + instance fusion on the device (``fuse``),
* result: id map resized to the camera size, copied to the host, segment table,
* messages: PanopticSegmentation + InstanceCounts from the result,
* publish: both messages published to a subscriber (another node of this process, over the
  loopback-only DDS of this run's domain; bounded: 21 frames),
* overlay: drawing and publishing ~/overlay, paid only while someone subscribes,

and prints the overhead (everything but the forward; overlay excluded) and its ratio to the
forward. Random weights with every detection forced through (box score and fusion thresholds
0): up to 100 instances reach the fusion, the load of a trained model in a busy scene. The
whole Predictor call is timed too, as a check on the sum of its parts.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

# Network safety before rclpy starts: loopback only, a domain of this run.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_STATIC_PEERS", None)
os.environ.pop("ROS_LOCALHOST_ONLY", None)
# The test suite's domain when run from it (test/test_bench_smoke.py), else one of this process.
os.environ["ROS_DOMAIN_ID"] = (os.environ.get("PANOPTIC_TEST_DOMAIN_ID")
                               or str(1 + os.getpid() % 100))

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _host import host_line, sync_all  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panoptic_ros.msg import InstanceCounts, PanopticSegmentation  # noqa: E402

from panoptic_ros.inference import Predictor, PredictorConfig, fit_size  # noqa: E402
from panoptic_ros.models.fusion import fuse, to_panoptic_result  # noqa: E402
from panoptic_ros.models.preprocess import normalize_and_pad  # noqa: E402
from panoptic_ros.ros.conversions import array_to_image, image_to_rgb  # noqa: E402
from panoptic_ros.ros.messages import instance_counts_msg, panoptic_msg, rgb_msg  # noqa: E402
from panoptic_ros.viz import overlay  # noqa: E402

SIZES = ((480, 640), (1080, 1920))
LIGHT_REPEATS = 20
"""Runs of the cheap stages (conversion, messages, publish, overlay): bounded load."""
OVERHEAD = ("convert", "preproc", "fusion", "result", "messages", "publish")


def best_ms(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Fastest of ``repeats`` timed runs after one warm-up, ms.

    The minimum, not the median: on a shared machine the minimum is the stage's own cost and
    the rest is other processes' load.
    """
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def camera_frame(h: int, w: int) -> Image:
    """A bgr8 frame with some structure (sky, ground, boxes) and noise."""
    rng = np.random.default_rng(0)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (230, 140, 90)
    img[h // 2 :] = (50, 120, 60)
    for _ in range(12):
        y, x = rng.integers(0, h - h // 6), rng.integers(0, w - w // 8)
        img[y : y + h // 6, x : x + w // 8] = rng.integers(0, 256, 3)
    img = np.clip(img + rng.integers(0, 16, img.shape), 0, 255).astype(np.uint8)
    msg = array_to_image(img, "bgr8")
    msg.header.frame_id = "camera"
    msg.header.stamp.sec = 1
    return msg


class Loopback:
    """A publisher node and a subscriber node in this process, spun in a thread."""

    def __init__(self) -> None:
        rclpy.init()
        self.pub_node = rclpy.create_node("bench_panoptic_pub")
        self.sub_node = rclpy.create_node("bench_panoptic_sub")
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.received = 0
        self.cond = threading.Condition()
        self.pubs = {
            "panoptic": self.pub_node.create_publisher(PanopticSegmentation, "~/panoptic", qos),
            "counts": self.pub_node.create_publisher(InstanceCounts, "~/instance_counts", qos),
            "overlay": self.pub_node.create_publisher(Image, "~/overlay", qos),
        }
        for msg_type, topic in ((PanopticSegmentation, "panoptic"),
                                (InstanceCounts, "instance_counts"), (Image, "overlay")):
            self.sub_node.create_subscription(
                msg_type, f"/bench_panoptic_pub/{topic}", self._on_msg, qos)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.pub_node)
        self.executor.add_node(self.sub_node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while any(p.get_subscription_count() == 0 for p in self.pubs.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("the subscriber was not discovered on loopback")
            time.sleep(0.05)

    def _on_msg(self, _msg) -> None:
        with self.cond:
            self.received += 1
            self.cond.notify_all()

    def close(self) -> None:
        self.executor.shutdown()
        rclpy.try_shutdown()


def network_forward(model, x, sizes):
    """The network alone: backbone, FPN and heads, before the post-processing."""
    return model.network(x, sizes)


def fusion_only(model, semantic, detections, sizes):
    """The fusion part of EfficientPS's postprocess (its result part is timed apart)."""
    fusion, out = model.fusion_config, []
    for i, (h, w) in enumerate(sizes):
        det = detections[i]
        out.append(fuse(
            semantic[i, :, :h, :w].float(), det["mask_logits"].float(), det["boxes"].float(),
            det["scores"].float(), det["labels"] + (model.num_stuff - 1),
            strategy=fusion.strategy, num_stuff=model.num_stuff,
            category_ids=model.category_ids, label_divisor=model.label_divisor,
            score_threshold=fusion.score_threshold, overlap_threshold=fusion.overlap_threshold,
            stuff_area=fusion.stuff_area_at(h, w)))
    return out


def measure(h: int, w: int, predictor: Predictor, loop: Loopback, repeats: int,
            sync: Callable[[], None]) -> dict[str, float]:
    """Every stage for one camera frame size, ms (fastest runs)."""
    model, device, label_set = predictor.model, predictor.device, predictor.label_set
    msg = camera_frame(h, w)
    t = {"convert": best_ms(lambda: image_to_rgb(msg), LIGHT_REPEATS, sync)}
    rgb = image_to_rgb(msg)
    net_h, net_w = fit_size(h, w, predictor.input_size)
    spec = model.preprocess_spec()

    def preprocess():
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1)
        x = F.interpolate(x[None].float(), size=(net_h, net_w), mode="bilinear",
                          align_corners=False, antialias=True)[0]
        return normalize_and_pad([x], spec["pixel_mean"], spec["pixel_std"],
                                 int(spec["size_divisibility"]), predictor.channels_last)

    with torch.inference_mode():
        t["preproc"] = best_ms(preprocess, repeats, sync)
        x, sizes = preprocess()
        t["forward"] = best_ms(lambda: network_forward(model, x, sizes), repeats, sync)
        semantic, detections = network_forward(model, x, sizes)
        t["fusion"] = best_ms(lambda: fusion_only(model, semantic, detections, sizes),
                                repeats, sync)
        fused = fusion_only(model, semantic, detections, sizes)[0]
        t["result"] = best_ms(
            lambda: to_panoptic_result(fused, label_set, model.label_divisor, (h, w)),
            repeats, sync)
        t["predict"] = best_ms(lambda: predictor.predict(rgb), repeats, sync)
    result = to_panoptic_result(fused, label_set, model.label_divisor, (h, w))
    t["messages"] = best_ms(lambda: (panoptic_msg(result, msg.header, label_set),
                                       instance_counts_msg(result, msg.header, label_set)),
                              LIGHT_REPEATS, sync)
    pan = panoptic_msg(result, msg.header, label_set)
    cnt = instance_counts_msg(result, msg.header, label_set)

    def publish():
        loop.pubs["panoptic"].publish(pan)
        loop.pubs["counts"].publish(cnt)

    t["publish"] = best_ms(publish, LIGHT_REPEATS, sync)

    def draw_and_publish():
        image = overlay(rgb, result, label_set, alpha=0.5)
        loop.pubs["overlay"].publish(rgb_msg(image, msg.header))

    t["overlay"] = best_ms(draw_and_publish, LIGHT_REPEATS, sync)
    t["segments"] = len(result.segments)
    t["detections"] = int(detections[0]["scores"].numel())
    return t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="narrow", help="EfficientPS variant (random init)")
    parser.add_argument("--label-set", default="coco_panoptic")
    parser.add_argument("--input-size", type=int, default=512, help="network shorter side")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--natural-detections", action="store_true",
                        help="keep the 0.5 score thresholds (random weights: few detections)")
    parser.add_argument("--smoke", action="store_true",
                        help="CI: one 160x120 frame, network shorter side 96, one run")
    args = parser.parse_args()
    print(host_line())
    sizes = SIZES
    if args.smoke:
        sizes, args.input_size, args.repeats = ((120, 160),), 96, 1

    forced = not args.natural_detections
    predictor = Predictor(PredictorConfig(
        weights=None, variant=args.variant, label_set=args.label_set, device=args.device,
        input_size=args.input_size, inference={"score_threshold": 0.0} if forced else {}))
    if forced:
        predictor.model.roi_heads.score_thresh = 0.0  # random weights: every detection through
    sync = sync_all if predictor.device.type == "cuda" else (lambda: None)
    loop = Loopback()
    print(f"EfficientPS {args.variant} (random init, "
          f"{'detections forced' if forced else 'natural detections'}), "
          f"{predictor.label_set.name} ({len(predictor.label_set)} classes), input shorter side "
          f"{args.input_size}, device {predictor.device}, torch threads "
          f"{torch.get_num_threads()}; fastest of {args.repeats} runs "
          f"({LIGHT_REPEATS} for the cheap stages)")
    header = (f"{'frame':>10} {'convert':>8} {'preproc':>8} {'forward':>9} {'fusion':>8} "
              f"{'result':>8} {'messages':>8} {'publish':>8} {'overhead':>9} {'ratio':>6} "
              f"{'overlay':>8} {'predict':>9} {'dets':>5} {'segs':>5}")
    print(header)
    print("-" * len(header))
    try:
        for h, w in sizes:
            t = measure(h, w, predictor, loop, args.repeats, sync)
            overhead = sum(t[k] for k in OVERHEAD)
            print(f"{w:>4}x{h:<5} {t['convert']:8.2f} {t['preproc']:8.2f} {t['forward']:9.1f} "
                  f"{t['fusion']:8.2f} {t['result']:8.2f} {t['messages']:8.2f} "
                  f"{t['publish']:8.2f} {overhead:9.2f} {overhead / t['forward']:6.3f} "
                  f"{t['overlay']:8.2f} {t['predict']:9.1f} {t['detections']:5d} "
                  f"{t['segments']:5d}")
        with loop.cond:
            loop.cond.wait_for(lambda: loop.received > 0, timeout=10)
            delivered = loop.received
    finally:
        loop.close()
    print("times in ms per frame; overhead = " + " + ".join(OVERHEAD) + " (overlay apart: only "
          "while subscribed); ratio = overhead / forward; predict = the whole Predictor call, "
          f"for comparison; {delivered} messages reached the subscriber")
    return 0


if __name__ == "__main__":
    sys.exit(main())
