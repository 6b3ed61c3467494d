"""PanopticResult -> messages: content, headers, sizes, and a serialisation round trip."""

from __future__ import annotations

import numpy as np
import pytest
from panoptic_ros.msg import CategoryArray, InstanceCounts, PanopticSegmentation
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header

from panoptic_ros.categories import coco_panoptic, synthetic
from panoptic_ros.result import PanopticResult
from panoptic_ros.ros.conversions import image_to_array
from panoptic_ros.ros.messages import (
    categories_msg,
    filter_categories,
    instance_counts_msg,
    instances_msg,
    panoptic_msg,
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


def test_filter_categories_voids_the_rest():
    result = PanopticResult.from_ids(scene(), LS)
    kept = filter_categories(result, [1, 11])  # persons and sky
    assert [s.id for s in kept.segments] == [1001, 1002, 11000]
    cats = kept.ids // 1000
    assert set(np.unique(cats)) == {0, 1, 11}
    np.testing.assert_array_equal(kept.ids[scene() // 1000 == 1], scene()[scene() // 1000 == 1])
    assert (kept.ids[scene() // 1000 == 12] == 0).all()
    counts = round_trip(instance_counts_msg(kept, header(), LS))
    assert {c.category_id: c.count for c in counts.counts} == {1: 2, 2: 0, 3: 0, 4: 0}
    assert result.segments[0].id == 1001 and len(result.segments) == 5  # input untouched
