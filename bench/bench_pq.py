"""PQ evaluation speed: ours vs panopticapi-lite (single process) vs hotcoco, same files.

Writes N ground-truth / prediction PNG pairs (Cityscapes-like scenes: stuff bands plus many
thing instances; predictions are shifted, relabelled and partly dropped copies), evaluates them
with the three implementations, checks that the numbers agree and prints times and ratios.
Twice: with every PNG written by OpenCV (as panoptic_ros writes predictions; its "Sub" filter
rows take our fast reader), then with the ground truth re-saved by Pillow (adaptive filters, as
the official COCO and Cityscapes panoptic PNGs; those go through libpng).

    .venv/bin/python bench/bench_pq.py                 # 50 images of 1024x2048 (the target)
    .venv/bin/python bench/bench_pq.py --smoke         # CI size: 4 images of 128x256
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _host import host_line

from panoptic_ros.categories import cityscapes
from panoptic_ros.data.coco_panoptic import write_panoptic_png
from panoptic_ros.evaluation.pq import pq_compute_files


def scene(rng: np.random.Generator, h: int, w: int, start_id: int):
    """Ground-truth segment ids + segments_info and a perturbed prediction of it."""
    ls = cityscapes()
    gt = np.zeros((h, w), np.int32)
    info = []
    next_id = start_id
    # Stuff: horizontal bands with wavy borders.
    stuff = rng.choice([c.id for c in ls.stuff], size=6, replace=False)
    ys = np.sort(rng.integers(0, h, size=5))
    wave = (np.sin(np.arange(w) / rng.uniform(20, 80)) * h * 0.03).astype(int)
    rows = np.arange(h)[:, None]
    band = np.zeros((h, w), int)
    for y in ys:
        band += rows >= (y + wave)[None, :]
    for k, cat in enumerate(stuff):
        gt[band == k] = next_id
        info.append({"id": next_id, "category_id": int(cat), "iscrowd": 0})
        next_id += 1
    # Things: 20-40 ellipses and boxes; one crowd region.
    for k in range(int(rng.integers(20, 41))):
        cat = int(rng.choice([c.id for c in ls.things]))
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        ay, ax = int(rng.integers(h // 60 + 2, h // 8)), int(rng.integers(w // 120 + 2, w // 16))
        mask = np.zeros((h, w), np.uint8)
        if k % 2:
            cv2.ellipse(mask, (cx, cy), (ax, ay), 0, 0, 360, 1, -1)
        else:
            cv2.rectangle(mask, (cx - ax, cy - ay), (cx + ax, cy + ay), 1, -1)
        gt[mask.astype(bool)] = next_id
        info.append({"id": next_id, "category_id": cat, "iscrowd": int(k == 0)})
        next_id += 1
    gt[rng.random((h, w)) < 0.002] = 0  # sprinkled void
    gt[: h // 20] = 0  # a void band (ego vehicle-like)
    present = set(np.unique(gt).tolist())
    info = [s for s in info if s["id"] in present]
    for s in info:
        s["area"] = int((gt == s["id"]).sum())
        ys_, xs_ = np.nonzero(gt == s["id"])
        s["bbox"] = [int(xs_.min()), int(ys_.min()), int(np.ptp(xs_)) + 1, int(np.ptp(ys_)) + 1]
    # Prediction: shifted, some instances relabelled or dropped, no crowd.
    pred = np.roll(gt, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
    pinfo = []
    things = [c.id for c in ls.things]
    for s in info:
        if s["id"] not in np.unique(pred):
            continue
        r = rng.random()
        if r < 0.1:
            pred[pred == s["id"]] = 0
            continue
        cat = int(rng.choice(things)) if r < 0.2 and s["category_id"] in things else \
            s["category_id"]
        pinfo.append({"id": s["id"], "category_id": cat})
    return gt, info, pred, pinfo


def write_sets(root: Path, n: int, h: int, w: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    gt_anns, pred_anns, images = [], [], []
    for i in range(n):
        gt, info, pred, pinfo = scene(rng, h, w, start_id=1000 * (i + 1))
        name = f"{i:012d}.png"
        write_panoptic_png(root / "gt" / name, gt)
        write_panoptic_png(root / "pred" / name, pred)
        images.append({"id": i, "file_name": name, "height": h, "width": w})
        gt_anns.append({"image_id": i, "file_name": name, "segments_info": info})
        pred_anns.append({"image_id": i, "file_name": name, "segments_info": pinfo})
    cats = cityscapes().to_coco()
    (root / "gt.json").write_text(json.dumps(
        {"images": images, "annotations": gt_anns, "categories": cats}))
    (root / "pred.json").write_text(json.dumps(
        {"images": images, "annotations": pred_anns, "categories": cats}))


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def resave_with_pillow(folder: Path) -> None:
    """Re-encode every PNG with Pillow (adaptive Up/Paeth/Sub filters, as COCO's own files)."""
    from PIL import Image

    for png in sorted(folder.glob("*.png")):
        Image.fromarray(cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)).save(png)


