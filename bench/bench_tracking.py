"""Tracking cost per frame: our Tracker vs a straightforward per-pair mask IoU tracker.

20 moving things (people and cars, rectangles and discs, bouncing off the borders, crossing and
occluding each other) over ground and sky at 640x480, 10 Hz with random frames dropped; every
frame gets fresh random instance numbers, as a backend gives. Both trackers follow the same
association rules; the reference computes each (track, detection) IoU from two full boolean
masks (same pixel subsampling) instead of joint histograms. Their outputs must be identical.
One thread (set before numpy loads).

    PYTHONPATH=. .venv/bin/python bench/bench_tracking.py            # 200 frames (the goal)
    PYTHONPATH=. .venv/bin/python bench/bench_tracking.py --smoke    # 20 frames of 240x320
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from _host import host_line  # noqa: E402

from panoptic_ros.categories import synthetic  # noqa: E402
from panoptic_ros.result import PanopticResult, Segment  # noqa: E402
from panoptic_ros.tracking import Track, Tracker, TrackerConfig  # noqa: E402

GOAL_MS = 2.0
PERSON, CAR, SKY, GROUND = 1, 2, 11, 12


def sequence(frames: int, height: int, width: int, things: int, seed: int = 0):
    """``(result, stamp)`` per kept frame of a moving scene (about 1 frame in 4 dropped)."""
    rng = np.random.default_rng(seed)
    scale = height / 480
    cats = rng.choice([PERSON, CAR], size=things)
    half = np.where(cats[:, None] == PERSON, [14, 40], [50, 22]) * scale * rng.uniform(
        0.7, 1.3, (things, 1))
    pos = rng.uniform([0, height * 0.3], [width, height * 0.9], (things, 2))
    vel = rng.uniform(-1, 1, (things, 2)) * np.where(cats[:, None] == PERSON, [150, 20],
                                                      [400, 30]) * scale
    disc = rng.random(things) < 0.5
    yy, xx = np.mgrid[:height, :width]
    out, stamp = [], 0.0
    for k in range(frames):
        stamp = 0.1 * k
        if k and rng.random() < 0.25:
            continue  # dropped under load: the stamp shows the gap
        p = pos + vel * stamp
        p = np.abs((p + [width, height]) % (2 * np.array([width, height])) - [width, height])
        ids = np.full((height, width), SKY * 1000, np.int32)
        ids[height // 3:] = GROUND * 1000
        numbers = {c: list(rng.permutation(np.arange(1, 100))) for c in (PERSON, CAR)}
        scores = {}
        for i in np.argsort(p[:, 1]):  # lower in the image = nearer = drawn later
            (cx, cy), (rx, ry) = p[i], half[i]
            if disc[i]:
                mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
            else:
                mask = (abs(xx - cx) <= rx) & (abs(yy - cy) <= ry)
            sid = int(cats[i]) * 1000 + int(numbers[int(cats[i])].pop())
            ids[mask] = sid
            scores[sid] = float(rng.uniform(0.05, 1.0) if rng.random() < 0.2 else 0.9)
        out.append((PanopticResult.from_ids(ids, synthetic(), scores=scores), stamp))
    return out


class ReferenceTracker(Tracker):
    """Same rules; each IoU from two full-image boolean masks (per pair), same subsampling."""

    def _mask_iou(self, tracks: list[Track], dets: list[Segment], ids: np.ndarray,
                  stamp: float) -> np.ndarray:
        s = self.config.stride
        iou = np.zeros((len(tracks), len(dets)))
        for i, track in enumerate(tracks):
            # The best of the track's placements, as the tracker's rule.
            for x0, y0, crop in track.placements(stamp):
                predicted = placed_mask(ids.shape, x0, y0, crop)[::s, ::s]
                for j, det in enumerate(dets):
                    mask = (ids == det.id)[::s, ::s]
                    union = np.count_nonzero(predicted | mask)
                    value = np.count_nonzero(predicted & mask) / union if union else 0.0
                    iou[i, j] = max(iou[i, j], value)
        return iou


def placed_mask(shape: tuple[int, int], x0: int, y0: int, crop: np.ndarray) -> np.ndarray:
    """ndarray[H, W] bool: ``crop`` with its top-left pixel at ``(x0, y0)``, clipped."""
    oy, ox = crop.shape
    big = np.zeros((shape[0] + 2 * oy, shape[1] + 2 * ox), bool)
    if -oy < y0 < shape[0] and -ox < x0 < shape[1]:
        big[y0 + oy:y0 + 2 * oy, x0 + ox:x0 + 2 * ox] = crop
    return big[oy:oy + shape[0], ox:ox + shape[1]]


def run(tracker: Tracker, frames) -> tuple[list[PanopticResult], np.ndarray]:
    """Outputs and per-frame times (ms)."""
    outs, times = [], []
    for result, stamp in frames:
        start = time.perf_counter()
        outs.append(tracker.update(result, stamp, "camera"))
        times.append((time.perf_counter() - start) * 1e3)
    return outs, np.array(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="20 frames of 240x320")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--things", type=int, default=20)
    args = parser.parse_args()
    height, width, count = (240, 320, 20) if args.smoke else (480, 640, args.frames)
    print(host_line())
    frames = sequence(count, height, width, args.things)
    config = TrackerConfig()
    things = np.mean([sum(s.is_thing for s in r.segments) for r, _ in frames])
    print(f"tracking, {len(frames)} kept frames of {count} at {height}x{width}, "
          f"{args.things} moving things ({things:.1f} visible per frame), stride "
          f"{config.stride}, one thread")
    ours, t_ours = run(Tracker(config), frames)
    ref, t_ref = run(ReferenceTracker(config), frames)
    same = all(np.array_equal(a.ids, b.ids) and a.segments == b.segments
               for a, b in zip(ours, ref))
    tracks = max(s.track_id for r in ours for s in r.segments)
    skip = min(5, len(frames) - 1)  # warm-up
    p50, p95 = np.percentile(t_ours[skip:], [50, 95])
    r50, r95 = np.percentile(t_ref[skip:], [50, 95])
    print(f"ours       ms/frame p50 {p50:7.3f}  p95 {p95:7.3f}")
    print(f"reference  ms/frame p50 {r50:7.3f}  p95 {r95:7.3f}  ({tracks} tracks)")
    print(f"ratio reference / ours (p50) {r50 / p50:.1f}x  "
          f"{'identical' if same else 'DIFFERENT'} associations")
    verdict = "PASS" if p50 <= GOAL_MS else "FAIL"
    print(f"goal <= {GOAL_MS} ms/frame at {height}x{width}: p50 {p50:.3f} ms: {verdict} "
          f"(p95 {p95:.3f} ms)")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
