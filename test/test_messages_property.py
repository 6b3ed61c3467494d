"""Property tests: messages built from random valid PanopticResults agree with their id maps.

Random label sets (built-in and custom), label divisors, image sizes down to 1x1 and segment
sets; every expectation is recomputed here with plain numpy from the id map and the encoding
``pixel = category_id * label_divisor + instance_id`` (0 = void), independently of
:mod:`panoptic_ros.result`. Messages go through a serialisation round trip first.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header

from panoptic_ros.categories import (
    Category,
    LabelSet,
    cityscapes,
    coco_panoptic,
    palette_color,
    synthetic,
)
from panoptic_ros.result import PanopticResult
from panoptic_ros.ros.messages import (
    categories_msg,
    instance_counts_msg,
    instances_msg,
    panoptic_msg,
    semantic_encoding,
    semantic_msg,
)

INT32_MAX = int(np.iinfo(np.int32).max)
SETTINGS = settings(
    deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
NAME_CHARS = "abcdefghijklmnopqrstuvwxyz ABC-_/.0123456789éü日本"


# -- strategies ---------------------------------------------------------------------------
@st.composite
def label_sets(draw) -> LabelSet:
    """A built-in table or a custom one with ids anywhere in 1..65535, names with Unicode."""
    kind = draw(st.sampled_from(["synthetic", "cityscapes", "coco", "custom"]))
    if kind == "synthetic":
        return synthetic()
    if kind == "cityscapes":
        return cityscapes()
    if kind == "coco":
        return coco_panoptic()
    ids = draw(st.lists(st.integers(1, 65535), min_size=1, max_size=10, unique=True))
    cats = [
        Category(
            i,
            draw(st.text(NAME_CHARS, min_size=1, max_size=12)),
            draw(st.booleans()),
            palette_color(i),
        )
        for i in ids
    ]
    return LabelSet("custom", cats)


@st.composite
def divisors(draw, label_set: LabelSet) -> int:
    """A label divisor whose ids still fit int32 for this label set."""
    limit = INT32_MAX // (int(label_set.ids.max()) + 1)
    common = [d for d in (2, 3, 10, 256, 1000, 65535, 65536, 65537, 1 << 20) if d <= limit]
    return draw(st.one_of(st.sampled_from(common), st.integers(2, limit)))


@st.composite
def headers(draw) -> Header:
    h = Header(frame_id=draw(st.text(NAME_CHARS, max_size=20)))
    h.stamp.sec = draw(st.integers(0, INT32_MAX))
    h.stamp.nanosec = draw(st.integers(0, 10**9 - 1))
    return h


@st.composite
def cases(draw):
    """``(result, label_set, header)``: a random valid result built from a random id map."""
    label_set = draw(label_sets())
    divisor = draw(divisors(label_set))
    segment_ids: list[int] = []
    for _ in range(draw(st.integers(0, 8))):
        cat = draw(st.sampled_from(label_set.categories))
        inst = draw(st.integers(1, divisor - 1)) if cat.is_thing else 0
        value = cat.id * divisor + inst
        if value not in segment_ids:
            segment_ids.append(value)
    values = np.array([0, *segment_ids], dtype=np.int64)  # index 0 = void
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    index = np.full((h, w), draw(st.integers(0, len(segment_ids))), dtype=np.int64)
    for _ in range(draw(st.integers(0, 6))):  # rectangles painted over each other
        k = draw(st.integers(0, len(segment_ids)))
        y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        y1, x1 = draw(st.integers(y0 + 1, h)), draw(st.integers(x0 + 1, w))
        index[y0:y1, x0:x1] = k
    for _ in range(draw(st.integers(0, 4))):  # stray single pixels: boxes spanning gaps
        k = draw(st.integers(0, len(segment_ids)))
        index[draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = k
    ids = values[index].astype(np.int32)
    scores = {v: draw(st.floats(0.0, 1.0)) for v in segment_ids}
    things = [v for v in segment_ids if label_set.is_thing(v // divisor)]
    crowd = [v for v in things if draw(st.booleans())] if draw(st.booleans()) else []
    result = PanopticResult.from_ids(ids, label_set, divisor, scores=scores, crowd=crowd)
    return result, label_set, draw(headers())


# -- independent decoding and expectations -----------------------------------------------
def round_trip(msg):
    return deserialize_message(serialize_message(msg), type(msg))


def decode_image(img, dtype) -> np.ndarray:
    """Pixels of a one-channel ``sensor_msgs/Image`` from its raw bytes, honouring step."""
    dt = np.dtype(dtype).newbyteorder(">" if img.is_bigendian else "<")
    assert img.step >= img.width * dt.itemsize
    raw = np.frombuffer(bytes(img.data), dtype=np.uint8)
    assert raw.size == img.step * img.height
    rows = raw.reshape(img.height, img.step)[:, : img.width * dt.itemsize]
    return np.ascontiguousarray(rows).view(dt).reshape(img.height, img.width)


def expected_segments(ids: np.ndarray) -> dict[int, tuple[int, tuple[int, int, int, int]]]:
    """``{id: (area, (x, y, w, h))}`` of every non-void id, the tight box of its pixels."""
    out = {}
    for value in np.unique(ids).tolist():
        if value == 0:
            continue
        ys, xs = np.nonzero(ids == value)
        x0, y0 = int(xs.min()), int(ys.min())
        out[value] = (int(ys.size), (x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1))
    return out


def check_panoptic(msg, result: PanopticResult, label_set: LabelSet, header: Header) -> None:
    divisor = result.label_divisor
    assert msg.header == header and msg.ids.header == header
    assert msg.label_divisor == divisor
    assert (msg.ids.encoding, msg.ids.height, msg.ids.width) == ("32SC1", *result.ids.shape)
    np.testing.assert_array_equal(decode_image(msg.ids, np.int32), result.ids)
    expected = expected_segments(result.ids)
    assert [s.id for s in msg.segments] == sorted(expected)
    scores = {s.id: s.score for s in result.segments}
    for info in msg.segments:
        cat = label_set.by_id(info.id // divisor)
        assert info.category_id == cat.id
        assert info.instance_id == info.id % divisor
        assert info.is_thing == cat.is_thing
        assert (info.instance_id >= 1) if cat.is_thing else (info.instance_id == 0)
        assert info.label == cat.name
        area, box = expected[info.id]
        assert info.area == area
        b = info.bbox
        assert (b.x_offset, b.y_offset, b.width, b.height) == box
        assert b.do_rectify is False
        assert info.score == np.float32(scores[info.id])


# -- properties ---------------------------------------------------------------------------
@SETTINGS
@given(cases())
def test_panoptic_msg_agrees_with_the_id_map(case):
    result, label_set, header = case
    msg = round_trip(panoptic_msg(result, header, label_set))
    check_panoptic(msg, result, label_set, header)


@SETTINGS
@given(cases())
def test_instance_counts_count_distinct_thing_instances(case):
    result, label_set, header = case
    msg = round_trip(instance_counts_msg(result, header, label_set))
    assert msg.header == header
    divisor = result.label_divisor
    crowd = {s.id for s in result.segments if s.iscrowd}
    present = [v for v in np.unique(result.ids).tolist() if v and v not in crowd]
    expected = {
        c.id: (c.name, len({v % divisor for v in present if v // divisor == c.id}))
        for c in label_set.categories
        if c.is_thing
    }
    got = {c.category_id: (c.label, c.count) for c in msg.counts}
    assert len(msg.counts) == len(got)  # one entry per category
    assert got == expected


@SETTINGS
@given(cases())
def test_semantic_and_instance_images_decode_the_ids(case):
    result, label_set, header = case
    divisor = result.label_divisor
    encoding = semantic_encoding(label_set)
    assert encoding == ("mono8" if max(c.id for c in label_set) <= 255 else "mono16")
    sem = round_trip(semantic_msg(result, header, encoding))
    assert sem.header == header and sem.encoding == encoding
    dtype = np.uint8 if encoding == "mono8" else np.uint16
    np.testing.assert_array_equal(decode_image(sem, dtype), result.ids // divisor)
    inst = round_trip(instances_msg(result, header))
    assert inst.header == header and inst.encoding == "mono16"
    np.testing.assert_array_equal(
        decode_image(inst, np.uint16), np.minimum(result.ids % divisor, 65535)
    )


@SETTINGS
@given(label_sets(), st.data())
def test_categories_msg_lists_the_label_set(label_set, data):
    divisor = data.draw(divisors(label_set))
    header = data.draw(st.none() | headers())
    msg = round_trip(categories_msg(label_set, divisor, header))
    assert msg.header == (header if header is not None else Header())
    assert msg.label_divisor == divisor
    got = [(c.id, c.name, c.is_thing, tuple(int(v) for v in c.color)) for c in msg.categories]
    assert got == [(c.id, c.name, c.is_thing, tuple(c.color)) for c in label_set]
    assert sorted(c.id for c in msg.categories) == sorted(int(i) for i in label_set.ids)
    # Stuff first, then things: the training order.
    flags = [c.is_thing for c in msg.categories]
    assert flags == sorted(flags)


@SETTINGS
@given(cases(), st.data())
def test_keep_categories_keeps_exactly_the_kept_pixels(case, data):
    result, label_set, header = case
    own = [c.id for c in label_set]
    keep = data.draw(
        st.lists(st.sampled_from(own), max_size=len(own))
        | st.lists(st.sampled_from(own) | st.integers(0, 65535), max_size=6)
    )
    before_ids = result.ids.copy()
    before_segments = list(result.segments)
    kept = result.keep_categories(keep)
    divisor = result.label_divisor
    keep_set = {int(k) for k in keep}
    mask = np.isin(before_ids // divisor, list(keep_set)) & (before_ids != 0)
    np.testing.assert_array_equal(kept.ids, np.where(mask, before_ids, 0))
    assert kept.ids.dtype == np.int32 and kept.label_divisor == divisor
    assert kept.segments == [s for s in before_segments if s.category_id in keep_set]
    # The input is left untouched.
    np.testing.assert_array_equal(result.ids, before_ids)
    assert result.segments == before_segments
    # The filtered result still makes self-consistent messages.
    check_panoptic(round_trip(panoptic_msg(kept, header, label_set)), kept, label_set, header)
