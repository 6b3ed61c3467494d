"""3D per segment and the labelled point cloud: cost against straightforward implementations, and
the centroid error of the bundled model on held-out synthetic sequences.

Cost: a 640x480 synthetic sequence frame with exact depth and about 30 segments, one thread.
``segment_geometry`` vs a reference that builds one boolean mask per segment, back-projects its
pixels and calls ``np.median`` / ``np.percentile``; ``labelled_points`` vs a reference that
back-projects each segment's pixels through its own mask and puts the points back in pixel
order. Results must be identical (asserted). Goals (issue 15): all per-segment 3D <= 5 ms, the
full cloud (307 k points) <= 10 ms.

Accuracy: the bundled model (``Predictor(weights="demo")``) on held-out sequences (seed 2027),
its masks through the same 3D step; matched things (same category, IoU > 0.5) within 15 m of
the camera, error = |centroid - position_m|. Goal: median <= 0.10 m.

    PYTHONPATH=. .venv/bin/python bench/bench_depth.py                 # cost + 20 x 20 frames
    PYTHONPATH=. .venv/bin/python bench/bench_depth.py --smoke         # 240x320, 1 x 2 frames
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
from _host import host_line  # noqa: E402

from panoptic_ros.data.sequences import SequenceConfig, generate_sequence  # noqa: E402
from panoptic_ros.evaluation.centroid import CentroidStat, centroid_frame  # noqa: E402
from panoptic_ros.geometry import (  # noqa: E402
    POINT_DTYPE,
    geometry_json,
    intrinsics_from_calibration,
    labelled_points,
    pack_rgb,
    segment_geometry,
)
from panoptic_ros.geometry.segments import ray_slopes  # noqa: E402
from panoptic_ros.result import PanopticResult, SegmentGeometry  # noqa: E402

GEOMETRY_GOAL_MS, CLOUD_GOAL_MS, CENTROID_GOAL_M, MAX_RANGE_M = 5.0, 10.0, 0.10, 15.0


def reference_geometry(result: PanopticResult, depth: np.ndarray, camera) -> list:
    """One boolean mask per segment; numpy's median / percentile on its points."""
    sx, sy = ray_slopes(result.height, result.width, camera)
    out = []
    for seg in result.segments:
        rows, cols = np.nonzero((result.ids == seg.id) & (depth > 0))
        if len(rows) == 0:
            out.append(None)
            continue
        z = depth[rows, cols]
        x, y = sx[cols] * z, sy[rows] * z
        r = np.sqrt(x * x + y * y + z * z).astype(np.float64)
        p = np.stack([x, y, z], axis=1).astype(np.float64)
        med, lo, hi = np.median(p, axis=0), np.percentile(p, 5, axis=0), np.percentile(p, 95,
                                                                                   axis=0)
        out.append(SegmentGeometry(len(rows) / seg.area, tuple(float(v) for v in med),
                                   float(np.percentile(r, 5)), tuple(float(v) for v in lo),
                                   tuple(float(v) for v in hi)))
    return out


def reference_cloud(result: PanopticResult, depth: np.ndarray, rgb: np.ndarray,
                    camera) -> np.ndarray:
    """Per segment (void included): its mask, its pixels back-projected; then pixel order."""
    sx, sy = ray_slopes(result.height, result.width, camera)
    packed = pack_rgb(rgb).view("<f4")
    parts, where = [], []
    for sid in [0] + [s.id for s in result.segments]:
        rows, cols = np.nonzero((result.ids == sid) & (depth > 0))
        z = depth[rows, cols]
        pts = np.empty(len(rows), POINT_DTYPE)
        pts["x"], pts["y"], pts["z"] = sx[cols] * z, sy[rows] * z, z
        pts["rgb"], pts["id"] = packed[rows, cols], sid
        parts.append(pts)
        where.append(rows * result.width + cols)
    order = np.argsort(np.concatenate(where), kind="stable")
    return np.concatenate(parts)[order]


