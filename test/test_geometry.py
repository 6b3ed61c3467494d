"""The ROS-free 3D core: depth decoding, intrinsics, per-segment geometry, the labelled cloud,
stamp pairing. Tier (a): hand-computed projections and tiny arrays; the synthetic sequence's
ground truth for the centroid definition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from panoptic_ros.categories import synthetic
from panoptic_ros.data.sequences import SequenceConfig, generate_sequence
from panoptic_ros.geometry import (
    POINT_DTYPE,
    DepthError,
    Intrinsics,
    StampPairer,
    depth_array,
    depth_to_metres,
    intrinsics_from_calibration,
    intrinsics_from_camera_info,
    labelled_points,
    match_depth_size,
    pointcloud2_fields,
    segment_geometry,
)
from panoptic_ros.geometry.segments import backproject_image, segment_geometries
from panoptic_ros.geometry.selection import grouped_order_statistics
from panoptic_ros.result import PanopticResult, SegmentGeometry

LS = synthetic()
PERSON, CAR, SKY, GROUND = 1, 2, 11, 12
CAM = Intrinsics(fx=100.0, fy=50.0, cx=12.0, cy=3.0, width=20, height=10)  # off-centre


def result_of(ids: np.ndarray) -> PanopticResult:
    return PanopticResult.from_ids(ids.astype(np.int32), LS)


def reference_stats(points: np.ndarray) -> tuple:
    """numpy's own definitions on float64 copies of ndarray[n, 3] points."""
    p = points.astype(np.float64)
    r = np.sqrt(points[:, 0] * points[:, 0] + points[:, 1] * points[:, 1]
                + points[:, 2] * points[:, 2]).astype(np.float64)
    return (np.median(p, axis=0), np.percentile(r, 5), np.percentile(p, 5, axis=0),
            np.percentile(p, 95, axis=0))


def reference_geometries(ids: np.ndarray, segment_ids, depth: np.ndarray, cam) -> list:
    """One boolean mask per segment, numpy's median / percentile on its points."""
    x, y = backproject_image(depth, cam)
    out = []
    for sid in segment_ids:
        m = ids == sid
        v = m & (depth > 0)
        if not v.any():
            out.append(None)
            continue
        med, dist, lo, hi = reference_stats(np.stack([x[v], y[v], depth[v]], axis=1))
        out.append(SegmentGeometry(v.sum() / float(m.sum()), tuple(med), dist, tuple(lo),
                                   tuple(hi)))
    return out


# -- depth decoding --------------------------------------------------------------------------
def test_16uc1_millimetres_zero_invalid():
    mm = np.array([[0, 1, 1500], [65535, 0, 2000]], np.uint16)
    out = depth_to_metres(mm, "16UC1")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), mm == 0)
    np.testing.assert_allclose(out[~np.isnan(out)], [0.001, 1.5, 65.535, 2.0], rtol=1e-6)


def test_32fc1_nan_inf_zero_negative_invalid():
    m = np.array([[np.nan, np.inf, -np.inf], [0.0, -1.0, 2.5]], np.float32)
    out = depth_to_metres(m, "32FC1")
    assert np.isnan(out[:, :2]).all() and np.isnan(out[0]).all() and out[1, 2] == 2.5
    assert np.isnan(m[0, 0]) and m[1, 2] == 2.5 and m[0, 1] == np.inf  # input untouched


@pytest.mark.parametrize("encoding", ["mono16", "16SC1", "32FC3", "rgb8", "", None])
def test_other_encodings_refused(encoding):
    with pytest.raises(DepthError, match="unsupported depth encoding"):
        depth_to_metres(np.zeros((2, 2), np.uint16), encoding)


def test_pixel_type_must_fit_encoding():
    with pytest.raises(DepthError, match="16UC1 depth must be uint16"):
        depth_to_metres(np.zeros((2, 2), np.float32), "16UC1")
    with pytest.raises(DepthError, match="2-D"):
        depth_to_metres(np.zeros((2, 2, 1), np.float32), "32FC1")


