"""PanopticResult <-> messages: content, headers, sizes, serialisation and decoding round trips."""

from __future__ import annotations

import numpy as np
import pytest
from panoptic_ros.msg import CategoryArray, InstanceCounts, PanopticSegmentation
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header

from panoptic_ros.categories import coco_panoptic, synthetic
from panoptic_ros.result import PanopticResult
from panoptic_ros.ros.conversions import image_to_array
from panoptic_ros.ros.diagnostics import (
    ERROR,
    OK,
    WARN,
    FrameStats,
    assess,
    diagnostic_status,
    diagnostic_values,
)
from panoptic_ros.ros.messages import (
    categories_msg,
    frame_key,
    instance_counts_msg,
    instances_msg,
    label_set_from_msg,
    panoptic_msg,
    result_from_msg,
    rgb_msg,
    semantic_encoding,
    semantic_msg,
)

LS = synthetic()


def scene() -> np.ndarray:
    ids = np.full((30, 41), 11000, np.int32)  # sky
    ids[15:] = 12000  # ground
    ids[3:9, 4:10] = 1001  # person 1
    ids[3:9, 12:20] = 1002  # person 2
    ids[20:28, 25:39] = 2001  # car 1
    ids[:, 0] = 0  # void
    return ids


def header() -> Header:
    h = Header(frame_id="camera_optical")
    h.stamp.sec, h.stamp.nanosec = 1700000000, 123456789
    return h


def round_trip(msg):
    return deserialize_message(serialize_message(msg), type(msg))


def test_panoptic_msg_content_agrees_with_its_label_image():
    ids = scene()
    result = PanopticResult.from_ids(ids, LS, scores={1001: 0.9, 1002: 0.8, 2001: 0.7})
    msg = round_trip(panoptic_msg(result, header(), LS))
    assert isinstance(msg, PanopticSegmentation)
    assert msg.header == header() and msg.ids.header == header()
    assert (msg.ids.height, msg.ids.width, msg.ids.encoding) == (30, 41, "32SC1")
    assert msg.ids.step == 41 * 4 and msg.label_divisor == 1000
    received = image_to_array(msg.ids)
    assert received.dtype == np.int32
    np.testing.assert_array_equal(received, ids)
    # Segments recomputed from the received image agree with the message's segments.
    again = PanopticResult.from_ids(received, LS, msg.label_divisor)
    assert [s.id for s in msg.segments] == [s.id for s in again.segments]
    for info, seg in zip(msg.segments, again.segments, strict=True):
        assert info.area == seg.area
        bbox = (info.bbox.x_offset, info.bbox.y_offset, info.bbox.width, info.bbox.height)
        assert bbox == seg.bbox
        assert info.category_id == info.id // 1000 and info.instance_id == info.id % 1000
        assert info.is_thing == LS.is_thing(info.category_id)
        assert info.label == LS.by_id(info.category_id).name
    scores = {s.id: s.score for s in msg.segments}
    assert scores[1001] == pytest.approx(0.9) and scores[11000] == pytest.approx(1.0)


def test_instance_counts_cover_every_thing_with_zeros():
    result = PanopticResult.from_ids(scene(), LS)
    msg = round_trip(instance_counts_msg(result, header(), LS))
    assert isinstance(msg, InstanceCounts) and msg.header == header()
    counts = {c.category_id: (c.label, c.count) for c in msg.counts}
    assert counts == {1: ("person", 2), 2: ("car", 1), 3: ("box", 0), 4: ("ball", 0)}


def test_categories_msg_lists_the_label_set():
    msg = round_trip(categories_msg(LS, 1000))
    assert isinstance(msg, CategoryArray) and msg.label_divisor == 1000
    assert [c.id for c in msg.categories] == [c.id for c in LS]
    for c, ref in zip(msg.categories, LS, strict=True):
        assert (c.name, c.is_thing, tuple(int(v) for v in c.color)) == (
            ref.name, ref.is_thing, ref.color)


