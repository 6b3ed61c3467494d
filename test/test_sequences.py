"""Synthetic video sequences (panoptic_ros.data.sequences) and the camera model.

Content, not existence: depth against the analytic ground plane, metric positions and sizes
against the pixels, identities across frames, the files against the in-memory frames.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from panoptic_ros.camera_model import (
    CameraCalibration,
    depth_from_millimetres,
    depth_to_millimetres,
)
from panoptic_ros.cli import main
from panoptic_ros.data.coco_panoptic import read_panoptic_png
from panoptic_ros.data.sequences import (
    SequenceConfig,
    VideoPanopticDataset,
    generate_sequence,
    read_depth_png,
    write_depth_png,
)
from panoptic_ros.data.synthetic import CAR, GRASS, GROUND, PERSON, SKY, WATER
from panoptic_ros.errors import UserError

SMALL = SequenceConfig(height=96, width=128)
DIV = 1000


def _frames(seed, video=0, frames=6, config=SMALL):
    return list(generate_sequence(seed, video, frames, config))


@pytest.fixture(scope="module")
def clip():
    """Three short sequences at 96x128, each 10 frames."""
    return {v: _frames(11, v, 10) for v in range(3)}


def _mask_extent(mask):
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1, rows, cols


def test_ground_depth_is_the_ray_plane_intersection(clip):
    checked = 0
    for frames in clip.values():
        f = frames[0]
        cam, h, p = f.camera, f.camera_height_m, f.pitch_rad
        cats = f.result.ids // DIV
        v, u = np.nonzero(np.isin(cats, (GROUND, GRASS, WATER)))
        analytic = h / ((v - cam.cy) / cam.fy * math.cos(p) + math.sin(p))
        np.testing.assert_allclose(f.depth[v, u], analytic, rtol=1e-6)
        # The back-projected ground pixels lie on the plane n . p = h.
        pts = cam.backproject(u, v, f.depth[v, u].astype(np.float64))
        np.testing.assert_allclose(pts @ np.array([0, math.cos(p), math.sin(p)]), h,
                                   rtol=1e-5)
        assert np.isnan(f.depth[cats == SKY]).all()
        assert np.isfinite(f.depth[cats != SKY]).all() and (f.depth[cats != SKY] > 0).all()
        checked += v.size
    assert checked > 1000


def test_things_back_project_to_their_position_and_stand_on_the_ground(clip):
    seen = 0
    for frames in clip.values():
        for f in frames:
            cam = f.camera
            for obj in f.objects:
                mask = f.result.ids == obj.id
                assert mask.any() == obj.visible
                if not obj.visible:
                    continue
                seen += 1
                # A billboard at the camera depth of its foot point.
                np.testing.assert_allclose(f.depth[mask], obj.foot_m[2], rtol=1e-6)
                v, u = np.nonzero(mask)
                z = f.depth[v, u].astype(np.float64)
                expected = np.median(np.stack([(u - cam.cx) * z / cam.fx,
                                               (v - cam.cy) * z / cam.fy, z], 1), axis=0)
                np.testing.assert_allclose(obj.position_m, expected, atol=1e-9)
                # The foot point is on the ground plane.
                n = np.array([0, math.cos(f.pitch_rad), math.sin(f.pitch_rad)])
                assert obj.foot_m @ n == pytest.approx(f.camera_height_m, rel=1e-9)
    assert seen > 20


def test_pixel_size_of_a_lone_thing_is_focal_times_size_over_distance():
    """A fully visible person is fy*h/Z pixels tall, a car fx*l/Z pixels long (a person's
    width with arms is not a fixed ratio of its drawing at small sizes: not checked)."""
    cfg = SequenceConfig(height=128, width=160, min_things=1, max_things=1)
    checked = {PERSON: 0, CAR: 0}
    for video in range(120):
        f = next(generate_sequence(5, video, 1, cfg))
        (obj,) = f.objects
        if obj.category_id not in checked or not obj.visible:
            continue
        ph, pw, rows, cols = _mask_extent(f.result.ids == obj.id)
        if rows[0] == 0 or cols[0] == 0 or rows[-1] == 127 or cols[-1] == 159:
            continue  # cut by the image border
        z = obj.foot_m[2]
        if obj.category_id == PERSON:
            assert 1.5 < obj.size_m[1] < 1.95
            assert abs(ph - f.camera.fy * obj.size_m[1] / z) <= 2.5  # drawing's rounding
        else:
            assert 3.8 < obj.size_m[2] < 4.9
            assert abs(pw - f.camera.fx * obj.size_m[2] / z) <= 2.0
        checked[obj.category_id] += 1
    assert min(checked.values()) >= 2


def test_ids_persist_per_object_and_differ_between_objects(clip):
    for frames in clip.values():
        ids = [o.id for o in frames[0].objects]
        assert len(set(ids)) == len(ids)
        for o in frames[0].objects:
            cat, inst = divmod(o.id, DIV)
            assert cat == o.category_id and inst >= 1
        dt = 1.0 / SMALL.rate
        for a, b in zip(frames, frames[1:]):
            assert [o.id for o in b.objects] == ids
            for oa, ob in zip(a.objects, b.objects):
                assert oa.size_m == ob.size_m
                # Same object: its ground position moves at most 9 m/s (a fast car).
                assert np.linalg.norm(ob.foot_m - oa.foot_m) <= 9.0 * dt + 1e-9
            # Every thing segment of the label image is one object of the sequence.
            things = {s.id for s in b.result.segments if s.is_thing}
            assert things == {o.id for o in b.objects if o.visible}
    assert any(len({o.id for o in f.objects if o.visible}) >= 2 for f in clip[0])


def test_an_object_that_leaves_the_view_disappears_and_its_id_stays_unused():
    cfg = SequenceConfig(height=64, width=80)
    for video in range(12):
        frames = _frames(2, video, 40, cfg)
        for obj in frames[0].objects:
            vis = [next(o for o in f.objects if o.id == obj.id) for f in frames]
            seen = [k for k, o in enumerate(vis) if o.visible]
            if not seen or seen[-1] == len(frames) - 1:
                continue
            gone = seen[-1] + 1
            if abs(vis[-1].foot_m[0] / vis[-1].foot_m[2]) * frames[0].camera.fx < 60:
                continue  # hidden behind something rather than out of view
            for f in frames[gone:]:
                assert not (f.result.ids == obj.id).any()
            return
    pytest.fail("no object left the view in 12 sequences")


def test_sequences_are_deterministic_and_seed_dependent():
    a, b = _frames(7, 1, 3), _frames(7, 1, 3)
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.image, fb.image)
        np.testing.assert_array_equal(fa.result.ids, fb.result.ids)
        np.testing.assert_array_equal(fa.depth, fb.depth)
        assert fa.camera == fb.camera
    assert not np.array_equal(a[0].image, _frames(8, 1, 1)[0].image)
    assert not np.array_equal(a[0].image, _frames(7, 2, 1)[0].image)
    # Sensor noise is fresh per frame, the scene is not.
    assert not np.array_equal(a[0].image, a[1].image)


def test_camera_yaml_round_trip_and_matches_the_renderer(tmp_path):
    f = _frames(3, 0, 1)[0]
    path = f.camera.write(tmp_path / "cam.yaml")
    back = CameraCalibration.read(path)
    assert back == f.camera
    data = json.loads(json.dumps(__import__("yaml").safe_load(path.read_text())))
    assert data["distortion_model"] == "plumb_bob"
    assert data["camera_matrix"]["rows"] == 3 and data["projection_matrix"]["cols"] == 4
    k = np.reshape(data["camera_matrix"]["data"], (3, 3))
    # K of the file projects every visible thing's foot point where its mask ends.
    for obj in f.objects:
        if obj.visible:
            u, v = (k @ obj.foot_m)[:2] / obj.foot_m[2]
            rows = np.flatnonzero((f.result.ids == obj.id).any(1))
            assert rows[-1] <= v + 1 and (v - rows[-1] < 0.2 * 96 or v > 96)


def test_reads_a_camera_calibration_parsers_file():
    text = """image_width: 640