def test_depth_array_from_buffer_with_padding_and_big_endian():
    values = np.array([[1, 2, 3], [4, 5, 6]], ">u2")
    rows = [values[r].tobytes() + b"\xff\xff" for r in range(2)]  # 2 bytes padding a row
    out = depth_array(b"".join(rows), 2, 3, 8, "16UC1", is_bigendian=True)
    np.testing.assert_array_equal(out, values.astype(np.uint16))
    f = np.array([[1.5, np.nan]], np.float32)
    np.testing.assert_array_equal(depth_array(f.tobytes(), 1, 2, 8, "32FC1"), f)
    with pytest.raises(DepthError, match="step 4 < width"):
        depth_array(b"\0" * 16, 2, 3, 4, "16UC1")
    with pytest.raises(DepthError, match="needs step x height"):
        depth_array(b"\0" * 10, 2, 3, 6, "16UC1")


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.uint16, hnp.array_shapes(min_dims=2, max_dims=2, max_side=8)))
def test_property_16uc1_decoder(mm):
    out = depth_to_metres(mm, "16UC1")
    assert out.shape == mm.shape
    np.testing.assert_array_equal(np.isnan(out), mm == 0)
    np.testing.assert_allclose(out[mm > 0], mm[mm > 0] / 1000.0, rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=8),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
def test_property_32fc1_decoder(m):
    out = depth_to_metres(m, "32FC1")
    good = np.isfinite(m) & (m > 0)
    np.testing.assert_array_equal(np.isnan(out), ~good)
    np.testing.assert_array_equal(out[good], m[good])


def test_half_resolution_depth_is_scaled_by_nearest_neighbour():
    half = np.arange(12, dtype=np.float32).reshape(3, 4)
    full, scaled = match_depth_size(half, 6, 8)
    assert scaled and full.shape == (6, 8)
    np.testing.assert_array_equal(full, np.repeat(np.repeat(half, 2, axis=0), 2, axis=1))
    same, scaled = match_depth_size(half, 3, 4)
    assert same is half and not scaled


# -- intrinsics ------------------------------------------------------------------------------
K = [500.0, 0, 320, 0, 510.0, 240, 0, 0, 1]
P = [400.0, 0, 300, 0, 0, 410.0, 250, 0, 0, 0, 1, 0]


def test_p_is_used_when_set_else_k():
    got = intrinsics_from_camera_info(640, 480, K, P, image_size=(480, 640))
    assert (got.fx, got.fy, got.cx, got.cy, got.source) == (400, 410, 300, 250, "P")
    got = intrinsics_from_camera_info(640, 480, K, [0.0] * 12)
    assert (got.fx, got.fy, got.cx, got.cy, got.source) == (500, 510, 320, 240, "K")


@pytest.mark.parametrize("k,p,match", [
    ([0.0] * 9, [0.0] * 12, "focal lengths fx=0.0"),
    (K, [0.0, 0, 300, 0, 0, 410, 250, 0, 0, 0, 1, 0], "camera_info P has focal lengths"),
    (K[:8], P, "K must have 9 numbers"),
    (K, P[:9], "P must have 12 numbers"),
])
def test_bad_calibration_refused(k, p, match):
    with pytest.raises(DepthError, match=match):
        intrinsics_from_camera_info(640, 480, k, p)


def test_size_mismatch_refused_naming_both_sizes():
    with pytest.raises(DepthError, match="for 640x480 images, the image is 320x240"):
        intrinsics_from_camera_info(640, 480, K, P, image_size=(240, 320))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4), min_size=9, max_size=9),
       st.lists(st.floats(-1e4, 1e4), min_size=12, max_size=12),
       st.integers(1, 4000), st.integers(1, 4000))