def test_semantic_and_instance_images():
    ids = scene()
    result = PanopticResult.from_ids(ids, LS)
    sem = round_trip(semantic_msg(result, header(), semantic_encoding(LS)))
    assert sem.encoding == "mono8" and sem.header == header()
    np.testing.assert_array_equal(image_to_array(sem), ids // 1000)
    inst = round_trip(instances_msg(result, header()))
    assert inst.encoding == "mono16"
    np.testing.assert_array_equal(image_to_array(inst), ids % 1000)
    assert semantic_encoding(coco_panoptic()) == "mono8"  # COCO ids end at 200
    big = PanopticResult.from_ids((ids // 1000) * 100000 + ids % 1000, LS, 100000)
    np.testing.assert_array_equal(
        image_to_array(semantic_msg(big, header(), "mono16")), ids // 1000)
    np.testing.assert_array_equal(image_to_array(instances_msg(big, header())), ids % 1000)


def test_rgb_msg():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = round_trip(rgb_msg(rgb, header()))
    assert (msg.encoding, msg.step, msg.header) == ("rgb8", 21, header())
    np.testing.assert_array_equal(image_to_array(msg), rgb)


def test_keep_categories_voids_the_rest():
    result = PanopticResult.from_ids(scene(), LS)
    kept = result.keep_categories([1, 11])  # persons and sky
    assert [s.id for s in kept.segments] == [1001, 1002, 11000]
    cats = kept.ids // 1000
    assert set(np.unique(cats)) == {0, 1, 11}
    np.testing.assert_array_equal(kept.ids[scene() // 1000 == 1], scene()[scene() // 1000 == 1])
    assert (kept.ids[scene() // 1000 == 12] == 0).all()
    counts = round_trip(instance_counts_msg(kept, header(), LS))
    assert {c.category_id: c.count for c in counts.counts} == {1: 2, 2: 0, 3: 0, 4: 0}
    assert result.segments[0].id == 1001 and len(result.segments) == 5  # input untouched


class Clock:
    """A hand-advanced monotonic clock for FrameStats."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_frame_stats_windows_and_totals():
    clock = Clock()
    stats = FrameStats(window_s=2.0, clock=clock)
    for _ in range(10):  # 10 Hz input for 1 s, every other frame processed
        clock.t += 0.1
        stats.received()
    stats.dropped(5)
    for ms in (100, 300):
        stats.processed(inference_s=ms / 1e3, latency_s=ms / 1e3 + 0.05)
    stats.overlay_computed()
    snap = stats.snapshot()
    assert snap.input_rate == pytest.approx(10.0)
    assert snap.processed_rate == pytest.approx(2.0)
    assert (snap.received_total, snap.processed_total, snap.dropped_total) == (10, 2, 5)
    assert snap.inference_ms_mean == pytest.approx(200.0)
    assert snap.latency_ms_max == pytest.approx(350.0)
    assert snap.overlay_total == 1
    clock.t += 5.0  # everything leaves the window, totals stay
    later = stats.snapshot()
    assert (later.received_window, later.processed_window, later.dropped_window) == (0, 0, 0)
    assert later.input_rate == 0.0 and later.received_total == 10


def test_assess_levels():
    clock = Clock()
    stats = FrameStats(window_s=5.0, clock=clock)
    assert assess(stats.snapshot()) == (OK, "waiting for images")
    for _ in range(30):  # 30 Hz input, 3 processed: not keeping up
        clock.t += 1 / 30
        stats.received()
    stats.dropped(27)
    for _ in range(3):
        stats.processed(0.3, 0.35)
    level, message = assess(stats.snapshot())
    assert level == WARN and "not keeping up" in message
    assert assess(stats.snapshot(), max_rate=3.0)[0] == OK  # the cap explains the drops
    stats.bad_input("unsupported image encoding 'hsv8'")
    level, message = assess(stats.snapshot(), max_rate=3.0)
    assert level == WARN and "hsv8" in message
    bad_only = FrameStats(window_s=5.0, clock=clock)
    bad_only.received()
    bad_only.bad_input("image has zero size (0x0)")
    assert assess(bad_only.snapshot())[0] == ERROR
    bad_only.error("RuntimeError: CUDA out of memory")
    assert assess(bad_only.snapshot()) == (
        ERROR, "processing failed 1x in 5 s: RuntimeError: CUDA out of memory")


def test_diagnostic_status_message():
    clock = Clock()
    stats = FrameStats(clock=clock)
    stats.received()
    stats.processed(0.02, 0.03)
    status = round_trip(diagnostic_status(
        stats.snapshot(), name="/panoptic_segmentation: panoptic segmentation",
        hardware_id="cpu", extra={"model": "efficientps b0", "device": "cpu"}))
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == OK and status.hardware_id == "cpu"
    assert values["frames_processed"] == "1" and values["inference_ms_mean"] == "20.0"
    assert values["model"] == "efficientps b0" and values["frames_dropped"] == "0"
    back = diagnostic_values(status)
    assert back["frames_processed"] == 1 and back["inference_ms_mean"] == 20.0
    assert back["model"] == "efficientps b0" and back["level"] == 0
    assert back["message"] == status.message


def test_decoders_invert_the_encoders():
    result = PanopticResult.from_ids(scene(), LS, scores={1001: 0.5, 1002: 0.25, 2001: 0.75})
    msg = round_trip(panoptic_msg(result, header(), LS))
    back = result_from_msg(msg)
    assert back.ids.dtype == np.int32 and back.ids.flags.writeable
    np.testing.assert_array_equal(back.ids, result.ids)
    assert back.segments == result.segments and back.label_divisor == 1000
    assert frame_key(msg.header) == (1700000000, 123456789, "camera_optical")
    labels = label_set_from_msg(round_trip(categories_msg(LS, 1000)))
    assert [(c.id, c.name, c.is_thing, c.color) for c in labels] == \
        [(c.id, c.name, c.is_thing, c.color) for c in LS]