def timed(fn: Callable[[], object], repeats: int) -> tuple[object, np.ndarray]:
    """The last output and the per-call times (ms) after one warm-up call."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return out, np.array(times)


def busy_frame(height: int, width: int, segments: int):
    """The first frame of held-out sequences with at least ``segments`` segments (or the most)."""
    cfg = SequenceConfig(height=height, width=width, min_things=segments, max_things=segments + 8)
    best = None
    for video in range(12):
        frame = next(generate_sequence(2027, video, 1, cfg))
        if best is None or len(frame.result.segments) > len(best.result.segments):
            best = frame
        if len(best.result.segments) >= segments:
            break
    return best


def cost(height: int, width: int, repeats: int) -> bool:
    """Time ours and the references; print the lines; whether the outputs were identical."""
    frame = busy_frame(height, width, 30)
    result, depth, cam = frame.result, frame.depth, intrinsics_from_calibration(frame.camera)
    valid = int(np.count_nonzero(depth > 0))
    print(f"frame {width}x{height}: {len(result.segments)} segments "
          f"({sum(s.is_thing for s in result.segments)} things), {valid} valid depth pixels, "
          f"one thread, {repeats} runs")
    ours, t_ours = timed(lambda: segment_geometry(result, depth, cam), repeats)
    ref, t_ref = timed(lambda: reference_geometry(result, depth, cam), max(3, repeats // 5))
    same_geometry = [s.geometry for s in ours.segments] == ref
    cloud, c_ours = timed(lambda: labelled_points(result, depth, frame.image, cam), repeats)
    cloud_ref, c_ref = timed(lambda: reference_cloud(result, depth, frame.image, cam),
                             max(3, repeats // 5))
    same_cloud = cloud.tobytes() == cloud_ref.tobytes()
    ok = True
    for name, t, r, same, goal in (("per-segment 3D", t_ours, t_ref, same_geometry,
                                    GEOMETRY_GOAL_MS),
                                   (f"cloud ({len(cloud)} points)", c_ours, c_ref, same_cloud,
                                    CLOUD_GOAL_MS)):
        p50, p95 = np.percentile(t, [50, 95])
        r50 = float(np.median(r))
        print(f"{name:24s} ours p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  reference p50 "
              f"{r50:8.2f} ms  ratio {r50 / p50:.1f}x  {'identical' if same else 'DIFFERENT'}")
        print(f"goal {name.split(' (')[0]} <= {goal:g} ms at {width}x{height}: p50 {p50:.2f} "
              f"ms: {'PASS' if p50 <= goal else 'FAIL'}")
        ok &= same
    return ok


def accuracy(sequences: int, frames: int) -> None:
    """Centroid error of the bundled model's matched things; prints the figures."""
    from panoptic_ros.inference import Predictor

    predictor = Predictor(weights="demo", device="cpu")
    things = {c.id for c in predictor.label_set.things}
    stat, truth = CentroidStat(), CentroidStat()
    for video in range(sequences):
        for frame in generate_sequence(2027, video, frames):
            cam = intrinsics_from_calibration(frame.camera, frame.result.ids.shape)
            pred = segment_geometry(predictor(frame.image), frame.depth, cam)
            pred_info = [{"id": s.id, "category_id": s.category_id, **geometry_json(s.geometry)}
                         for s in pred.segments]
            gt_info = frame.segments_info()
            stat += centroid_frame(frame.result.ids, gt_info, pred.ids, pred_info, things)
            own = segment_geometry(frame.result, frame.depth, cam)
            truth += centroid_frame(frame.result.ids, gt_info, own.ids,
                                    [{"id": s.id, "category_id": s.category_id,
                                      **geometry_json(s.geometry)} for s in own.segments],
                                    things)
    res = stat.results(MAX_RANGE_M)
    w = res["within"]
    print(f"centroid error, bundled model, {sequences} sequences x {frames} frames (seed 2027), "
          f"{res['matched']} matched things, {w['count']} within {MAX_RANGE_M:g} m: median "
          f"{w['median_m']:.3f} m, p90 {w['p90_m']:.3f} m (all matched: median "
          f"{res['all']['median_m']:.3f} m, p90 {res['all']['p90_m']:.3f} m)")
    print(f"centroid error, ground-truth masks: max "
          f"{max(truth.errors, default=0.0) * 1000:.2f} mm over {len(truth.errors)} things")
    verdict = "PASS" if w["median_m"] <= CENTROID_GOAL_M else "FAIL"
    print(f"goal median centroid error <= {CENTROID_GOAL_M:g} m within {MAX_RANGE_M:g} m: "
          f"{w['median_m']:.3f} m: {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="240x320, 1 sequence x 2 frames")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--sequences", type=int, default=20)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--no-accuracy", action="store_true", help="cost only")
    args = parser.parse_args()
    print(host_line())
    if args.smoke:
        args.repeats, args.sequences, args.frames = 5, 1, 2
    height, width = (240, 320) if args.smoke else (480, 640)
    same = cost(height, width, args.repeats)
    if not args.no_accuracy:
        accuracy(args.sequences, args.frames)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