def test_property_calibration_parser(k, p, w, h):
    m = np.reshape(p, (3, 4)) if any(v != 0 for v in p) else np.reshape(k, (3, 3))
    try:
        got = intrinsics_from_camera_info(w, h, k, p, image_size=(h, w))
    except DepthError:
        assert not (m[0, 0] > 0 and m[1, 1] > 0)
        return
    assert (got.fx, got.fy, got.cx, got.cy) == (m[0, 0], m[1, 1], m[0, 2], m[1, 2])
    assert got.fx > 0 and got.fy > 0 and (got.width, got.height) == (w, h)


# -- per-segment geometry --------------------------------------------------------------------
def test_plane_at_known_depth_off_centre_principal_point():
    ids = np.full((10, 20), SKY * 1000)
    ids[2:5, 10:15] = PERSON * 1000 + 1  # rows 2..4, columns 10..14
    depth = np.full((10, 20), 4.0, np.float32)
    out = segment_geometry(result_of(ids), depth, CAM)
    g = out.segment(PERSON * 1000 + 1).geometry
    # Median column 12 = cx, median row 3 = cy: the centroid is on the optical axis.
    assert g.centroid == pytest.approx((0.0, 0.0, 4.0))
    assert g.valid_fraction == 1.0
    # x of columns 10..14: (u - 12) / 100 * 4; 5th percentile of 3 copies of 5 columns.
    xs = np.repeat((np.arange(10, 15) - 12) / 100 * 4, 3)
    ys = np.tile((np.arange(2, 5) - 3) / 50 * 4, 5)
    assert g.extent_min == pytest.approx((np.percentile(xs, 5), np.percentile(ys, 5), 4.0))
    assert g.extent_max == pytest.approx((np.percentile(xs, 95), np.percentile(ys, 95), 4.0))
    x, y = backproject_image(depth, CAM)
    m = ids == PERSON * 1000 + 1
    assert g.distance == reference_stats(np.stack([x[m], y[m], depth[m]], axis=1))[1]


def test_single_pixel_hand_computed():
    ids = np.zeros((10, 20), int)
    ids[7, 2] = CAR * 1000 + 3
    depth = np.full((10, 20), np.nan, np.float32)
    depth[7, 2] = 2.0
    g = segment_geometry(result_of(ids), depth, CAM).segments[0].geometry
    x, y = (2 - 12) / 100 * 2, (7 - 3) / 50 * 2  # -0.2, 0.16
    assert g.centroid == pytest.approx((x, y, 2.0), abs=1e-6)
    assert g.extent_min == g.extent_max == g.centroid
    assert g.distance == pytest.approx(np.sqrt(x * x + y * y + 4), abs=1e-6)


def test_tilted_plane_matches_numpy_definitions():
    h, w = 10, 20
    v, u = np.mgrid[:h, :w]
    depth = (2.0 + 0.1 * u + 0.05 * v).astype(np.float32)  # tilted plane
    ids = np.where(u < 8, GROUND * 1000, PERSON * 1000 + 1)
    out = segment_geometry(result_of(ids), depth, CAM)
    x, y = backproject_image(depth, CAM)
    for seg in out.segments:
        m = ids == seg.id
        pts = np.stack([x[m], y[m], depth[m]], axis=1)
        med, dist, lo, hi = reference_stats(pts)
        g = seg.geometry
        assert g.centroid == tuple(med) and g.distance == dist
        assert g.extent_min == tuple(lo) and g.extent_max == tuple(hi)
    # x itself is the pinhole formula
    assert x[4, 17] == pytest.approx((17 - 12) / 100 * depth[4, 17])
    assert y[9, 0] == pytest.approx((9 - 3) / 50 * depth[9, 0])


