"""Video metrics: STQ and VPQ on hand-built cases, IDF1 / ID switches / MOTA against motmetrics,
HOTA and IDF1 against trackeval on random sequences, VPQ^1 against image PQ, the live accumulator
and ``panoptic-ros eval`` on a video data set."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from panoptic_ros.cli import main
from panoptic_ros.data.coco_panoptic import write_panoptic_png
from panoptic_ros.evaluation.hota import ALPHAS, hota_sequence
from panoptic_ros.evaluation.live import LiveVideoMetrics
from panoptic_ros.evaluation.mot import mot_sequence
from panoptic_ros.evaluation.pq import PQError, PQStat, pq_image
from panoptic_ros.evaluation.sequence import Frame, SequenceCounts
from panoptic_ros.evaluation.stq import stq_sequence
from panoptic_ros.evaluation.video import evaluate_video, is_video, video_annotations
from panoptic_ros.evaluation.vpq import vpq_results, vpq_sequence

PERSON, CAR, SKY, GROUND = 1, 2, 10, 11
CATS = {PERSON: {"id": PERSON, "isthing": 1}, CAR: {"id": CAR, "isthing": 1},
        SKY: {"id": SKY, "isthing": 0}, GROUND: {"id": GROUND, "isthing": 0}}
DIV = 1000


def frame(label: np.ndarray) -> Frame:
    """A frame from a label image (``category * 1000 + instance``)."""
    return Frame.from_label_image(np.asarray(label), CATS, DIV)


# ---------------------------------------------------------------------------------------------
# Random sequences: moving rectangles and discs with persistent ids, and a corrupted prediction
# ---------------------------------------------------------------------------------------------
def random_sequence(seed: int, frames: int = 12, h: int = 40, w: int = 56, objects: int = 6,
                    void: bool = True, crowd: bool = True):
    """Ground truth and prediction label images, ndarray[T, H, W] int64 each.

    Things move linearly, occlude one another (later drawn on top), enter late and leave early.
    The prediction shifts masks a little, misses some, adds false segments, switches ids
    (a new id, or two objects swapping ids) and labels some objects with the wrong class.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    gt = np.empty((frames, h, w), np.int64)
    pred = np.empty_like(gt)
    horizon = rng.integers(h // 3, 2 * h // 3)
    objs = []
    for k in range(objects):
        objs.append({
            "cat": int(rng.choice([PERSON, CAR])), "inst": k + 1,
            "pred_inst": k + 1 + int(rng.integers(0, 3)) * 100,
            "disc": bool(rng.random() < 0.5),
            "pos": rng.uniform([0, 0], [h, w]), "vel": rng.uniform(-2, 2, 2),
            "size": rng.uniform(4, 12, 2),
            "start": int(rng.integers(0, frames // 2)),
            "end": int(rng.integers(frames // 2, frames + 1)),
            "switch_at": int(rng.integers(1, frames)) if rng.random() < 0.4 else None,
            "wrong_class": rng.random() < 0.1,
        })
    swap = (rng.choice(objects, 2, replace=False), int(rng.integers(1, frames)))
    for t in range(frames):
        g = np.where(yy < horizon, SKY * DIV, GROUND * DIV)
        p = g.copy()
        if rng.random() < 0.3:  # the prediction gets the horizon wrong by a row or two
            p = np.where(yy < horizon + rng.integers(-2, 3), SKY * DIV, GROUND * DIV)
        inst_of = {k: o["pred_inst"] for k, o in enumerate(objs)}
        if t >= swap[1]:
            a, b = swap[0]
            inst_of[a], inst_of[b] = inst_of[b], inst_of[a]
        for k, o in enumerate(objs):
            if not o["start"] <= t < o["end"]:
                continue
            cy, cx = o["pos"] + t * o["vel"]
            ry, rx = o["size"] / 2
            if o["disc"]:
                mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            else:
                mask = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
            g[mask] = o["cat"] * DIV + o["inst"]
            if rng.random() < 0.1:
                continue  # missed in this frame
            dy, dx = rng.integers(-1, 2, 2)
            pmask = np.roll(mask, (dy, dx), axis=(0, 1))
            inst = inst_of[k] + (400 if o["switch_at"] and t >= o["switch_at"] else 0)
            cat = (CAR if o["cat"] == PERSON else PERSON) if o["wrong_class"] else o["cat"]
            p[pmask] = cat * DIV + inst
        if rng.random() < 0.3:  # a false segment
            y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
            p[y0:y0 + 4, x0:x0 + 5] = PERSON * DIV + 900 + t % 3
        if crowd and rng.random() < 0.3:  # a crowd region (thing instance 0)
            y0, x0 = rng.integers(0, h - 5), rng.integers(0, w - 6)
            g[y0:y0 + 5, x0:x0 + 6] = PERSON * DIV
        if void and rng.random() < 0.5:
            y0, x0 = rng.integers(0, h - 3), rng.integers(0, w - 8)
            g[y0:y0 + 3, x0:x0 + 8] = 0
        gt[t], pred[t] = g, p
    return gt, pred


def as_frames(gt: np.ndarray, pred: np.ndarray) -> list[tuple[Frame, Frame]]:
    return [(frame(g), frame(p)) for g, p in zip(gt, pred)]


def reference_ious(gt: np.ndarray, pred: np.ndarray):
    """Per frame: gt thing ids, pred thing ids, mask IoU from per-pair boolean masks."""
    out = []
    for g, p in zip(gt, pred):
        gids = [int(v) for v in np.unique(g) if v // DIV in (PERSON, CAR) and v % DIV]
        pids = [int(v) for v in np.unique(p) if v // DIV in (PERSON, CAR)]
        iou = np.zeros((len(gids), len(pids)))
        for i, a in enumerate(gids):
            for j, b in enumerate(pids):
                if a // DIV == b // DIV:
                    ma, mb = g == a, p == b
                    iou[i, j] = (ma & mb).sum() / (ma | mb).sum()
        out.append((gids, pids, iou))
    return out


SEEDS = list(range(12))


# ---------------------------------------------------------------------------------------------
# IDF1, ID switches, MOTA: motmetrics
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_clear_mot_and_idf1_match_motmetrics(seed):
    mm = pytest.importorskip("motmetrics")
    gt, pred = random_sequence(seed)
    acc = mm.MOTAccumulator(auto_id=True)
    for gids, pids, iou in reference_ious(gt, pred):
        acc.update(gids, pids, np.where(iou > 0.5, 1 - iou, np.nan))
    ref = mm.metrics.create().compute(
        acc, metrics=["idf1", "num_switches", "mota", "num_matches", "num_misses",
                      "num_false_positives"], name="seq")
    ours = mot_sequence(SequenceCounts.of(as_frames(gt, pred), CATS)).results()
    assert ours["id_switches"] == int(ref["num_switches"].iloc[0])
    assert ours["tp"] == int(ref["num_matches"].iloc[0]) + ours["id_switches"]
    assert ours["fn"] == int(ref["num_misses"].iloc[0])
    assert ours["fp"] == int(ref["num_false_positives"].iloc[0])
    assert ours["idf1"] == pytest.approx(float(ref["idf1"].iloc[0]), abs=1e-12)
    assert ours["mota"] == pytest.approx(float(ref["mota"].iloc[0]), abs=1e-12)


def test_random_sequences_exercise_switches():
    """The generator does produce the events the reference tests are about."""
    total = sum(mot_sequence(SequenceCounts.of(as_frames(*random_sequence(s)), CATS)).switches
                for s in SEEDS)
    assert total >= len(SEEDS) // 2


# ---------------------------------------------------------------------------------------------
# HOTA and IDF1: trackeval
# ---------------------------------------------------------------------------------------------
def trackeval_data(ious, strict_threshold: bool = False) -> dict:
    """trackeval's per-sequence data dict, ids made contiguous."""
    gmap, pmap = {}, {}
    data = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for gids, pids, iou in ious:
        data["gt_ids"].append(np.array([gmap.setdefault(i, len(gmap)) for i in gids], int))
        data["tracker_ids"].append(np.array([pmap.setdefault(i, len(pmap)) for i in pids], int))
        data["similarity_scores"].append(np.where(iou > 0.5, iou, 0.0) if strict_threshold
                                         else iou)
    data.update(num_gt_ids=len(gmap), num_tracker_ids=len(pmap), num_timesteps=len(ious),
                num_gt_dets=sum(len(g) for g, _, _ in ious),
                num_tracker_dets=sum(len(p) for _, p, _ in ious))
    return data


@pytest.mark.parametrize("seed", SEEDS)
def test_hota_and_idf1_match_trackeval(seed):
    trackeval = pytest.importorskip("trackeval")
    gt, pred = random_sequence(seed)
    ious = reference_ious(gt, pred)
    ref = trackeval.metrics.HOTA().eval_sequence(trackeval_data(ious))
    counts = SequenceCounts.of(as_frames(gt, pred), CATS)
    ours = hota_sequence(counts)
    per_alpha = ours.per_alpha()
    np.testing.assert_allclose(per_alpha["hota"], ref["HOTA"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(per_alpha["deta"], ref["DetA"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(per_alpha["assa"], ref["AssA"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.tp, ref["HOTA_TP"])
    assert len(ALPHAS) == len(ref["HOTA"])
    identity = trackeval.metrics.Identity({"PRINT_CONFIG": False})
    ident = identity.eval_sequence(trackeval_data(ious, True))
    assert mot_sequence(counts).results()["idf1"] == pytest.approx(ident["IDF1"], abs=1e-12)


def test_hota_combines_sequences_like_trackeval():
    trackeval = pytest.importorskip("trackeval")
    metric = trackeval.metrics.HOTA()
    refs, stat = {}, None
    for seed in (3, 4, 5):
        gt, pred = random_sequence(seed)
        refs[seed] = metric.eval_sequence(trackeval_data(reference_ious(gt, pred)))
        s = hota_sequence(SequenceCounts.of(as_frames(gt, pred), CATS))
        stat = s if stat is None else stat.__iadd__(s)
    ref = metric.combine_sequences(refs)
    np.testing.assert_allclose(stat.per_alpha()["hota"], ref["HOTA"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(stat.per_alpha()["assa"], ref["AssA"], rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# STQ: hand-built cases and properties
# ---------------------------------------------------------------------------------------------
def test_stq_id_switch_halves_association():
    # 2 frames of 4x4: columns 0-1 a person (track A, 8 px a frame), the rest sky.
    # The prediction segments everything right but calls the person X, then Y.
    # SQ: person IoU 16/16, sky 16/16 -> SQ = 1.
    # AQ: |A| = 16; X: TPA 8, |X| 8, IoU_id = 8 / (8 + 0 + 8) = 1/2 -> 8 * 1/2 = 4; Y alike.
    #     AQ = (4 + 4) / 16 = 1/2; STQ = sqrt(1/2).
    g = np.full((4, 4), SKY * DIV)
    g[:, :2] = PERSON * DIV + 1
    p0, p1 = g.copy(), g.copy()
    p0[:, :2] = PERSON * DIV + 7
    p1[:, :2] = PERSON * DIV + 8
    r = stq_sequence(SequenceCounts.of([(frame(g), frame(p0)), (frame(g), frame(p1))],
                                       CATS)).results()
    assert r["sq"] == 1.0 and r["aq"] == pytest.approx(0.5) and r["tracks"] == 1
    assert r["stq"] == pytest.approx(math.sqrt(0.5))


def test_stq_void_partial_overlap():
    # One 4x4 frame. Ground truth: row 0 void; rows 1-3, columns 0-1 person A (6 px); the rest
    # sky (6 px). Prediction: columns 0-2 person X (12 px, 3 of them on void, 3 on sky); column 3
    # sky (4 px, 1 on void).
    # SQ (void ignored): person 6 / (6 + 9 - 6) = 2/3; sky 3 / (6 + 3 - 3) = 1/2 -> SQ = 7/12.
    # AQ: |A| = 6, |X| = 9 without void, TPA 6: IoU_id = 6 / 9; AQ = 6 * (2/3) / 6 = 2/3.
    # STQ = sqrt(2/3 * 7/12) = sqrt(7/18).
    g = np.full((4, 4), SKY * DIV)
    g[:, :2] = PERSON * DIV + 1
    g[0] = 0
    p = np.full((4, 4), SKY * DIV)
    p[:, :3] = PERSON * DIV + 5
    r = stq_sequence(SequenceCounts.of([(frame(g), frame(p))], CATS)).results()
    assert r["per_class_iou"] == pytest.approx({PERSON: 2 / 3, SKY: 0.5})
    assert r["sq"] == pytest.approx(7 / 12) and r["aq"] == pytest.approx(2 / 3)
    assert r["stq"] == pytest.approx(math.sqrt(7 / 18))


def test_stq_crowd_is_no_track_and_association_is_class_agnostic():
    # 4x4: columns 0-1 crowd of persons, columns 2-3 car A. The prediction calls the whole
    # image person X. Crowd pixels count in no track: |X| = 8, TPA(X, A) = 8 -> AQ = 1 even
    # though the class is wrong (SQ pays for that: person 8/16, car 0/8 -> SQ 1/4).
    g = np.full((4, 4), PERSON * DIV)
    g[:, 2:] = CAR * DIV + 1
    p = np.full((4, 4), PERSON * DIV + 3)
    r = stq_sequence(SequenceCounts.of([(frame(g), frame(p))], CATS)).results()
    assert r["aq"] == 1.0 and r["tracks"] == 1
    assert r["sq"] == pytest.approx(0.25)


@pytest.mark.parametrize("a, b", [(6, 6), (4, 10)])
def test_stq_swapping_two_ids_halfway(a, b):
    # Two persons of a and b pixels in each of 2n frames; the prediction swaps their ids after
    # n frames. For A: X covers A then B: TPA = an, |X| = (a + b)n, union = |X| + |A| - TPA =
    # (2a + b)n... -> IoU_id = a / (2a + b), and Y likewise: A's term = a / (2a + b).
    # AQ = (a / (2a + b) + b / (2b + a)) / 2 (1/3 when a = b); SQ stays 1.
    n, w = 3, 12
    g = np.full((2, w), SKY * DIV)
    g[0, :a] = PERSON * DIV + 1
    g[1, :b] = PERSON * DIV + 2
    swapped = g.copy()
    swapped[0, :a] = PERSON * DIV + 2
    swapped[1, :b] = PERSON * DIV + 1
    frames = [(frame(g), frame(g))] * n + [(frame(g), frame(swapped))] * n
    r = stq_sequence(SequenceCounts.of(frames, CATS)).results()
    perfect = stq_sequence(SequenceCounts.of([(frame(g), frame(g))] * 2 * n, CATS)).results()
    expected = (a / (2 * a + b) + b / (2 * b + a)) / 2
    assert perfect["aq"] == 1.0 and perfect["stq"] == 1.0
    assert r["aq"] == pytest.approx(expected) and r["sq"] == 1.0
    assert perfect["aq"] - r["aq"] == pytest.approx(1 - expected)


def test_stq_accumulates_over_sequences():
    # AQ sums the track terms of all sequences over all tracks; SQ pools the pixels.
    s1, s2 = random_sequence(1), random_sequence(2)
    c1, c2 = (SequenceCounts.of(as_frames(*s), CATS) for s in (s1, s2))
    st1, st2 = stq_sequence(c1), stq_sequence(c2)
    both = evaluate_video([as_frames(*s1), as_frames(*s2)], CATS, ks=(1,))["stq"]
    assert both["tracks"] == st1.tracks + st2.tracks
    assert both["aq"] == pytest.approx((st1.aq_sum + st2.aq_sum) / (st1.tracks + st2.tracks))
    # SQ of the pooled pixels: the same as one sequence made of both (the ids do not clash
    # between sequences for SQ, which is semantic only).
    joined = SequenceCounts.of(as_frames(np.concatenate([s1[0], s2[0]]),
                                         np.concatenate([s1[1], s2[1]])), CATS)
    assert both["sq"] == pytest.approx(stq_sequence(joined).results()["sq"])


# ---------------------------------------------------------------------------------------------
# VPQ: hand-built case, VPQ^1 = PQ, properties
# ---------------------------------------------------------------------------------------------
def test_vpq_windows_by_hand():
    # 3 frames of 4x4: a person A of 4 px in the corner, sky elsewhere (12 px). The prediction
    # is exact but calls the person X in frames 0-1 and Y in frame 2.
    # k=1: every frame perfect -> person PQ 1, sky PQ 1.
    # k=2: window 0-1: tubes equal, TP IoU 1. Window 1-2: A is 8 px, X and Y 4 px each: IoU 1/2,
    #      not > 1/2 -> FN 1, FP 2. Person: IoU sum 1 / (1 + FP 2/2 + FN 1/2) = 0.4; sky 1.
    #      VPQ^2 = (0.4 + 1) / 2 = 0.7.
    # k=3: one window: X covers 8 of A's 12 px: IoU 2/3, TP; Y FP. Person (2/3) / (1 + 1/2)
    #      = 4/9; VPQ^3 = (4/9 + 1) / 2 = 13/18.
    g = np.full((4, 4), SKY * DIV)
    g[:2, :2] = PERSON * DIV + 1
    px, py = g.copy(), g.copy()
    px[:2, :2] = PERSON * DIV + 5
    py[:2, :2] = PERSON * DIV + 6
    counts = SequenceCounts.of([(frame(g), frame(px)), (frame(g), frame(px)),
                                (frame(g), frame(py))], CATS)
    stats = {k: vpq_sequence(counts, k) for k in (1, 2, 3, 4)}
    r = vpq_results(stats, CATS)
    assert r["k"][1]["All"]["pq"] == 1.0
    assert (stats[2][PERSON].tp, stats[2][PERSON].fp, stats[2][PERSON].fn) == (1, 2, 1)
    assert r["k"][2]["per_class"][PERSON]["pq"] == pytest.approx(0.4)
    assert r["k"][2]["All"]["pq"] == pytest.approx(0.7)
    assert r["k"][3]["All"]["pq"] == pytest.approx(13 / 18)
    assert r["k"][4]["All"]["n"] == 0  # no window of 4 frames
    assert r["All"]["k"] == [1, 2, 3]
    assert r["All"]["vpq"] == pytest.approx((1 + 0.7 + 13 / 18) / 3)
    assert r["Things"]["vpq"] == pytest.approx((1 + 0.4 + 4 / 9) / 3)
    assert r["Stuff"]["vpq"] == 1.0


@pytest.mark.parametrize("seed", SEEDS[:6])
def test_vpq1_equals_image_pq(seed):
    gt, pred = random_sequence(seed)
    image = PQStat()
    for g, p in zip(gt, pred):
        gf, pf = frame(g), frame(p)
        g_info = [{**s, "area": int((g == s["id"]).sum())} for s in gf.segments]
        image += pq_image(g, g_info, p, pf.segments)
    video = vpq_sequence(SequenceCounts.of(as_frames(gt, pred), CATS), 1)
    v_res, i_res = video.results(CATS), image.results(CATS)
    for name in ("All", "Things", "Stuff"):
        assert v_res[name] == pytest.approx(i_res[name])
    for cat, s in image.per_cat.items():
        v = video[cat]
        assert (v.tp, v.fp, v.fn) == (s.tp, s.fp, s.fn) and v.iou == pytest.approx(s.iou)


def test_perfect_prediction_scores_one():
    gt, _ = random_sequence(7, frames=16, crowd=False)
    r = evaluate_video([as_frames(gt, gt)], CATS)
    assert r["stq"]["stq"] == 1.0 and r["stq"]["aq"] == 1.0 and r["stq"]["sq"] == 1.0
    assert r["vpq"]["All"]["vpq"] == 1.0 and r["vpq"]["All"]["k"] == [1, 5, 10, 15]
    assert r["tracking"]["idf1"] == 1.0 and r["tracking"]["id_switches"] == 0
    assert r["tracking"]["mota"] == 1.0
    assert r["hota"]["hota"] == pytest.approx(1.0)


def test_id_switch_lowers_long_windows_only():
    gt, _ = random_sequence(8, frames=12, crowd=False, void=False)
    pred = gt.copy()
    # One thing seen in frames 5 and 6 changes its id at frame 6.
    thing = next(v for v in np.intersect1d(gt[5], gt[6]) if v // DIV in (PERSON, CAR))
    pred[6:][pred[6:] == thing] += 500
    counts = SequenceCounts.of(as_frames(gt, pred), CATS)
    assert vpq_sequence(counts, 1).results(CATS)["All"]["pq"] == 1.0
    assert vpq_sequence(counts, 10).results(CATS)["Things"]["pq"] < 1.0
    assert mot_sequence(counts).switches == 1


def test_errors_name_the_frame():
    g = np.full((4, 4), SKY * DIV)
    with pytest.raises(PQError, match="frame 0.*4, 5"):
        SequenceCounts.of([(frame(g), frame(np.full((4, 5), SKY * DIV)))], CATS)
    with pytest.raises(PQError, match="not in segments_info"):
        SequenceCounts.of([(frame(g), Frame(g, []))], CATS)
    with pytest.raises(PQError, match="unknown category_id 3"):
        SequenceCounts.of([(frame(g), Frame(np.full((4, 4), 9), [{"id": 9, "category_id": 3}]))],
                          CATS)


# ---------------------------------------------------------------------------------------------
# Speed: a 60-frame 256x320 sequence
# ---------------------------------------------------------------------------------------------
def test_speed_60_frames_256x320():
    gt, pred = random_sequence(11, frames=60, h=256, w=320, objects=20)
    start = time.perf_counter()
    counts = SequenceCounts.of(as_frames(gt, pred), CATS)
    measured = time.perf_counter() - start
    timings = {}
    for name, fn in (("stq", stq_sequence), ("vpq", lambda c: [vpq_sequence(c, k)
                                                               for k in (1, 5, 10, 15)]),
                     ("mot", mot_sequence), ("hota", hota_sequence)):
        start = time.perf_counter()
        fn(counts)
        timings[name] = time.perf_counter() - start
    print(f"counts {measured:.3f} s", {k: round(v, 4) for k, v in timings.items()})
    assert measured < 2.0 and max(timings.values()) < 1.0


# ---------------------------------------------------------------------------------------------
# The live accumulator equals the batch metrics on the frames seen so far
# ---------------------------------------------------------------------------------------------
def test_live_metrics_equal_batch_after_every_frame():
    gt, pred = random_sequence(5, frames=10)
    live = LiveVideoMetrics(CATS)
    frames = as_frames(gt, pred)
    for t, (g, p) in enumerate(frames):
        snap = live.update(g.ids, g.segments, p.ids, p.segments)
        counts = SequenceCounts.of(frames[: t + 1], CATS)
        batch = stq_sequence(counts).results()
        assert snap.frames == t + 1
        assert (snap.stq, snap.aq, snap.sq) == pytest.approx(
            (batch["stq"], batch["aq"], batch["sq"]), abs=1e-12)
        assert snap.id_switches == mot_sequence(counts).switches
        assert snap.gt_tracks == batch["tracks"]
    assert snap.id_switches > 0
    live.reset()
    g, p = frames[0]
    assert live.update(g.ids, g.segments, p.ids, p.segments).frames == 1


def test_live_update_is_cheap():
    gt, pred = random_sequence(11, frames=30, h=256, w=320, objects=20)
    live = LiveVideoMetrics(CATS)
    frames = as_frames(gt, pred)
    start = time.perf_counter()
    for g, p in frames:
        live.update(g.ids, g.segments, p.ids, p.segments)
    per_frame = (time.perf_counter() - start) / len(frames)
    print(f"live update {1000 * per_frame:.2f} ms per 256x320 frame")
    assert per_frame < 0.02


# ---------------------------------------------------------------------------------------------
# panoptic-ros eval on a video data set written here
# ---------------------------------------------------------------------------------------------
def write_video_set(root: Path, name: str, videos: dict[str, np.ndarray],
                    track_ids: bool) -> Path:
    """COCO panoptic video JSON + PNGs (``<video>/<frame:06d>.png``) of label-image sequences."""
    images, annotations = [], []
    for video, labels in videos.items():
        for t, label in enumerate(labels):
            file_name = f"{video}/{t:06d}.png"
            image_id = f"{video}_{t:06d}"
            write_panoptic_png(root / name / file_name, label)
            segs = []
            for s in frame(label).segments:
                seg = {**s, "area": int((label == s["id"]).sum())}
                if track_ids:
                    seg["track_id"] = s["id"] % DIV if CATS[s["category_id"]]["isthing"] else 0
                segs.append(seg)
            images.append({"id": image_id, "file_name": file_name.replace(".png", ".jpg"),
                           "video_id": video, "frame_index": t,
                           "height": label.shape[0], "width": label.shape[1]})
            annotations.append({"image_id": image_id, "file_name": file_name,
                                "segments_info": segs})
    data = {"images": images, "annotations": annotations,
            "categories": [{"name": str(c), **v} for c, v in CATS.items()]}
    path = root / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_eval_cli_reports_video_metrics(tmp_path, capsys):
    seqs = {f"seq{i}": random_sequence(20 + i, frames=6) for i in range(2)}
    gt_json = write_video_set(tmp_path, "panoptic", {v: s[0] for v, s in seqs.items()}, False)
    # Predictions written in another frame order and with other image ids: paired by file name.
    pred_json = write_video_set(tmp_path, "predictions",
                                {v: s[1] for v, s in reversed(seqs.items())}, True)
    pred = json.loads(pred_json.read_text())
    for ann in pred["annotations"]:
        ann["image_id"] = "p_" + ann["image_id"]
    pred_json.write_text(json.dumps(pred))
    out = tmp_path / "results.json"
    rc = main(["eval", "--gt-json", str(gt_json), "--pred-json", str(pred_json),
               "--out", str(out), "--workers", "2"])
    text = capsys.readouterr().out
    print(text)
    assert rc == 0
    expected = evaluate_video([as_frames(*s) for s in seqs.values()], CATS)
    results = json.loads(out.read_text())
    video = results["video"]
    assert video["sequences"] == 2 and video["frames"] == 12
    assert video["stq"]["stq"] == pytest.approx(expected["stq"]["stq"])
    assert video["vpq"]["All"]["vpq"] == pytest.approx(expected["vpq"]["All"]["vpq"])
    assert video["vpq"]["All"]["k"] == [1, 5]  # no window of 10 or 15 frames
    assert video["tracking"] == pytest.approx(expected["tracking"])
    assert video["hota"] == pytest.approx(expected["hota"])
    # Image PQ beside it, and VPQ^1 equals it (areas in the JSON are the pixel counts).
    assert results["All"]["pq"] == pytest.approx(video["vpq"]["k"]["1"]["All"]["pq"])
    for word in ("STQ", "VPQ", "IDF1", "ID switches", "per 100 GT tracks", "HOTA", "PQ"):
        assert word in text


def test_eval_cli_video_missing_prediction(tmp_path, capsys):
    gt, pred = random_sequence(30, frames=3)
    gt_json = write_video_set(tmp_path, "panoptic", {"a": gt}, False)
    pred_json = write_video_set(tmp_path, "predictions", {"a": pred[:2]}, True)
    rc = main(["eval", "--gt-json", str(gt_json), "--pred-json", str(pred_json)])
    assert rc == 2 and "a/000002.png" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Properties: the parsers, and invariance to how predicted tracks are numbered
# ---------------------------------------------------------------------------------------------
LABEL_VALUES = [0, PERSON * DIV, PERSON * DIV + 1, PERSON * DIV + 2, CAR * DIV + 5, SKY * DIV,
                GROUND * DIV]


@settings(max_examples=50, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(1, 6), st.integers(1, 7)),
              elements=st.sampled_from(LABEL_VALUES)))
def test_from_label_image_lists_every_segment(label):
    f = frame(label)
    assert np.array_equal(f.ids.to_dense(), label)
    assert {s["id"] for s in f.segments} == set(np.unique(label).tolist()) - {0}
    for s in f.segments:
        cat, inst = divmod(s["id"], DIV)
        assert s["category_id"] == cat
        assert s["iscrowd"] == int(CATS[cat]["isthing"] == 1 and inst == 0)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c10"]), st.integers(1, 5), min_size=1),
       st.randoms(use_true_random=False))
def test_video_annotations_group_by_video_in_frame_order(lengths, rnd):
    images = [{"id": f"{v}/{t}", "video_id": v, "frame_index": t}
              for v, n in lengths.items() for t in range(n)]
    anns = [{"image_id": i["id"], "file_name": i["id"] + ".png"} for i in images]
    rnd.shuffle(images)
    rnd.shuffle(anns)
    gt = {"images": images, "annotations": anns}
    assert is_video(gt)
    grouped = video_annotations(gt)
    assert list(grouped) == sorted(lengths)
    for v, n in lengths.items():
        assert [a["image_id"] for a in grouped[v]] == [f"{v}/{t}" for t in range(n)]
    assert not is_video({"images": [{"id": 1}], "annotations": []})


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_metrics_do_not_depend_on_track_numbering(seed):
    gt, pred = random_sequence(seed % 1000, frames=8)
    perm = np.random.default_rng(seed).permutation(DIV - 1) + 1  # instance ids 1..999, renamed
    cat, inst = np.divmod(pred, DIV)
    renamed = np.where(inst > 0, cat * DIV + perm[np.maximum(inst - 1, 0)], pred)
    a = evaluate_video([as_frames(gt, pred)], CATS, ks=(1, 5))
    b = evaluate_video([as_frames(gt, renamed)], CATS, ks=(1, 5))
    for key in ("stq", "aq", "sq", "tracks"):
        assert b["stq"][key] == pytest.approx(a["stq"][key])
    assert b["tracking"] == pytest.approx(a["tracking"]) and b["hota"] == pytest.approx(a["hota"])
    assert b["vpq"]["All"]["vpq"] == pytest.approx(a["vpq"]["All"]["vpq"])