def compare(root: Path, n_images: int, repeat: int, title: str) -> None:
    """Time the three implementations on root/{gt,pred}[.json], check equal results, print."""
    gt_json, pred_json = root / "gt.json", root / "pred.json"
    gt_dir, pred_dir = root / "gt", root / "pred"
    rows = []
    t_ours, ours = timed(lambda: pq_compute_files(gt_json, gt_dir, pred_json, pred_dir), repeat)
    rows.append(("panoptic_ros (1 thread)", t_ours))
    t_ours2, _ = timed(lambda: pq_compute_files(gt_json, gt_dir, pred_json, pred_dir,
                                                workers=2), repeat)
    rows.append(("panoptic_ros (2 threads)", t_ours2))
    ref = None
    try:
        from panopticapi import evaluation as papi

        gt_data = json.loads(gt_json.read_text())
        pred_by_id = {a["image_id"]: a for a in json.loads(pred_json.read_text())["annotations"]}
        pairs = [(a, pred_by_id[a["image_id"]]) for a in gt_data["annotations"]]
        cats = {c["id"]: c for c in gt_data["categories"]}

        def run_papi():
            with contextlib.redirect_stdout(io.StringIO()):
                stat = papi.pq_compute_single_core(0, pairs, str(gt_dir), str(pred_dir), cats)
            res = {}
            for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
                res[name], _ = stat.pq_average(cats, isthing=isthing)
            return res

        t_papi, ref = timed(run_papi, repeat)
        rows.append(("panopticapi-lite (1 process)", t_papi))
    except ImportError:
        t_papi = None
    try:
        from hotcoco import panoptic as hc

        def run_hc():
            ev = hc.PanopticEval(str(gt_json), str(pred_json), gt_folder=str(gt_dir),
                                 pred_folder=str(pred_dir))
            ev.evaluate()
            return ev.results()

        t_hc, hc_res = timed(run_hc, repeat)
        rows.append(("hotcoco", t_hc))
    except ImportError:
        t_hc, hc_res = None, None
    for other in (ref, hc_res):
        if other is not None:
            for k in ("All", "Things", "Stuff"):
                for m in ("pq", "sq", "rq"):
                    assert abs(ours[k][m] - other[k][m]) < 1e-9, (k, m, ours[k], other[k])
    print(f"{title}: PQ {100 * ours['All']['pq']:.1f}, results identical across "
          "implementations")
    for name, t in rows:
        print(f"  {name:30s} {t:8.3f} s  {1e3 * t / n_images:8.1f} ms/image")
    if t_papi:
        print(f"  ratio panopticapi / ours (1 thread):  {t_papi / t_ours:6.2f}x  (target >= 5x)")
        print(f"  ratio panopticapi / ours (2 threads): {t_papi / t_ours2:6.2f}x")
    if t_hc:
        print(f"  ratio hotcoco / ours (1 thread):      {t_hc / t_ours:6.2f}x  "
              f"(<1 means hotcoco is faster)")
        print(f"  ratio hotcoco / ours (2 threads):     {t_hc / t_ours2:6.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--size", default="1024x2048", help="HxW")
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs each")
    ap.add_argument("--smoke", action="store_true", help="tiny CI size")
    args = ap.parse_args()
    print(host_line())
    if args.smoke:
        args.images, args.size, args.repeat = 4, "128x256", 1
    h, w = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_sets(root, args.images, h, w)
        print(f"PQ evaluation, {args.images} images of {h}x{w}")
        compare(root, args.images, args.repeat,
                "1. PNGs written by OpenCV, as panoptic_ros writes them")
        try:
            resave_with_pillow(root / "gt")
        except ImportError:
            print("2. skipped: Pillow is not installed")
            return
        compare(root, args.images, args.repeat,
                "2. ground truth re-saved by Pillow, as COCO's and Cityscapes' own files are")


if __name__ == "__main__":
    main()
