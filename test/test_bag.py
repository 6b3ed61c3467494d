"""``panoptic-ros bag``: bags written with rosbags from synthetic videos, processed, read back.

Each output PanopticSegmentation is compared with direct inference on the same image (ids pixel
for pixel, segments, header, bag timestamp); input topics must come through byte for byte; both
storages, raw and compressed images; rclpy must decode what rosbags wrote; a missing topic, an
unreadable bag, an existing output and an interrupted run behave as documented.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import LS, save_tiny_efficientps
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("rosbags")
from rosbags.rosbag2 import Reader, StoragePlugin, Writer  # noqa: E402

from panoptic_ros.bags import messages as bag_messages  # noqa: E402
from panoptic_ros.bags.depth import (  # noqa: E402
    DEPTH_WINDOW,
    DepthInputs,
    DepthOptions,
    stamp_ns,
)
from panoptic_ros.bags.process import OutputTopics, process_bag  # noqa: E402
from panoptic_ros.bags.typestore import (  # noqa: E402
    MESSAGES,
    find_message_dir,
    type_name,
    typestore,
)
from panoptic_ros.camera_model import (  # noqa: E402
    depth_from_millimetres,
    depth_to_millimetres,
)
from panoptic_ros.cli import main  # noqa: E402
from panoptic_ros.commands.bag import check_prefix  # noqa: E402
from panoptic_ros.data.sequences import SequenceConfig, generate_sequence  # noqa: E402
from panoptic_ros.errors import UserError  # noqa: E402
from panoptic_ros.geometry import (  # noqa: E402
    POINT_DTYPE,
    intrinsics_from_calibration,
    labelled_points,
    segment_geometry,
)
from panoptic_ros.inference import Predictor  # noqa: E402
from panoptic_ros.message_fields import class_count_fields  # noqa: E402
from panoptic_ros.result import PanopticResult, Segment, SegmentGeometry  # noqa: E402
from panoptic_ros.ros.conversions import compressed_to_rgb, image_to_rgb  # noqa: E402
from panoptic_ros.tracking import TrackedPredictor, Tracker  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGE = "/camera/image"
NOTES = "/notes"
FRAMES = 4
STORE = typestore()
NAMES = {c.id: c.name for c in LS}


# -- fixtures: a tiny model and bags of a synthetic video ----------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_efficientps(tmp_path_factory.mktemp("ckpt") / "narrow.pt", seed=3)


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return Predictor(weights=str(checkpoint), device="cpu")


def header(k: int):
    types = STORE.types
    stamp = types["builtin_interfaces/msg/Time"](sec=1_700_000_000 + k // 10,
                                                 nanosec=(k % 10) * 100_000_000)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id="camera_optical")


def image_msg(rgb: np.ndarray, k: int, compressed: bool):
    types = STORE.types
    if compressed:
        ok, data = cv2.imencode(".jpg", rgb[..., ::-1])
        assert ok
        return types["sensor_msgs/msg/CompressedImage"](header=header(k), format="jpeg",
                                                        data=data.reshape(-1))
    h, w = rgb.shape[:2]
    return types["sensor_msgs/msg/Image"](header=header(k), height=h, width=w, encoding="rgb8",
                                          is_bigendian=0, step=3 * w,
                                          data=np.ascontiguousarray(rgb).reshape(-1))


def write_bag(path: Path, storage: str = "sqlite3", compressed: bool = False,
              frames: int = FRAMES, bad_frame: int | None = None,
              size: tuple[int, int] = (48, 64)) -> Path:
    """A bag of a synthetic video on IMAGE, with a String on NOTES between frames.

    Bag timestamps are the header stamps plus 7 ms (so the two can be told apart).
    """
    config = SequenceConfig(height=size[0], width=size[1], min_things=2, max_things=3)
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        images = writer.add_connection(IMAGE, image_type, typestore=STORE)
        notes = writer.add_connection(NOTES, "std_msgs/msg/String", typestore=STORE)
        for k, frame in enumerate(generate_sequence(5, 0, frames, config)):
            msg = image_msg(frame.image, k, compressed)
            if k == bad_frame:
                msg.encoding = "no_such_encoding"
            t = 1_700_000_000 * 10**9 + k * 100_000_000 + 7_000_000
            writer.write(images, t, STORE.serialize_cdr(msg, image_type))
            note = STORE.types["std_msgs/msg/String"](data=f"note {k}")
            writer.write(notes, t + 1, STORE.serialize_cdr(note, "std_msgs/msg/String"))
    return path


def read_all(path: Path) -> list[tuple[str, int, bytes]]:
    with Reader(path) as reader:
        return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]


def decode_rgb(topic_type: str, raw: bytes):
    msg = STORE.deserialize_cdr(raw, topic_type)
    convert = compressed_to_rgb if topic_type.endswith("CompressedImage") else image_to_rgb
    return msg, np.array(convert(msg))  # writable, as the command gives the Predictor


def run_bag(checkpoint, src: Path, out: Path, *extra: str) -> int:
    return main(["bag", "--input", str(src), "--output", str(out), "--image-topic", IMAGE,
                 "--weights", str(checkpoint), "--device", "cpu", "--no-progress", *extra])


def assert_same_result(msg, expected: PanopticResult, image_header) -> None:
    assert msg.header == image_header and msg.ids.header == image_header
    assert msg.ids.encoding == "32SC1" and msg.ids.step == 4 * msg.ids.width
    ids = msg.ids.data.view(np.int32).reshape(msg.ids.height, msg.ids.width)
    np.testing.assert_array_equal(ids, expected.ids)
    assert msg.label_divisor == expected.label_divisor
    got = [(s.id, s.category_id, s.is_thing, s.instance_id, s.area, s.track_id,
            (s.bbox.x_offset, s.bbox.y_offset, s.bbox.width, s.bbox.height)) for s in msg.segments]
    want = [(s.id, s.category_id, s.is_thing, s.instance_id, s.area, s.track_id, s.bbox)
            for s in expected.segments]
    assert got == want
    for s, e in zip(msg.segments, expected.segments):
        assert s.score == pytest.approx(e.score, rel=1e-6)
        assert s.label == NAMES[e.category_id]
        assert s.track_age == pytest.approx(e.track_age, abs=1e-6)
        assert not s.has_3d and math.isnan(s.distance)


# -- the round trip ------------------------------------------------------------------------
@pytest.mark.parametrize("storage,compressed", [("sqlite3", False), ("mcap", True),
                                                ("mcap", False), ("sqlite3", True)])
def test_bag_outputs_equal_direct_inference(checkpoint, predictor, tmp_path, storage,
                                            compressed):
    src = write_bag(tmp_path / "in", storage, compressed)
    out = tmp_path / "out"
    assert run_bag(checkpoint, src, out) == 0
    assert (out / "metadata.yaml").is_file()
    assert list(out.glob("*.mcap" if storage == "mcap" else "*.db3"))  # the input's storage
    assert not list(tmp_path.glob(".out.partial-*"))

    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    inputs, outputs = read_all(src), read_all(out)
    # Every input message comes through unchanged, in order, at its timestamp.
    assert [m for m in outputs if m[0] in (IMAGE, NOTES)] == inputs
    topics = OutputTopics()
    categories = [m for m in outputs if m[0] == topics.categories]
    assert len(categories) == 1 and categories[0][1] == inputs[0][1]
    cats = STORE.deserialize_cdr(categories[0][2], type_name("CategoryArray"))
    assert [(c.id, c.name, c.is_thing, tuple(c.color)) for c in cats.categories] == \
        [(c.id, c.name, c.is_thing, tuple(c.color)) for c in LS]
    panoptic = [m for m in outputs if m[0] == topics.panoptic]
    counts = [m for m in outputs if m[0] == topics.instance_counts]
    images = [m for m in inputs if m[0] == IMAGE]
    assert len(panoptic) == len(counts) == len(images) == FRAMES
    for (_, t_img, raw_img), (_, t_pan, raw_pan), (_, t_cnt, raw_cnt) in zip(images, panoptic,
                                                                            counts):
        assert t_pan == t_img == t_cnt  # the image message's bag timestamp
        image, rgb = decode_rgb(image_type, raw_img)
        expected = predictor(rgb)
        msg = STORE.deserialize_cdr(raw_pan, type_name("PanopticSegmentation"))
        assert_same_result(msg, expected, image.header)
        cnt = STORE.deserialize_cdr(raw_cnt, type_name("InstanceCounts"))
        assert cnt.header == image.header
        want = expected.counts(LS)
        assert [(c.category_id, c.count) for c in cnt.counts] == \
            [(c.id, want.get(c.id, 0)) for c in LS.things]
    meta = (out / "metadata.yaml").read_text()
    assert "panoptic_ros.complete: 'true'" in meta or 'panoptic_ros.complete: "true"' in meta


def test_bag_track_and_coco_and_storage_option(tmp_path):
    """The bundled model (it finds the synthetic things) with --track: ids persist."""
    src = write_bag(tmp_path / "in", "sqlite3", compressed=False, size=(128, 160))
    out = tmp_path / "out"
    assert run_bag("demo", src, out, "--track", "--coco", str(tmp_path / "coco"),
                   "--storage", "mcap", "--prefix", "/seg/") == 0
    assert list(out.glob("*.mcap"))
    step = TrackedPredictor(Predictor(weights="demo", device="cpu"), Tracker())
    panoptic = [m for m in read_all(out) if m[0] == "/seg/panoptic"]
    images = [m for m in read_all(src) if m[0] == IMAGE]
    tracked = []
    results = []
    for (_, _, raw_img), (_, _, raw_pan) in zip(images, panoptic, strict=True):
        image, rgb = decode_rgb("sensor_msgs/msg/Image", raw_img)
        expected = step(rgb, bag_messages.stamp_seconds(image.header), image.header.frame_id)
        results.append(expected)
        assert_same_result(STORE.deserialize_cdr(raw_pan, type_name("PanopticSegmentation")),
                           expected, image.header)
        tracked.append({s.track_id for s in expected.segments if s.track_id})
    assert tracked[0] and tracked[0] & tracked[-1], "things keep their track over the video"
    data = json.loads((tmp_path / "coco" / "predictions.json").read_text())
    assert [a["image_id"] for a in data["annotations"]] == list(range(FRAMES))
    png = cv2.imread(str(tmp_path / "coco" / "predictions" / "000000000002.png"))[..., ::-1]
    rgb_ids, _ = results[2].to_coco()
    np.testing.assert_array_equal(png, rgb_ids)


def test_bag_skips_bad_image_messages(checkpoint, tmp_path, capsys):
    src = write_bag(tmp_path / "in", bad_frame=1)
    assert run_bag(checkpoint, src, tmp_path / "out") == 0
    assert "skipped 1 image message(s)" in capsys.readouterr().out
    outputs = read_all(tmp_path / "out")
    assert sum(m[0] == "/panoptic/panoptic" for m in outputs) == FRAMES - 1
    assert sum(m[0] == IMAGE for m in outputs) == FRAMES  # still copied


# -- errors: one line, exit code 2 ---------------------------------------------------------
def test_bag_missing_topic_lists_the_topics(checkpoint, tmp_path, capsys):
    src = write_bag(tmp_path / "in", frames=1)
    rc = main(["bag", "--input", str(src), "--output", str(tmp_path / "out"),
               "--image-topic", "/nope", "--weights", str(checkpoint), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "/nope is not in" in err and IMAGE in err and "sensor_msgs/msg/Image" in err
    assert not (tmp_path / "out").exists()
    rc = main(["bag", "--input", str(src), "--output", str(tmp_path / "out"),
               "--image-topic", NOTES, "--weights", str(checkpoint), "--device", "cpu"])
    assert rc == 2 and "std_msgs/msg/String" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["missing", "metadata", "storage", "truncated"])
def test_bag_unreadable_input(checkpoint, tmp_path, capsys, damage):
    src = tmp_path / "in"
    if damage != "missing":
        write_bag(src, "mcap" if damage == "truncated" else "sqlite3", frames=3)
        if damage == "metadata":
            (src / "metadata.yaml").write_text("rosbag2_bagfile_information: [not: a, bag")
        elif damage == "storage":
            next(src.glob("*.db3")).write_bytes(b"this is not an sqlite database" * 100)
        else:
            mcap = next(src.glob("*.mcap"))
            data = mcap.read_bytes()
            mcap.write_bytes(data[: len(data) // 2])
    rc = run_bag(checkpoint, src, tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "bag" in err, err
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_bag_existing_output_and_bad_options(checkpoint, tmp_path, capsys):
    src = write_bag(tmp_path / "in", frames=1)
    (tmp_path / "out").mkdir()
    assert run_bag(checkpoint, src, tmp_path / "out") == 2
    assert "exists" in capsys.readouterr().err
    assert run_bag(checkpoint, src, tmp_path / "o2", "--prefix", "no/slash") == 2
    assert "--prefix" in capsys.readouterr().err
    assert run_bag(checkpoint, src, tmp_path / "o3", "--prefix", "/notes/..") == 2
    capsys.readouterr()
    # Our topics must not collide with the input's.
    assert run_bag(checkpoint, src, tmp_path / "o4", "--prefix", "/camera") == 0
    assert run_bag(checkpoint, tmp_path / "o4", tmp_path / "o5", "--prefix", "/camera") == 2
    assert "already has topic" in capsys.readouterr().err


# -- depth and 3D --------------------------------------------------------------------------
DEPTH = "/camera/depth"
INFO = "/camera/camera_info"


def camera_info_msg(camera, k: int):
    types = STORE.types
    return types["sensor_msgs/msg/CameraInfo"](
        header=header(k), height=camera.height, width=camera.width,
        distortion_model=camera.distortion_model, d=np.asarray(camera.D, np.float64),
        k=camera.K.reshape(-1), r=camera.R.reshape(-1), p=camera.P.reshape(-1),
        binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                      do_rectify=False))


def depth_msg(depth_m: np.ndarray, k: int, encoding: str, offset_ns: int = 0):
    pixels = (depth_to_millimetres(depth_m) if encoding == "16UC1"
              else np.asarray(depth_m, np.float32))
    h, w = pixels.shape
    head = header(k)
    head.stamp.nanosec += offset_ns
    return STORE.types["sensor_msgs/msg/Image"](
        header=head, height=h, width=w, encoding=encoding, is_bigendian=0,
        step=pixels.dtype.itemsize * w,
        data=np.ascontiguousarray(pixels).view(np.uint8).reshape(-1))


def write_depth_bag(path: Path, storage: str, plan: list[dict], size=(48, 64)):
    """A bag of a synthetic video with depth and camera_info; returns the sequence's frames.

    ``plan[k]`` says for frame ``k``: ``depth`` (encoding, or None: no depth message),
    ``after`` (the depth message is recorded 3 ms after the image, so the command must look
    ahead), ``offset_ns`` (depth header stamp minus the image's), ``info`` ("before" or
    "after": a CameraInfo is recorded 1 ms before or after this frame's image).
    """
    config = SequenceConfig(height=size[0], width=size[1], min_things=2, max_things=3)
    frames = list(generate_sequence(5, 0, len(plan), config))
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    image_type, info_type = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        images = writer.add_connection(IMAGE, image_type, typestore=STORE)
        depths = writer.add_connection(DEPTH, image_type, typestore=STORE)
        infos = writer.add_connection(INFO, info_type, typestore=STORE)
        for k, (frame, step) in enumerate(zip(frames, plan)):
            t = 1_700_000_000 * 10**9 + k * 100_000_000 + 7_000_000
            writer.write(images, t, STORE.serialize_cdr(image_msg(frame.image, k, False),
                                                        image_type))
            if step.get("info"):
                writer.write(infos, t + (1_000_000 if step["info"] == "after" else -1_000_000),
                             STORE.serialize_cdr(camera_info_msg(frame.camera, k), info_type))
            if step.get("depth"):
                msg = depth_msg(frame.depth, k, step["depth"], step.get("offset_ns", 0))
                writer.write(depths, t + (3_000_000 if step.get("after") else -3_000_000),
                             STORE.serialize_cdr(msg, image_type))
    return frames


def expected_3d(predictor, frame, depth_encoding: str):
    """Direct inference plus segment_geometry with the depth as the bag holds it."""
    depth_m = (depth_from_millimetres(depth_to_millimetres(frame.depth))
               if depth_encoding == "16UC1" else np.asarray(frame.depth, np.float32))
    camera = intrinsics_from_calibration(frame.camera)
    return segment_geometry(predictor(frame.image.copy()), depth_m, camera), depth_m, camera


def assert_same_3d(msg, counts, expected: PanopticResult) -> None:
    assert [s.id for s in msg.segments] == [s.id for s in expected.segments]
    assert any(s.geometry is not None for s in expected.segments)
    for s, e in zip(msg.segments, expected.segments):
        g = e.geometry
        assert s.has_3d == (g is not None)
        if g is None:
            assert math.isnan(s.distance) and np.isnan(s.centroid).all()
            continue
        f32 = np.float32
        np.testing.assert_array_equal(s.centroid, f32(g.centroid))  # exact (float32 fields)
        np.testing.assert_array_equal(s.extent_min, f32(g.extent_min))
        np.testing.assert_array_equal(s.extent_max, f32(g.extent_max))
        assert s.distance == f32(g.distance)
        assert s.valid_depth_fraction == f32(g.valid_fraction)
    nearest = {c["category_id"]: c["nearest_distance"] for c in class_count_fields(expected, LS)}
    for c in counts.counts:
        np.testing.assert_array_equal(c.nearest_distance, np.float32(nearest[c.category_id]))


def outputs_by_topic(path: Path) -> dict[str, list[tuple[int, bytes]]]:
    out: dict[str, list[tuple[int, bytes]]] = {}
    for topic, t, raw in read_all(path):
        out.setdefault(topic, []).append((t, raw))
    return out


def test_bag_depth_pairs_looks_ahead_and_counts_what_has_no_3d(checkpoint, predictor, tmp_path,
                                                               capsys):
    """sqlite3: exact and slop pairs, depth after the image, no camera_info yet, no depth,
    a refused encoding; 3D equals segment_geometry on direct inference, 2D always written."""
    plan = [{"depth": "16UC1", "info": "after"},                  # no camera_info yet: refused
            {"depth": "16UC1", "after": True},                    # look-ahead, exact stamp
            {},                                                   # no depth: 2D only
            {"depth": "32FC1", "offset_ns": 2_000_000},           # within --depth-slop
            {"depth": "8UC1"},                                    # refused encoding
            {"depth": "16UC1", "offset_ns": 9_000_000, "after": True}]  # beyond the slop
    frames = write_depth_bag(tmp_path / "in", "sqlite3", plan)
    assert run_bag(checkpoint, tmp_path / "in", tmp_path / "out", "--depth-topic", DEPTH,
                   "--camera-info-topic", INFO, "--depth-slop", "0.005") == 0
    report = capsys.readouterr().out
    assert "3D: 2 frame(s) with 3D, 2 without a depth image within 0.005 s, 2 with depth " \
        "refused" in report, report
    assert "no camera_info" in report and "8UC1" in report
    out = outputs_by_topic(tmp_path / "out")
    assert "/panoptic/points" not in out  # --points is off by default
    assert len(out[DEPTH]) == 5 and len(out[INFO]) == 1  # inputs copied
    panoptic, counts = out["/panoptic/panoptic"], out["/panoptic/instance_counts"]
    assert len(panoptic) == len(counts) == len(plan)
    for k, frame in enumerate(frames):
        msg = STORE.deserialize_cdr(panoptic[k][1], type_name("PanopticSegmentation"))
        cnt = STORE.deserialize_cdr(counts[k][1], type_name("InstanceCounts"))
        if k in (1, 3):
            expected, _, _ = expected_3d(predictor, frame, plan[k]["depth"])
            assert_same_3d(msg, cnt, expected)
        else:
            assert_same_result(msg, predictor(frame.image.copy()), header(k))  # 2D, no 3D
            assert all(math.isnan(c.nearest_distance) for c in cnt.counts)


def test_bag_depth_points_mcap(checkpoint, predictor, tmp_path):
    """MCAP with --points: the cloud read back field by field equals labelled_points."""
    plan = [{"depth": "16UC1", "info": "before"}, {"depth": "32FC1", "after": True}]
    frames = write_depth_bag(tmp_path / "in", "mcap", plan)
    assert run_bag(checkpoint, tmp_path / "in", tmp_path / "out", "--depth-topic", DEPTH,
                   "--camera-info-topic", INFO, "--points", "--cloud-stride", "3") == 0
    out = outputs_by_topic(tmp_path / "out")
    clouds, images = out["/panoptic/points"], out[IMAGE]
    assert [t for t, _ in clouds] == [t for t, _ in images]  # the image's bag timestamp
    for k, frame in enumerate(frames):
        msg = STORE.deserialize_cdr(out["/panoptic/panoptic"][k][1],
                                    type_name("PanopticSegmentation"))
        expected, depth_m, camera = expected_3d(predictor, frame, plan[k]["depth"])
        assert_same_3d(msg, STORE.deserialize_cdr(out["/panoptic/instance_counts"][k][1],
                                                  type_name("InstanceCounts")), expected)
        cloud = STORE.deserialize_cdr(clouds[k][1], "sensor_msgs/msg/PointCloud2")
        assert cloud.header == header(k) and cloud.height == 1 and cloud.is_dense
        assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == \
            [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1), ("id", 16, 6, 1)]
        assert cloud.point_step == 20 and cloud.row_step == 20 * cloud.width
        assert not cloud.is_bigendian
        want = labelled_points(expected, depth_m, frame.image, camera, stride=3)
        assert cloud.width == len(want) > 0
        got = np.frombuffer(bytes(cloud.data), POINT_DTYPE)
        for name in ("x", "y", "z", "rgb", "id"):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        rows, cols = np.nonzero(np.isfinite(depth_m[::3, ::3]))  # every valid pixel, in order
        np.testing.assert_array_equal(got["id"], expected.ids[::3, ::3][rows, cols])
        np.testing.assert_array_equal(got["z"], depth_m[::3, ::3][rows, cols])


def test_depth_look_ahead_stops_at_the_partner_and_is_bounded(tmp_path):
    """Depth is read only until the partner is certain; at most DEPTH_WINDOW are held."""
    with Writer(tmp_path / "in", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        depths = writer.add_connection(DEPTH, "sensor_msgs/msg/Image", typestore=STORE)
        for k in range(40):
            writer.write(depths, k + 1, STORE.serialize_cdr(
                depth_msg(np.full((2, 3), 1.5), k, "16UC1"), "sensor_msgs/msg/Image"))
        writer.add_connection(INFO, "sensor_msgs/msg/CameraInfo", typestore=STORE)
    inputs = DepthInputs(tmp_path / "in", DepthOptions(DEPTH, INFO), STORE)
    try:
        assert stamp_ns(inputs.partner(stamp_ns(header(3))).header) == stamp_ns(header(3))
        assert inputs.held == 0  # 0..3 read; 0..2 can pair with no later image
        assert stamp_ns(inputs.partner(stamp_ns(header(39))).header) == stamp_ns(header(39))
        assert inputs.summary.dropped == 36 - DEPTH_WINDOW  # 4..39 read, the window held 16
        assert inputs.partner(stamp_ns(header(40))) is None  # the topic has ended
        assert inputs.summary.unpaired == 1
    finally:
        inputs.close()


def test_bag_depth_options_are_checked(checkpoint, tmp_path, capsys):
    write_depth_bag(tmp_path / "in", "sqlite3", [{"depth": "16UC1", "info": "before"}])
    cases = [(["--depth-topic", DEPTH], "go together"),
             (["--points"], "need --depth-topic"),
             (["--depth-topic", "/nope", "--camera-info-topic", INFO], "/nope is not in"),
             (["--depth-topic", DEPTH, "--camera-info-topic", IMAGE], "sensor_msgs/msg/Camera"),
             (["--depth-topic", INFO, "--camera-info-topic", INFO], "sensor_msgs/msg/Image"),
             (["--depth-topic", DEPTH, "--camera-info-topic", INFO, "--depth-slop", "-1"],
              "--depth-slop"),
             (["--depth-topic", DEPTH, "--camera-info-topic", INFO, "--points",
               "--cloud-stride", "0"], "--cloud-stride")]
    for k, (extra, message) in enumerate(cases):
        assert run_bag(checkpoint, tmp_path / "in", tmp_path / f"out{k}", *extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)
        assert not (tmp_path / f"out{k}").exists()


# -- interruption: a valid partial bag or none ---------------------------------------------
class Interrupt:
    """A segmenter that raises ``error`` at frame ``at`` (after ``at`` good frames)."""

    def __init__(self, predictor, at: int, error: BaseException) -> None:
        self.predictor, self.at, self.error, self.calls = predictor, at, error, 0

    def __call__(self, rgb, stamp, frame_id):
        if self.calls == self.at:
            raise self.error
        self.calls += 1
        return self.predictor(rgb)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("CUDA out of memory")])
def test_interrupted_run_leaves_no_output(predictor, tmp_path, error):
    src = write_bag(tmp_path / "in", "mcap")
    with pytest.raises(type(error)):
        process_bag(src, tmp_path / "out", IMAGE, Interrupt(predictor, 2, error), LS,
                    progress=False)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_interrupted_run_keeps_a_valid_partial_bag_when_asked(predictor, tmp_path, storage):
    src = write_bag(tmp_path / "in", storage)
    with pytest.raises(KeyboardInterrupt):
        process_bag(src, tmp_path / "out", IMAGE, Interrupt(predictor, 2, KeyboardInterrupt()),
                    LS, progress=False, keep_partial=True)
    outputs = read_all(tmp_path / "out")  # opens: metadata and storage are consistent
    assert sum(m[0] == "/panoptic/panoptic" for m in outputs) == 2
    assert sum(m[0] == IMAGE for m in outputs) == 3  # the third image was copied, not segmented
    with Reader(tmp_path / "out") as reader:
        assert reader.message_count == len(outputs)
    assert "panoptic_ros.complete: 'false'" in (tmp_path / "out" / "metadata.yaml").read_text()


# -- messages: same bytes as the node's, decodable by rclpy --------------------------------
def sample_result() -> PanopticResult:
    ids = np.zeros((6, 9), np.int32)
    ids[:3] = 11 * 1000
    ids[3:, :4] = 2 * 1000 + 2
    ids[4:, 6:] = 4 * 1000 + 1
    geometry = SegmentGeometry(valid_fraction=0.5, centroid=(0.1, -0.2, 3.0), distance=2.5,
                               extent_min=(-1.0, -1.0, 2.0), extent_max=(1.0, 0.5, 4.0))
    result = PanopticResult.from_ids(ids, LS)
    segments = []
    for s in result.segments:
        if s.id == 2002:
            s = Segment(**{**s.__dict__, "track_id": 5, "track_age": 1.25, "geometry": geometry,
                           "score": 0.75})
        segments.append(s)
    result.segments = segments
    return result


@pytest.mark.ros
def test_rosbags_messages_serialise_like_the_nodes():
    """Both builders, one result: the same CDR encoding, field for field, of every type."""
    pytest.importorskip("rclpy")
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header

    from panoptic_ros.ros import messages as ros_messages

    result = sample_result()
    ros_header = Header(frame_id="cam")
    ros_header.stamp.sec, ros_header.stamp.nanosec = 12, 345
    bag_header = STORE.types["std_msgs/msg/Header"](
        stamp=STORE.types["builtin_interfaces/msg/Time"](sec=12, nanosec=345), frame_id="cam")
    pairs = [
        (ros_messages.panoptic_msg(result, ros_header, LS),
         bag_messages.panoptic_msg(STORE, result, bag_header, LS), "PanopticSegmentation"),
        (ros_messages.instance_counts_msg(result, ros_header, LS),
         bag_messages.instance_counts_msg(STORE, result, bag_header, LS), "InstanceCounts"),
        (ros_messages.categories_msg(LS, 1000, ros_header),
         bag_messages.categories_msg(STORE, LS, 1000, bag_header), "CategoryArray"),
    ]
    for ros_msg, bag_msg, name in pairs:
        # rclpy leaves alignment padding uninitialised: compare after a rosbags round trip,
        # which re-encodes every field of rclpy's bytes with zero padding.
        from_ros = STORE.deserialize_cdr(bytes(serialize_message(ros_msg)), type_name(name))
        assert bytes(STORE.serialize_cdr(from_ros, type_name(name))) == bytes(
            STORE.serialize_cdr(bag_msg, type_name(name))), name


@pytest.mark.ros
def test_output_bag_deserialises_with_rclpy(checkpoint, predictor, tmp_path):
    pytest.importorskip("rclpy")
    from panoptic_ros.msg import CategoryArray, InstanceCounts, PanopticSegmentation
    from rclpy.serialization import deserialize_message

    from panoptic_ros.ros.messages import label_set_from_msg, result_from_msg

    src = write_bag(tmp_path / "in", "mcap", compressed=True, frames=2)
    assert run_bag(checkpoint, src, tmp_path / "out") == 0
    outputs = read_all(tmp_path / "out")
    images = [m for m in outputs if m[0] == IMAGE]
    panoptic = [m for m in outputs if m[0] == "/panoptic/panoptic"]
    for (_, _, raw_img), (_, _, raw) in zip(images, panoptic, strict=True):
        image, rgb = decode_rgb("sensor_msgs/msg/CompressedImage", raw_img)
        msg = deserialize_message(raw, PanopticSegmentation)
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == \
            (image.header.stamp.sec, image.header.stamp.nanosec, image.header.frame_id)
        expected, back = predictor(rgb), result_from_msg(msg)
        np.testing.assert_array_equal(back.ids, expected.ids)
        assert [(s.id, s.area, s.bbox) for s in back.segments] == \
            [(s.id, s.area, s.bbox) for s in expected.segments]
    counts = next(m for m in outputs if m[0] == "/panoptic/instance_counts")
    assert len(deserialize_message(counts[2], InstanceCounts).counts) == len(LS.things)
    cats = next(m for m in outputs if m[0] == "/panoptic/categories")
    assert label_set_from_msg(deserialize_message(cats[2], CategoryArray)).ids.tolist() == \
        LS.ids.tolist()


def test_type_hashes_match_rosidl():
    """rosbags' RIHS01 hashes of our types equal those rosidl generated at install time."""
    share = Path(sys.prefix) / "share" / "panoptic_ros" / "msg"
    if not (share / "PanopticSegmentation.json").is_file():
        pytest.skip("package not installed with its rosidl type descriptions")
    for name in MESSAGES:
        data = json.loads((share / f"{name}.json").read_text())
        expected = {h["type_name"]: h["hash_string"] for h in data["type_hashes"]}
        assert STORE.hash_rihs01(type_name(name)) == expected[type_name(name)]


# -- finding msg/ -------------------------------------------------------------------------
def test_message_dir_in_checkout_and_install_layouts(tmp_path):
    # From the source checkout (PYTHONPATH=.) the checkout's msg/; from the installed package
    # (make test) its share/ folder; either way the very files of the checkout.
    found = find_message_dir()
    assert found in (REPO / "msg", Path(sys.prefix) / "share" / "panoptic_ros" / "msg"), found
    for name in MESSAGES:
        assert (found / f"{name}.msg").read_text() == (REPO / "msg" / f"{name}.msg").read_text()
    install = tmp_path / "prefix"
    package = install / "lib" / "python3.11" / "site-packages" / "panoptic_ros"
    package.mkdir(parents=True)
    share = install / "share" / "panoptic_ros" / "msg"
    share.mkdir(parents=True)
    with pytest.raises(UserError, match="cannot find"):
        find_message_dir(package, prefixes=[])
    for name in MESSAGES:
        (share / f"{name}.msg").write_text((REPO / "msg" / f"{name}.msg").read_text())
    assert find_message_dir(package, prefixes=[]) == share
    elsewhere = tmp_path / "elsewhere" / "panoptic_ros"
    elsewhere.mkdir(parents=True)
    assert find_message_dir(elsewhere, prefixes=["", str(install)]) == share


def test_bag_runs_without_ros(checkpoint, tmp_path):
    """No rclpy, no ROS message packages: the command still works end to end."""
    src = write_bag(tmp_path / "in", "mcap", frames=2)
    code = (
        "import sys\n"
        "for name in ('rclpy', 'sensor_msgs', 'std_msgs', 'builtin_interfaces', "
        "'panoptic_ros.msg'):\n"
        "    sys.modules[name] = None\n"
        "from panoptic_ros.cli import main\n"
        f"rc = main(['bag', '--input', {str(src)!r}, '--output', {str(tmp_path / 'out')!r}, "
        f"'--image-topic', {IMAGE!r}, '--weights', {str(checkpoint)!r}, '--device', 'cpu', "
        "'--no-progress'])\n"
        "assert not any(m == 'rclpy' or m.startswith(('rclpy.', 'sensor_msgs.')) "
        "for m in sys.modules if sys.modules[m] is not None)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sum(m[0] == "/panoptic/panoptic" for m in read_all(tmp_path / "out")) == 2


# -- properties of the converters ----------------------------------------------------------
@st.composite
def id_maps(draw):
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    stuff = [c.id for c in LS.stuff]
    things = [c.id for c in LS.things]
    palette = [0] + [c * 1000 for c in stuff] + [c * 1000 + i for c in things for i in (1, 2)]
    cells = draw(st.lists(st.sampled_from(palette), min_size=h * w, max_size=h * w))
    return np.array(cells, np.int32).reshape(h, w)


@settings(max_examples=60, deadline=None)
@given(ids=id_maps(), sec=st.integers(0, 2**31 - 1), nanosec=st.integers(0, 999_999_999),
       frame_id=st.text(max_size=12))
def test_panoptic_msg_round_trips_through_cdr(ids, sec, nanosec, frame_id):
    result = PanopticResult.from_ids(ids, LS)
    head = STORE.types["std_msgs/msg/Header"](
        stamp=STORE.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
        frame_id=frame_id)
    raw = STORE.serialize_cdr(bag_messages.panoptic_msg(STORE, result, head, LS),
                              type_name("PanopticSegmentation"))
    msg = STORE.deserialize_cdr(raw, type_name("PanopticSegmentation"))
    assert_same_result(msg, result, head)
    assert bag_messages.stamp_seconds(head) == pytest.approx(sec + nanosec * 1e-9)


@given(st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), min_size=1,
                max_size=4), st.booleans())
def test_check_prefix_accepts_namespaces_and_strips_the_slash(names, trailing):
    prefix = "/" + "/".join(names) + ("/" if trailing else "")
    assert check_prefix(prefix) == "/" + "/".join(names)
    assert check_prefix(check_prefix(prefix)) == check_prefix(prefix)


@given(st.text(alphabet="/_aZ9. -é", max_size=12))
def test_check_prefix_returns_a_namespace_or_refuses(text):
    try:
        prefix = check_prefix(text)
    except UserError as err:
        assert "--prefix" in str(err)
        return
    assert prefix == text.rstrip("/") and prefix.startswith("/")
    for token in prefix.split("/")[1:]:
        assert token and token[0] in "_aZ" and set(token) <= set("_aZ9")


@pytest.mark.parametrize("bad", ["", "/", "panoptic", "/a//b", "/9a", "/a b", "/a/..", "/é"])
def test_check_prefix_refuses(bad):
    with pytest.raises(UserError):
        check_prefix(bad)