def test_invalid_depth_patterns():
    ids = np.full((10, 20), SKY * 1000)
    ids[:, 10:] = PERSON * 1000 + 1
    depth = np.full((10, 20), np.nan, np.float32)  # sky: no depth at all
    depth[:, 10:] = 3.0
    depth[0, 10:] = np.nan
    depth[1, 10:] = 0.0
    depth[2, 10:] = -1.0
    out = segment_geometry(result_of(ids), depth, CAM)
    assert out.segment(SKY * 1000).geometry is None
    g = out.segment(PERSON * 1000 + 1).geometry
    assert g.valid_fraction == pytest.approx(0.7) and g.centroid[2] == 3.0
    decoded = depth_to_metres(np.where(np.isnan(depth), np.inf, depth).astype(np.float32),
                              "32FC1")
    assert segment_geometry(result_of(ids), decoded, CAM).segments == out.segments
    given = result_of(ids)
    nothing = segment_geometry(given, np.full((10, 20), np.nan, np.float32), CAM)
    assert all(s.geometry is None for s in nothing.segments)
    assert nothing.ids is given.ids


def test_16uc1_and_half_resolution_end_to_end():
    ids = np.full((10, 20), GROUND * 1000)
    ids[4:8, 4:12] = CAR * 1000 + 1
    full_mm = np.full((10, 20), 2500, np.uint16)
    full_mm[4:8, 4:12] = 1500
    half = full_mm[::2, ::2]
    depth, scaled = match_depth_size(depth_to_metres(half, "16UC1"), 10, 20)
    assert scaled
    a = segment_geometry(result_of(ids), depth, CAM)
    b = segment_geometry(result_of(ids), depth_to_metres(full_mm, "16UC1"), CAM)
    assert a.segments == b.segments
    assert a.segment(CAR * 1000 + 1).geometry.centroid[2] == 1.5


def test_depth_of_another_size_refused():
    with pytest.raises(DepthError, match="scale it first"):
        segment_geometry(result_of(np.zeros((10, 20), int) + SKY * 1000),
                         np.ones((5, 10), np.float32), CAM)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=5), st.integers(1, 3),
       st.sampled_from(["normal", "ties", "huge", "constant"]), st.sampled_from([1, 2, 7, 1024]),
       st.integers(0, 2 ** 32 - 1))
def test_property_grouped_order_statistics_equal_sort(counts, n_rows, kind, bins, seed):
    """Every rank of every group is np.sort's, whatever the bins (ties, overflow to inf)."""
    rng = np.random.default_rng(seed)
    shape = (n_rows, sum(counts))
    rows = {"normal": lambda: rng.normal(size=shape),
            "ties": lambda: rng.integers(0, 4, shape) * 0.001,
            "huge": lambda: rng.choice([-np.inf, -3e38, 1e-40, 0.0, 2.0, np.inf], shape),
            "constant": lambda: np.full(shape, 2.5)}[kind]().astype(np.float32)
    ranks = (rng.random((n_rows, len(counts), 6)) * np.array(counts)[:, None]).astype(np.intp)
    got = grouped_order_statistics(rows, np.array(counts), ranks, bins=bins)
    assert got.dtype == np.float32 and got.shape == ranks.shape
    start = np.cumsum(counts) - counts
    for r in range(n_rows):
        for g, (s0, n) in enumerate(zip(start, counts)):
            np.testing.assert_array_equal(got[r, g], np.sort(rows[r, s0:s0 + n])[ranks[r, g]])


SEGMENT_IDS = [PERSON * 1000 + 1, PERSON * 1000 + 2, CAR * 1000 + 1, SKY * 1000]


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.int64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=30),
                  elements=st.sampled_from([0] + SEGMENT_IDS)),
       st.data(), st.floats(5, 2000), st.floats(5, 2000), st.floats(-50, 80), st.floats(-50, 80))
