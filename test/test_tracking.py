"""Tracker: persistent ids on synthetic moving-object sequences built as PanopticResults.

Objects are discs and rectangles with known identities and pixel velocities; every frame gets
fresh random instance numbers (as a backend gives; like a backend's small-mask filter, visible
parts under ``MIN_AREA`` pixels are not detected), and the tests check that the tracker's
output gives each object one track id and one instance number for its whole visible life.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from panoptic_ros.categories import rgb_to_id, synthetic
from panoptic_ros.result import PanopticResult
from panoptic_ros.tracking import Track, TrackedPredictor, Tracker, TrackerConfig
from panoptic_ros.tracking.overlap import detection_index, layers, mask_ious

LS = synthetic()
PERSON, CAR, BOX, BALL = 1, 2, 3, 4
SKY, GROUND = 11, 12
H, W = 240, 320
MIN_AREA = 150


@dataclass
class Obj:
    """A moving thing: centre ``pos + vel * t`` (pixels, pixels per second)."""

    key: str
    cat: int
    half: tuple[int, int]  # half width, half height (px)
    pos: tuple[float, float]
    vel: tuple[float, float] = (0.0, 0.0)
    z: int = 0  # drawn above lower z
    disc: bool = False
    score: float = 0.9
    hidden: frozenset[int] = frozenset()  # frame indices without a detection


def render(objs: list[Obj], t: float, frame: int, rng: np.random.Generator,
           divisor: int = 1000, extra: list[tuple[Obj, float]] = ()):
    """One frame's result with random instance numbers, and its segment id -> object key."""
    ids = np.full((H, W), SKY * divisor, np.int32)
    ids[H // 2:] = GROUND * divisor
    yy, xx = np.mgrid[:H, :W]
    numbers = {c: list(rng.permutation(np.arange(1, min(divisor, 60)))) for c in (1, 2, 3, 4)}
    owner, scores = {}, {}
    drawn = [(o, o.score) for o in objs if frame not in o.hidden] + list(extra)
    for obj, score in sorted(drawn, key=lambda p: p[0].z):
        cx, cy = obj.pos[0] + obj.vel[0] * t, obj.pos[1] + obj.vel[1] * t
        rx, ry = obj.half
        if obj.disc:
            mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        else:
            mask = (abs(xx - cx) <= rx) & (abs(yy - cy) <= ry)
        sid = obj.cat * divisor + numbers[obj.cat].pop()
        ids[mask] = sid
        owner[sid], scores[sid] = obj.key, score
    for sid in owner:
        if np.count_nonzero(ids == sid) < MIN_AREA:
            ids[ids == sid] = 0
    result = PanopticResult.from_ids(ids, LS, divisor, scores=scores)
    present = {s.id for s in result.segments}
    return result, {sid: key for sid, key in owner.items() if sid in present}


def run(objs, frames, stamps=None, config=None, seed=0, divisor=1000, extra=None):
    """Track a sequence; per frame the output and {object key: output segment}.

    ``objs``: the objects, or a function of the frame number giving them.
    """
    rng = np.random.default_rng(seed)
    tracker = Tracker(config or TrackerConfig())
    stamps = stamps if stamps is not None else [0.1 * k for k in range(frames)]
    history = []
    for k, stamp in enumerate(stamps):
        t = stamp - stamps[0]
        result, owner = render(objs(k) if callable(objs) else objs, t, round(t * 10), rng,
                               divisor,
                               extra(k, rng) if extra else [])
        out = tracker.update(result, stamp, "camera")
        check_consistent(result, out)
        by_key = {}
        for sid, key in owner.items():
            pixel = tuple(np.argwhere(result.ids == sid)[0])
            by_key[key] = out.segment(int(out.ids[pixel]))
        history.append((out, by_key))
    return tracker, history


def check_consistent(inp: PanopticResult, out: PanopticResult) -> None:
    """Out is a valid result, a per-segment bijective relabelling of inp, stuff untouched."""
    again = PanopticResult.from_ids(out.ids, LS, out.label_divisor)
    strip = ("score", "track_id", "track_age")
    assert [replace(s, **{f: getattr(a, f) for f in strip})
            for s, a in zip(again.segments, out.segments)] == out.segments
    assert len(again.segments) == len(out.segments) == len(inp.segments)
    assert [s.id for s in out.segments] == sorted(s.id for s in out.segments)
    pairs = np.unique(np.stack([inp.ids.ravel(), out.ids.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))  # bijection
    for a, b in pairs.T:
        assert (a // inp.label_divisor) == (b // inp.label_divisor)  # category kept
        if a == 0 or not LS.is_thing(int(a) // inp.label_divisor):
            assert a == b  # stuff and void untouched
    for s in out.segments:
        if s.is_thing:
            assert s.instance_id >= 1 and s.id == s.category_id * out.label_divisor + s.instance_id
        else:
            assert s.track_id == 0 and s.track_age == 0.0


def check_identities(history, keys=None) -> dict[str, int]:
    """Every object one (track_id, instance) throughout; none shared; returns key -> track."""
    first: dict[str, tuple[int, int]] = {}
    for _, by_key in history:
        seen = set()
        for key, seg in by_key.items():
            if keys is not None and key not in keys:
                continue
            assert seg.track_id > 0, key
            ident = (seg.track_id, seg.instance_id)
            assert first.setdefault(key, ident) == ident, f"{key} changed identity"
            assert seg.track_id not in seen
            seen.add(seg.track_id)
    owners = [tid for tid, _ in first.values()]
    assert len(owners) == len(set(owners)), "two objects share a track id"
    return {k: v[0] for k, v in first.items()}


def test_crossing_paths_same_and_other_category_and_standing_still():
    objs = [
        Obj("walker_a", PERSON, (12, 30), (40, 150), (120, 0), z=2),
        Obj("walker_b", PERSON, (12, 30), (280, 148), (-120, 0), z=1),
        Obj("car", CAR, (40, 18), (160, 60), (0, 70), z=3),  # crosses both walkers' path
        Obj("box", BOX, (15, 15), (60, 210), z=0),  # standing still
        Obj("ball", BALL, (8, 8), (300, 40), (-150, 40), disc=True, z=4),
    ]
    _, history = run(objs, 22)
    check_identities(history)


def test_three_frame_full_occlusion_behind_a_car():
    objs = [
        Obj("car", CAR, (30, 40), (160, 140), z=5),  # parked, hides the walker fully
        Obj("walker", PERSON, (12, 30), (60, 140), (100, 0), z=1),
    ]
    _, history = run(objs, 25)
    hidden = [k for k, (_, by_key) in enumerate(history) if "walker" not in by_key]
    assert len(hidden) >= 3  # fully occluded for at least 3 frames
    check_identities(history)


def test_half_the_frames_dropped_fast_movers_keep_ids():
    rng = np.random.default_rng(3)
    kept = [k for k in range(40) if k == 0 or rng.random() < 0.5]
    stamps = [0.1 * k for k in kept]
    assert max(np.diff(stamps)) >= 0.3 - 1e-9
    objs = [
        Obj("walker", PERSON, (14, 34), (20, 150), (140, 0)),  # 28 px per 2 frames
        Obj("walker2", PERSON, (14, 34), (300, 120), (-120, 0), z=1),
        Obj("car", CAR, (60, 25), (-20, 60), (400, 0)),  # 80 px per 2 frames
    ]
    _, history = run(objs, 0, stamps=stamps)
    check_identities(history)


def test_track_age_is_the_stamp_difference_and_ids_persist_in_pixels():
    stamps = [10.0, 10.1, 10.25, 10.5, 10.55]
    objs = [Obj("a", PERSON, (10, 20), (100, 120), (50, 0)),
            Obj("b", PERSON, (10, 20), (200, 120), (-30, 0))]
    _, history = run(objs, 0, stamps=stamps)
    ids = check_identities(history)
    assert sorted(ids.values()) == [1, 2]
    for (out, by_key), stamp in zip(history, stamps):
        for seg in by_key.values():
            assert seg.track_age == pytest.approx(stamp - stamps[0])
            assert (out.ids == seg.id).sum() == seg.area
    assert len({seg.id for _, by_key in history for seg in by_key.values()}) == 2


def test_missed_detection_and_noisy_low_score_detections():
    objs = [Obj("walker", PERSON, (12, 30), (40, 150), (100, 0), hidden=frozenset({6})),
            # detected at a low score every third frame: stage 2 keeps its track
            Obj("car", CAR, (35, 15), (250, 60), (-80, 0))]

    def noise(k, rng):  # two weak spurious blobs per frame at random places
        return [(Obj(f"noise{k}_{i}", PERSON, (8, 8), (rng.uniform(0, W), rng.uniform(0, H)),
                     disc=True, z=-1), 0.3) for i in range(2)]

    def frame_objects(k):  # the car is detected at a low score every third frame
        return [objs[0], replace(objs[1], score=0.3 if k % 3 == 1 else 0.9)]

    _, history = run(frame_objects, 20, seed=5, extra=noise)
    check_identities(history, keys={"walker", "car"})
    assert "walker" not in history[6][1]
    for _, by_key in history:
        for key, seg in by_key.items():
            if key.startswith("noise"):
                assert seg.track_id == 0 and seg.track_age == 0.0  # weak, unmatched: untracked
    assert sum(key.startswith("noise") for _, by_key in history for key in by_key) >= 20
    assert history[1][1]["car"].score == pytest.approx(0.3)


def test_leaving_and_entering_gets_new_never_reused_track_ids():
    config = TrackerConfig(max_age=0.3)
    objs = [Obj("leaver", CAR, (20, 12), (280, 60), (300, 0)),  # gone after ~3 frames
            Obj("stayer", BOX, (15, 15), (100, 200)),
            Obj("enterer", CAR, (20, 12), (340, 120), (-200, 0))]  # enters after ~3 frames
    tracker, history = run(objs, 15, config=config)
    ids = check_identities(history)
    assert ids["enterer"] > ids["leaver"] and ids["enterer"] > ids["stayer"]
    assert "leaver" not in history[-1][1] and "enterer" not in history[0][1]
    assert {t.track_id for t in tracker.tracks} == {ids["stayer"], ids["enterer"]}  # leaver died


def test_resets_on_stamp_going_backwards_and_frame_id_change():
    rng = np.random.default_rng(0)
    objs = [Obj("a", PERSON, (10, 20), (100, 120)), Obj("b", CAR, (20, 10), (200, 60))]
    tracker = Tracker()
    for k in range(3):
        out = tracker.update(render(objs, 0.1 * k, k, rng)[0], 5 + 0.1 * k, "cam")
        assert tracker.reset_reason is None
    tracker.update(render([Obj("c", BALL, (10, 10), (20, 20))], 0, 0, rng)[0], 5.3, "cam")
    assert max(t.track_id for t in tracker.tracks) == 3
    out = tracker.update(render(objs, 0, 0, rng)[0], 4.0, "cam")  # a bag loops
    assert "stamp went backwards" in tracker.reset_reason
    assert tracker.last_reset == tracker.reset_reason
    assert sorted(s.track_id for s in out.segments if s.is_thing) == [1, 2]
    assert all(s.track_age == 0.0 for s in out.segments)
    tracker.update(render(objs, 0, 0, rng)[0], 4.1, "cam")
    assert tracker.reset_reason is None
    out = tracker.update(render(objs, 0, 0, rng)[0], 4.2, "other_camera")
    assert "frame_id changed" in tracker.reset_reason
    assert sorted(s.track_id for s in out.segments if s.is_thing) == [1, 2]
    tracker.reset("deactivated")
    assert tracker.tracks == [] and tracker.last_reset == "deactivated"


def test_instance_numbers_exhausted_reuse_the_oldest_freed():
    # label_divisor 4: numbers 1..3 per category. Five cars one after another, each alive one
    # frame (max_age 0.05 s) -> numbers 1, 2, 3, then 1 (freed first), then 2.
    config = TrackerConfig(max_age=0.05)
    tracker = Tracker(config)
    rng = np.random.default_rng(1)
    numbers, track_ids = [], []
    for k in range(5):
        obj = Obj(f"car{k}", CAR, (10, 10), (30 + 60 * k, 100))
        out = tracker.update(render([obj], 0, 0, rng, divisor=4)[0], 0.1 * k, "cam")
        (car,) = [s for s in out.segments if s.is_thing]
        numbers.append(car.instance_id)
        track_ids.append(car.track_id)
    assert numbers == [1, 2, 3, 1, 2]
    assert track_ids == [1, 2, 3, 4, 5]


def test_untracked_numbers_do_not_collide_with_tracks():
    tracker = Tracker(TrackerConfig(high_score=0.8, low_score=0.5))
    rng = np.random.default_rng(2)
    objs = [Obj("a", PERSON, (10, 10), (50, 50)), Obj("weak", PERSON, (10, 10), (150, 50),
                                                     score=0.6),
            Obj("weaker", PERSON, (10, 10), (250, 50), score=0.2)]
    out = tracker.update(render(objs, 0, 0, rng)[0], 0.0)
    people = sorted((s.track_id, s.instance_id) for s in out.segments if s.is_thing)
    assert people == [(0, 998), (0, 999), (1, 1)]
    # Live config: lower the high score; the weak one now starts a track.
    tracker.config = TrackerConfig(high_score=0.5, low_score=0.5)
    out = tracker.update(render(objs, 0.1, 1, rng)[0], 0.1)
    people = sorted((s.track_id, s.instance_id) for s in out.segments if s.is_thing)
    assert people == [(0, 999), (1, 1), (2, 2)]


def test_config_is_validated_with_clear_errors():
    with pytest.raises(ValueError, match="low_score <= high_score"):
        TrackerConfig(high_score=0.2, low_score=0.5)
    with pytest.raises(ValueError, match="max_age"):
        TrackerConfig(max_age=0)
    with pytest.raises(ValueError, match="min_iou_high"):
        TrackerConfig(min_iou_high=0)
    with pytest.raises(ValueError, match="stride"):
        TrackerConfig(stride=0)
    with pytest.raises(TypeError, match="stride"):
        TrackerConfig(stride=1.5)
    with pytest.raises(ValueError, match="finite"):
        TrackerConfig(center_gate=float("nan"))
    with pytest.raises(TypeError, match="TrackerConfig"):
        Tracker().config = {"max_age": 1}
    with pytest.raises(ValueError, match="stamp"):
        Tracker().update(render([], 0, 0, np.random.default_rng())[0], float("inf"))


def test_joint_histogram_equals_per_pair_boolean_masks():
    rng = np.random.default_rng(7)
    for stride in (1, 2, 3):
        shape = (50, 70)
        masks = [(int(rng.integers(-10, 60)), int(rng.integers(-10, 40)),
                  rng.random((int(rng.integers(1, 20)), int(rng.integers(1, 20)))) < 0.7)
                 for _ in range(12)]
        ids = rng.integers(0, 5, shape).astype(np.int32) * 1000 + 1
        det_ids = [1001, 3001, 4001]
        iou = mask_ious(shape, masks, detection_index(ids, det_ids, stride), len(det_ids),
                        stride)
        assert len(layers(masks)) > 1  # overlapping masks spread over layers
        full = []
        for x0, y0, crop in masks:
            m = np.zeros((shape[0] + 40, shape[1] + 40), bool)
            m[y0 + 20:y0 + 20 + crop.shape[0], x0 + 20:x0 + 20 + crop.shape[1]] = crop
            full.append(m[20:-20, 20:-20])
        for k, mask in enumerate(full):
            a = mask[::stride, ::stride]
            for j, sid in enumerate(det_ids):
                b = (ids == sid)[::stride, ::stride]
                union = (a | b).sum()
                assert iou[k, j] == ((a & b).sum() / union if union else 0.0)


@st.composite
def sequences(draw):
    divisor = draw(st.sampled_from([4, 1000]))
    frames = []
    stamp = 0.0
    for _ in range(draw(st.integers(1, 6))):
        ids = np.full((24, 32), GROUND * divisor, np.int32)
        scores = {}
        for _ in range(draw(st.integers(0, 5))):
            cat = draw(st.sampled_from([PERSON, CAR, SKY]))
            inst = draw(st.integers(1, divisor - 1)) if cat != SKY else 0
            x, y = draw(st.integers(0, 31)), draw(st.integers(0, 23))
            w, h = draw(st.integers(1, 20)), draw(st.integers(1, 20))
            ids[y:y + h, x:x + w] = cat * divisor + inst
            scores[cat * divisor + inst] = draw(st.floats(0, 1))
        if draw(st.booleans()):
            ids[draw(st.integers(0, 23)), :] = 0
        stamp += draw(st.sampled_from([0.0, 0.05, 0.1, 0.5, 2.0, -1.0]))
        frame_id = draw(st.sampled_from(["cam", "cam", "cam", "other"]))
        frames.append((PanopticResult.from_ids(ids, LS, divisor, scores=scores), stamp,
                       frame_id))
    return frames


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences())
def test_property_any_sequence_gives_consistent_bijective_relabelling(frames):
    tracker = Tracker(TrackerConfig(stride=1, max_age=0.6))
    seen_tracks: set[int] = set()
    for result, stamp, frame_id in frames:
        out = tracker.update(result, stamp, frame_id)
        if tracker.reset_reason:
            seen_tracks = set()
        check_consistent(result, out)
        tids = [s.track_id for s in out.segments if s.track_id]
        assert len(tids) == len(set(tids))
        live = {t.track_id: t for t in tracker.tracks}
        for s in out.segments:
            if s.track_id:
                track = live[s.track_id]
                assert (track.category_id, track.number) == (s.category_id, s.instance_id)
                assert s.track_age == pytest.approx(stamp - track.first_seen)
        new = set(tids) - seen_tracks
        assert all(t >= max(seen_tracks, default=0) for t in new)  # never reused
        seen_tracks |= set(tids)


def test_tracked_predictor_passes_through_without_a_tracker():
    rng = np.random.default_rng(0)
    result = render([Obj("a", PERSON, (10, 10), (50, 50))], 0, 0, rng)[0]
    step = TrackedPredictor(lambda image: result)
    assert step(None, 0.0) is result and step.reset_reason is None
    step.tracker = Tracker()
    out = step(None, 0.0, "cam")
    assert [s.track_id for s in out.segments if s.is_thing] == [1]


@pytest.mark.slow
def test_infer_track_keeps_ids_across_frames(tmp_path):
    from panoptic_ros.cli import main

    assert main(["synth", "--out", str(tmp_path / "synth"), "--count", "1", "--seed", "11",
                 "--size", "128x176", "--image-format", "png"]) == 0
    (image,) = sorted((tmp_path / "synth" / "images").glob("*.png"))
    frames = tmp_path / "frames"
    frames.mkdir()
    base = cv2.imread(str(image))
    for k in range(4):  # the camera pans 3 px per frame over the scene
        cv2.imwrite(str(frames / f"{k:06d}.png"), base[:, 3 * k:3 * k + 160])
    out = tmp_path / "out"
    assert main(["infer", "--input", str(frames), "--output", str(out), "--device", "cpu",
                 "--track", "--rate", "5"]) == 0
    data = json.loads((out / "predictions.json").read_text())
    annotations = sorted(data["annotations"], key=lambda a: a["file_name"])
    assert len(annotations) == 4
    by_frame = []
    for ann in annotations:
        png = cv2.imread(str(out / "predictions" / ann["file_name"]))[..., ::-1]
        seg_ids = rgb_to_id(png)
        things = [s for s in ann["segments_info"] if "track_id" in s]
        for s in things:
            assert (seg_ids == s["id"]).sum() == s["area"]
        by_frame.append({s["track_id"]: s for s in things})
    assert by_frame[0], "the demo model found no things"
    first = by_frame[0]
    for k, frame in enumerate(by_frame[1:], start=1):
        common = first.keys() & frame.keys()
        # Most objects keep their track (the model's detections flicker at this size).
        assert len(common) >= max(3, len(first) - 2)
        for tid in common:
            assert frame[tid]["id"] == first[tid]["id"]  # the same pixel value
            assert frame[tid]["track_age"] == pytest.approx(k / 5)


def test_merge_with_a_neighbour_keeps_the_steady_mask_and_the_velocity():
    # A walker (40 px/s) is merged for one frame with a blob of its category below it that
    # reaches the image's bottom border (a backend fusing two segments): the merged box jumps
    # on both axes, which says nothing about motion (read as a border cut, the bottom border
    # would make it a fast move up), and the walker comes back at its steady size.
    walker = Obj("walker", PERSON, (12, 30), (60, 150), (40, 0), z=2)

    def frame_objects(k):
        if k != 8:
            return [walker]
        blob = Obj("walker", PERSON, (20, 65), (walker.pos[0] + walker.vel[0] * 0.8, 175))
        return [blob]  # one segment covering the walker

    tracker, history = run(frame_objects, 10)  # back at its steady size in the last frame
    check_identities(history)
    (track,) = tracker.tracks
    assert track.velocity[0] == pytest.approx(40, rel=0.3) and abs(track.velocity[1]) < 5
    assert track.ref_box == track.box  # steady again


def test_observe_measures_motion_from_the_steady_size_observation():
    crop = np.ones((20, 10), bool)
    track = Track(track_id=1, category_id=PERSON, number=1, first_seen=0.0, last_seen=0.0,
                  hits=1, box=(100, 100, 10, 20), crop=crop)
    seg = PanopticResult.from_ids(np.zeros((240, 320), np.int32), LS).segments

    def observe(box, stamp):
        x, y, w, h = box
        ids = np.zeros((240, 320), np.int32)
        ids[y:y + h, x:x + w] = PERSON * 1000 + 1
        (s,) = [s for s in PanopticResult.from_ids(ids, LS).segments if s.is_thing]
        track.observe(s, ids[y:y + h, x:x + w] > 0, stamp, ids.shape)

    assert seg == []
    observe((110, 100, 10, 20), 0.1)  # steady: 100 px/s
    assert track.velocity == pytest.approx((100.0, 0.0))
    observe((60, 60, 120, 80), 0.2)  # merged: both axes jump; no motion, steady mask kept
    assert track.velocity == pytest.approx((100.0, 0.0))
    assert track.ref_box == (110, 100, 10, 20) and track.box == (60, 60, 120, 80)
    assert len(track.placements(0.3)) == 3  # latest mask predicted and seen, steady predicted
    observe((130, 100, 10, 20), 0.3)  # back: 20 px in 0.2 s from the steady observation
    assert track.velocity == pytest.approx((100.0, 0.0))
    assert track.ref_box == track.box and len(track.placements(0.4)) == 2
    observe((140, 100, 14, 28), 0.4)  # a new size (the object came nearer) ...
    assert track.ref_box == (130, 100, 10, 20)
    observe((150, 100, 14, 28), 0.5)  # ... confirmed by the next observation
    assert track.ref_box == (150, 100, 14, 28)


def test_gate_widens_with_time_unseen_for_a_track_back_from_occlusion():
    # A ball hidden for 1.2 s slows down meanwhile (100 -> 70 px/s): it reappears 36 px from
    # where its velocity predicts, beyond a fixed gate of 1.5 sizes (24 px), within the
    # widened one.
    def frame_objects(k):
        if k < 8:
            return [Obj("ball", BALL, (8, 8), (40, 150), (100, 0), disc=True)]
        hidden = frozenset(range(8, 20))
        return [Obj("ball", BALL, (8, 8), (40 + 100 * 0.8 - 70 * 0.8, 150), (70, 0), disc=True,
                    hidden=hidden)]

    _, history = run(frame_objects, 26)
    assert all("ball" not in by_key for _, by_key in history[8:20])
    check_identities(history)
    _, history = run(frame_objects, 26, config=TrackerConfig(center_gate_growth=0.0))
    assert len({seg.track_id for _, by_key in history for seg in by_key.values()}) == 2