image_height: 480
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [430.2, 0, 306.6, 0, 430.5, 227.3, 0, 0, 1]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.337, 0.096, 0.001, -0.0004, 0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1, 0, 0, 0, 1, 0, 0, 0, 1]
projection_matrix:
  rows: 3
  cols: 4
  data: [295.5, 0, 307.9, 0, 0, 372.2, 226.9, 0, 0, 0, 1, 0]
"""
    cam = CameraCalibration.from_yaml(text)
    assert (cam.width, cam.height, cam.name) == (640, 480, "narrow_stereo")
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (430.2, 430.5, 306.6, 227.3)
    assert cam.D.tolist() == [-0.337, 0.096, 0.001, -0.0004, 0]
    assert cam.P[1, 1] == 372.2
    bad = text.replace("rows: 3\n  cols: 4", "rows: 3\n  cols: 3")
    with pytest.raises(UserError, match="projection_matrix"):
        CameraCalibration.from_yaml(bad)
    with pytest.raises(UserError, match="image_width"):
        CameraCalibration.from_yaml("camera_name: x\n")


finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 5000), height=st.integers(1, 5000),
       f=st.tuples(st.floats(1e-3, 1e5), st.floats(1e-3, 1e5)), c=st.tuples(finite, finite),
       d=st.lists(finite, min_size=0, max_size=8), p=st.lists(finite, min_size=12,
                                                              max_size=12),
       name=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                    max_size=20))
def test_yaml_round_trip_property(width, height, f, c, d, p, name):
    k = np.array([[f[0], 0, c[0]], [0, f[1], c[1]], [0, 0, 1]])
    cam = CameraCalibration(width, height, k, D=np.array(d), P=np.reshape(p, (3, 4)),
                            name=name)
    assert CameraCalibration.from_yaml(cam.to_yaml()) == cam


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, (7, 9), elements=st.one_of(
    st.floats(float(np.float32(0.001)), float(np.float32(65.5)), width=32), st.just(np.nan),
    st.just(np.inf),
    st.floats(-10, 0, width=32), st.floats(66.0, 1e6, width=32))))
def test_depth_millimetre_round_trip_property(depth):
    mm = depth_to_millimetres(depth)
    assert mm.dtype == np.uint16
    back = depth_from_millimetres(mm)
    valid = np.isfinite(depth) & (depth * 1000 >= 0.5) & (depth * 1000 < 65535.5)
    assert np.isnan(back[~valid]).all() and (mm[~valid] == 0).all()
    np.testing.assert_allclose(back[valid], depth[valid], atol=0.5e-3 + 1e-6)


def test_depth_png_round_trip_in_millimetres(tmp_path):
    depth = np.array([[0.001, 1.2344, np.nan], [65.535, 70.0, 2.0]], np.float32)
    write_depth_png(tmp_path / "d.png", depth)
    import cv2

    raw = cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.tolist() == [[1, 1234, 0], [65535, 0, 2000]]
    back = read_depth_png(tmp_path / "d.png")
    np.testing.assert_allclose(back, [[0.001, 1.234, np.nan], [65.535, np.nan, 2.0]],
                               rtol=1e-6)


def test_cli_writes_the_video_layout_and_the_reader_gives_back_the_frames(tmp_path):
    out = tmp_path / "seq"
    assert main(["synth", "--out", str(out), "--sequences", "2", "--frames", "3", "--seed", "4",
                 "--size", "64x80", "--rate", "5"]) == 0
    data = json.loads((out / "panoptic.json").read_text())
    assert sorted(c["id"] for c in data["categories"]) == [1, 2, 3, 4, 11, 12, 13, 14, 15]
    assert len(data["images"]) == len(data["annotations"]) == 6
    videos = sorted({im["video_id"] for im in data["images"]})
    assert videos == ["4_0000", "4_0001"]
    for im, ann in zip(data["images"], data["annotations"]):
        name = f"{im['video_id']}/{im['frame_index']:06d}.png"
        assert im["file_name"] == ann["file_name"] == name and ann["image_id"] == im["id"]
        assert ann["video_id"] == im["video_id"] and ann["frame_index"] == im["frame_index"]
        assert im["stamp"] == pytest.approx(im["frame_index"] / 5.0)
        for folder in ("images", "panoptic", "depth"):
            assert (out / folder / name).is_file()
        ids = read_panoptic_png(out / "panoptic" / name)
        assert {s["id"] for s in ann["segments_info"]} == set(np.unique(ids).tolist())
        for s in ann["segments_info"]:
            assert ("position_m" in s) == (s["category_id"] < 10)
    ds = VideoPanopticDataset(out)
    assert ds.video_ids == videos and len(ds) == 6
    config = SequenceConfig(height=64, width=80, rate=5.0)
    for video, vid in enumerate(videos):
        assert (out / "camera_info" / f"{vid}.yaml").is_file()
        for got, want in zip(ds.frames(vid), generate_sequence(4, video, 3, config),
                             strict=True):
            np.testing.assert_array_equal(got.image, want.image)
            np.testing.assert_array_equal(got.result.ids, want.result.ids)  # persistent ids
            in_range = want.depth < 65.5355  # a 16-bit millimetre image holds no more
            np.testing.assert_allclose(got.depth[in_range], want.depth[in_range], atol=0.5e-3,
                                       equal_nan=True)
            assert np.isnan(got.depth[~in_range]).all()
            assert got.camera == want.camera and got.stamp == pytest.approx(want.stamp)
            assert got.pitch_rad == pytest.approx(want.pitch_rad)
            for obj in got.objects:  # position_m recomputed from the millimetre depth file
                mask = got.result.ids == obj.id
                v, u = np.nonzero(mask)
                pts = got.camera.backproject(u, v, got.depth[v, u])
                np.testing.assert_allclose(obj.position_m, np.median(pts, 0), atol=1e-3)


def test_cli_refuses_count_with_sequences(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--count", "1", "--sequences", "1"]) == 2
    assert main(["synth", "--out", str(tmp_path)]) == 2