def test_property_segment_geometries_equal_reference(ids, data, fx, fy, cx, cy):
    """Bit for bit numpy's definitions on random segments: integer-millimetre depths (ties),
    invalid pixels (0 mm -> NaN), void, a listed segment without pixels."""
    mm = data.draw(hnp.arrays(np.uint16, ids.shape, elements=st.sampled_from(
        [0, 0, 1, 999, 1000, 1000, 1001, 2500, 65535]) | st.integers(0, 65535)))
    depth = depth_to_metres(mm, "16UC1")
    cam = Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=ids.shape[1], height=ids.shape[0])
    segment_ids = np.array(SEGMENT_IDS[:3] + [GROUND * 1000])  # GROUND: listed, never drawn
    order = np.argsort(segment_ids)
    got = segment_geometries(ids, segment_ids[order], depth, cam)
    assert got == reference_geometries(ids, segment_ids[order], depth, cam)


@pytest.mark.parametrize("millimetres", [False, True])
def test_sequence_frame_equals_reference(millimetres):
    """A 240x320 synthetic frame (bins holding many values; with 16UC1 depth, heavy ties)."""
    frame = next(generate_sequence(2027, 5, 1, SequenceConfig(height=240, width=320,
                                                              min_things=8, max_things=12)))
    cam = intrinsics_from_calibration(frame.camera, frame.result.ids.shape)
    depth = frame.depth
    if millimetres:
        depth = depth_to_metres(np.nan_to_num(depth * 1000).round().astype(np.uint16), "16UC1")
    out = segment_geometry(frame.result, depth, cam)
    want = reference_geometries(frame.result.ids, [s.id for s in out.segments], depth, cam)
    assert [s.geometry for s in out.segments] == want
    assert sum(g is not None for g in want) >= 8


def test_ground_truth_masks_give_position_m_to_1mm():
    cfg = SequenceConfig(height=120, width=160)
    checked = 0
    for frame in generate_sequence(2027, 3, 3, cfg):
        cam = intrinsics_from_calibration(frame.camera, frame.result.ids.shape)
        out = segment_geometry(frame.result, frame.depth, cam)
        for obj in frame.objects:
            if obj.visible:
                g = out.segment(obj.id).geometry
                np.testing.assert_allclose(g.centroid, obj.position_m, atol=1e-3)
                checked += 1
    assert checked >= 3


# -- point cloud -----------------------------------------------------------------------------
def test_pointcloud2_layout_read_back_field_by_field():
    fields, step = pointcloud2_fields()
    assert step == 20 == POINT_DTYPE.itemsize
    assert [(f.name, f.offset, f.datatype, f.count) for f in fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1), ("id", 16, 6, 1)]
    ids = np.full((10, 20), SKY * 1000)
    ids[5:, :] = GROUND * 1000
    ids[6, 3] = PERSON * 1000 + 2
    depth = np.full((10, 20), np.nan, np.float32)
    depth[5:] = 2.0
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[6, 3] = (0x12, 0x34, 0x56)
    pts = labelled_points(result_of(ids), depth, rgb, CAM)
    data = pts.tobytes()
    n = len(data) // step
    assert n == 100  # rows 5..9: only valid points (is_dense)

    def field(name, dtype):
        f = next(f for f in fields if f.name == name)
        return np.frombuffer(data, dtype, count=n, offset=f.offset) if step == 4 else \
            np.ndarray((n,), dtype, data, f.offset, (step,))

    x, y, z = field("x", "<f4"), field("y", "<f4"), field("z", "<f4")
    rgb_bits, pid = field("rgb", "<u4"), field("id", "<u4")
    k = (6 - 5) * 20 + 3  # row-major order of valid pixels
    assert pid[k] == PERSON * 1000 + 2 and rgb_bits[k] == 0x00123456
    assert x[k] == np.float32((3 - 12) / 100) * np.float32(2.0)
    assert y[k] == np.float32((6 - 3) / 50) * np.float32(2.0) and z[k] == 2.0
    assert np.isfinite(np.stack([x, y, z])).all() and (pid[:20] == GROUND * 1000).all()


def test_cloud_stride_and_voxel():
    ids = np.full((10, 20), GROUND * 1000)
    depth = np.full((10, 20), 1.0, np.float32)
    full = labelled_points(result_of(ids), depth, None, CAM)
    strided = labelled_points(result_of(ids), depth, None, CAM, stride=2)
    assert len(full) == 200 and len(strided) == 50
    np.testing.assert_array_equal(strided, full.reshape(10, 20)[::2, ::2].reshape(-1))
    big = labelled_points(result_of(ids), depth, None, CAM, voxel=100.0)
    # Cubes are aligned to the optical frame origin: x and y change sign, 4 cubes.
    assert len(big) == 4 and big[0] == full[0]  # the first point in pixel order
    fine = labelled_points(result_of(ids), depth, None, CAM, voxel=0.02)
    cells = {tuple(np.floor(np.array([p["x"], p["y"], p["z"]], float) / 0.02)) for p in fine}
    assert len(cells) == len(fine) < 200
    with pytest.raises(ValueError, match="stride"):
        labelled_points(result_of(ids), depth, None, CAM, stride=0)


# -- pairing ---------------------------------------------------------------------------------
MS = 1_000_000


def test_pairing_exact_stamp():
    p = StampPairer(slop_s=0.0)
    assert p.add_depth(100 * MS, "d100") == []
    (pair,) = p.add_colour(100 * MS, "c100")
    assert (pair.colour, pair.depth, pair.offset_s) == ("c100", "d100", 0.0)
    assert p.pending_depth == 0 and p.paired == 1


def test_pairing_within_and_outside_slop():
    p = StampPairer(slop_s=0.010)
    p.add_depth(95 * MS, "d95")
    p.add_depth(108 * MS, "d108")
    (pair,) = p.add_colour(100 * MS, "c100")  # d95 (5 ms) beats d108 (8 ms)
    assert pair.depth == "d95" and pair.offset_s == pytest.approx(-0.005)
    assert p.add_colour(130 * MS, "c130") == []  # d108 is 22 ms away; a nearer one may come
    (pair,) = p.add_depth(150 * MS, "d150")  # 20 ms away and later: none will be nearer
    assert pair.colour == "c130" and pair.depth is None and p.unpaired == 1
    assert p.pending_depth == 1  # d150 waits for a later frame


def test_pairing_waits_for_a_later_depth_then_resolves():
    p = StampPairer(slop_s=0.010)
    p.add_depth(90 * MS, "d90")
    assert p.add_colour(100 * MS, "c100") == [] and p.waiting  # d90 is 10 ms: a nearer may come
    (pair,) = p.add_depth(103 * MS, "d103")
    assert pair.depth == "d103" and not p.waiting
    assert p.add_colour(200 * MS, "c200") == []
    (pair,) = p.add_colour(300 * MS, "c300")  # the newer frame resolves the waiting one
    assert pair.colour == "c200" and pair.depth is None
    assert [q.depth for q in p.flush()] == [None] and p.unpaired == 2


def test_pairing_buffer_bound_and_out_of_order():
    p = StampPairer(slop_s=0.0, capacity=3)
    for t in (50, 10, 40, 20, 30):  # out of order
        p.add_depth(t * MS, f"d{t}")
    assert p.pending_depth == 3 and p.depth_dropped == 2  # 10 and 20 fell out (oldest)
    (pair,) = p.add_colour(40 * MS, "c40")
    assert pair.depth == "d40"
    assert p.depth_unused == 1 and p.pending_depth == 1  # d30 is older than any later frame
    (pair,) = p.add_colour(20 * MS, "c20")  # an old frame: its depth fell out
    assert pair.depth is None


def test_pairing_rejects_bad_settings():
    with pytest.raises(ValueError):
        StampPairer(slop_s=-1)
    with pytest.raises(ValueError):
        StampPairer(capacity=0)
