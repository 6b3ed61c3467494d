"""Fuzz battery on the real graph: malformed frames, parameter abuse, lifecycle abuse.

One node process (random narrow EfficientPS, 64 px input, one CPU thread) takes every case of
the battery in turn; after each case a good frame must come out with its exact header. A bad
frame must be counted in ``bad_inputs`` (with its reason in ``last_bad_input``) and never
produce output; a refused parameter change must leave every value as it was; an invalid
lifecycle transition must fail and leave the node in its state. At the end the process is
still running, no frame failed in processing and nothing raised. The battery's size is
printed by the last test (``-s``). The two frame batteries (about a minute together: each bad
frame waits for the 1 Hz diagnostics that count it) are marked ``slow``; parameter and
lifecycle abuse run in the fast tier.
"""

from __future__ import annotations

import array
import math
import threading
import time
import zlib
from collections import Counter
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from ros_harness import (
    ACTIVATE,
    CLEANUP,
    CONFIGURE,
    DEACTIVATE,
    NODE,
    Graph,
    H,
    W,
    check_panoptic,
    encode_as,
    image_msg,
    running_node,
    scene_rgb,
)
from sensor_msgs.msg import CompressedImage, Image

from panoptic_ros.ros.conversions import array_to_image

pytestmark = pytest.mark.ros

MAX = 2**31 - 1
HUGE_TEXT = 2**20  # characters of a "huge" string parameter
BATTERY: Counter[str] = Counter()  # category -> cases run


@pytest.fixture(scope="module")
def node(graph, tmp_path_factory):
    """One EfficientPS node (random narrow model, 64 px input, one CPU thread)."""
    with running_node(graph, tmp_path_factory.mktemp("fuzz")) as (proc, log):
        yield proc, log


@pytest.fixture(scope="module")
def fuzz(node, graph):
    return Fuzz(graph, *node)


class Fuzz:
    """The battery's driver: cases in, a good frame after each, counters followed."""

    def __init__(self, graph: Graph, proc, log) -> None:
        self.graph, self.proc, self.log = graph, proc, log
        self.compressed = False  # the node's input_transport
        self.bad_seen: int | None = None  # bad_inputs of the latest report of this activation
        self.bad_stamps: list = []
        self.declared = set(graph.list_params())

    # -- frames --------------------------------------------------------------------------
    def good(self) -> float:
        """A good frame on the current transport; its output must carry its exact header."""
        g = self.graph
        if self.compressed:  # a JPEG: 1.8 kB, under the test's max_compressed_bytes
            msg = compressed_msg(g, JPEG, "jpeg")
            sent = SimpleNamespace(header=msg.header, height=H, width=W)
        else:
            msg = sent = image_msg(g)
        check_panoptic(g.send(msg), sent)
        return time.monotonic()

    def rebase(self) -> None:
        """After (re)activation: a good frame, then the first report that follows it."""
        g, after = self.graph, self.good()
        report = g.wait_for(lambda: [d for d in g.reports(since=after)
                                     if int(d["frames_processed"]) >= 1], what="a report")[0]
        self.bad_seen = int(report["bad_inputs"])

    def bad(self, category: str, msg, reason: str) -> None:
        """A bad frame: counted as bad input with ``reason``, no output; then a good frame."""
        g = self.graph
        pub = g.compressed_pub if isinstance(msg, CompressedImage) else g.image_pub
        g.wait_for(lambda: pub.get_subscription_count() > 0, what="the node's subscription")
        before = self.bad_seen
        assert before is not None, "rebase() after activation first"
        for _ in range(3):  # the first publish is normally enough (reliable)
            sent = time.monotonic()
            pub.publish(msg)
            try:
                report = g.wait_for(lambda s=sent: [d for d in g.reports(since=s)
                                                    if int(d["bad_inputs"]) > before],
                                    timeout=10.0, what=f"bad input counted: {reason}")[-1]
                break
            except AssertionError:
                continue
        else:
            raise AssertionError(f"never counted as bad input ({category}: {reason})")
        assert reason in report["last_bad_input"], (reason, report["last_bad_input"][:300])
        assert report["processing_errors"] == "0", report
        self.bad_seen = int(report["bad_inputs"])
        self.bad_stamps.append(msg.header.stamp)
        BATTERY[category] += 1
        self.good()

    def odd(self, category: str, msg, sent=None) -> None:
        """An unusual but valid frame: output with its header; then a good frame."""
        check_panoptic(self.graph.send(msg), sent or msg)
        BATTERY[category] += 1
        self.good()

    # -- parameters ----------------------------------------------------------------------
    def refused(self, name: str, value, reason: str = "") -> None:
        g = self.graph
        declared = name in self.declared
        before = g.get_params(name) if declared else None
        (res,) = g.set_params(**{name: value})
        assert not res.successful and res.reason and reason in res.reason, (
            name, _short(value), res.reason[:300])
        if declared:
            after = g.get_params(name)
            assert after == before, (name, _short(after), _short(before))
        BATTERY["parameters"] += 1
        self.good()

    def accepted(self, restore: dict, **values) -> None:
        """A change that must be taken (the values read back), then ``restore``d."""
        g = self.graph
        results = g.set_params(**values)
        assert all(r.successful for r in results), [r.reason[:200] for r in results]
        got = g.get_params(*values)
        assert got == list(values.values()), [_short(v) for v in got]
        self.good()
        assert all(r.successful for r in g.set_params(**restore))
        assert g.get_params(*restore) == list(restore.values())
        BATTERY["parameters"] += 1
        self.good()

    # -- lifecycle -----------------------------------------------------------------------
    def transition(self, transition_id: int, ok: bool, state: str, label: str = "") -> None:
        g = self.graph
        req = ChangeState.Request(transition=Transition(id=transition_id, label=label))
        success = g.call(ChangeState, NODE + "/change_state", req, timeout=180).success
        assert success == ok, (transition_id, label, success)
        assert g.state() == state
        BATTERY["lifecycle"] += 1
        self.bad_seen = None  # counters restart at activation
        if state == "active":
            self.good()


JPEG = cv2.imencode(".jpg", cv2.cvtColor(scene_rgb(), cv2.COLOR_RGB2BGR))[1].tobytes()


def compressed_msg(graph: Graph, data: bytes, fmt: str) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.header.stamp = graph.next_stamp()
    msg.header.frame_id = "fuzz_cam"
    msg.data = array.array("B", data)
    return msg


def _short(value):
    text = repr(value)
    return text if len(text) < 80 else text[:80] + f"... ({len(text)} chars)"


def raw(graph: Graph, base: str = "rgb8", **fields) -> Image:
    """A good ``base``-encoded frame of the scene with ``fields`` overwritten."""
    msg = array_to_image(encode_as(scene_rgb(), base), base)
    msg.header.stamp = graph.next_stamp()
    msg.header.frame_id = "fuzz_cam"
    for key, value in fields.items():
        setattr(msg, key, array.array("B", value) if key == "data" else value)
    return msg


def png_declaring(width: int, height: int) -> bytes:
    """The scene's PNG with its IHDR rewritten to declare ``width`` x ``height`` (CRC fixed)."""
    png = bytearray(cv2.imencode(".png", scene_rgb())[1].tobytes())
    png[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    return bytes(png)


def jpeg_declaring(width: int, height: int) -> bytes:
    """The scene's baseline JPEG with its SOF0 rewritten to ``width`` x ``height``."""
    jpeg = bytearray(cv2.imencode(".jpg", scene_rgb())[1].tobytes())
    sof = jpeg.find(b"\xff\xc0")
    assert sof > 0
    jpeg[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(jpeg)


# -- (a) malformed frames ----------------------------------------------------------------------
def random_encodings(rng: np.random.Generator) -> list[str]:
    """Garbage encoding strings: random ASCII, random unicode (no surrogates), near-misses."""
    out = []
    for n in (1, 31):
        out.append("".join(chr(c) for c in rng.integers(32, 127, n)))
    out.append("".join(chr(c) for c in rng.integers(0xA0, 0xD7FF, 12)))
    return out + ["rgb8 ", "Rgb8", "8UC3"]


@pytest.mark.slow  # ~30 s: each bad frame waits for the 1 Hz diagnostics
def test_malformed_raw_frames(fuzz, graph):
    fuzz.rebase()
    unsupported = "unsupported image encoding"
    wrong = "wrongly formed"
    cases = [
        (raw(graph, encoding=""), unsupported),
        (raw(graph, encoding="x" * 100_000), unsupported),
        (raw(graph, encoding="rgb8\u00e9\u4e2d\U0001F600"), unsupported),
        (raw(graph, encoding="32SC1"), "no colour meaning"),
        *[(raw(graph, encoding=e), unsupported)
          for e in random_encodings(np.random.default_rng(7))],
        (raw(graph, step=0), wrong),
        (raw(graph, step=W), wrong),  # rgb8 needs 3 * W
        (raw(graph, step=3 * W - 1), wrong),
        (raw(graph, step=MAX), wrong),
        (raw(graph, step=2**32 - 1), "out of range"),
        (raw(graph, data=b""), wrong),
        (raw(graph, data=bytes(100)), wrong),
        (raw(graph, data=bytes(3 * W * H - 1)), wrong),
        (raw(graph, height=0), "zero size"),
        (raw(graph, width=0), "zero size"),
        (raw(graph, height=0, width=0, step=0, data=b""), "zero size"),
        (raw(graph, height=1, width=MAX, step=MAX), wrong),
        (raw(graph, height=MAX, width=1, step=3, data=bytes(12)), wrong),
        (raw(graph, height=MAX), wrong),
        (raw(graph, width=MAX), wrong),
        (raw(graph, height=MAX, width=MAX, step=MAX, data=bytes(16)), wrong),
        (raw(graph, "mono8", height=MAX, width=MAX, step=MAX, data=bytes(16)), wrong),
        (raw(graph, height=2**32 - 1), "out of range"),
        (raw(graph, "mono16", height=H, width=W, step=W), wrong),  # mono16 needs 2 * W
        (raw(graph, "yuv422", width=W - 1, step=2 * (W - 1)), "even width"),
        (raw(graph, "yuyv", width=1, step=2, height=1, data=bytes(2)), "even width"),
    ]
    for msg, reason in cases:
        fuzz.bad("frames", msg, reason)
    # Unusual but valid: processed with the frame's header and size.
    longer = raw(graph)
    longer.data = array.array("B", bytes(longer.data) + bytes(999))
    padded = array_to_image(encode_as(scene_rgb(), "rgb8"), "rgb8")
    rows = np.zeros((H, 3 * W + 5), np.uint8)
    rows[:, :3 * W] = np.frombuffer(padded.data, np.uint8).reshape(H, 3 * W)
    padded = raw(graph, step=3 * W + 5, data=rows.tobytes())
    # A NUL ends a ROS string on the wire (C string): "rgb8\0junk" arrives as "rgb8".
    nul = raw(graph, encoding="rgb8\x00junk")
    for msg in [longer, padded, nul, *[raw(graph, "mono16", is_bigendian=b) for b in (0, 1, 255)]]:
        fuzz.odd("frames", msg)


@pytest.mark.slow  # ~30 s: each bad frame waits for the 1 Hz diagnostics
def test_malformed_compressed_frames(fuzz, graph):
    g = graph
    assert g.set_params(input_transport="compressed")[0].successful
    assert g.transition(DEACTIVATE) and g.transition(ACTIVATE)
    fuzz.compressed = True
    try:
        fuzz.rebase()
        rng = np.random.default_rng(11)
        jpeg = JPEG
        png = cv2.imencode(".png", scene_rgb())[1].tobytes()
        noise = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
        undecodable = "does not decode"
        budget = "max_image_pixels"
        cases = [
            (b"", "jpeg", "no data"),
            (noise, "jpeg", "unsupported compressed format"),
            (noise, "", "unsupported compressed format"),
            (noise, "x" * 100_000 + "\u4e2d", "unsupported compressed format"),
            (b"\xff\xd8\xff" + noise, "jpeg", undecodable),
            (b"\x89PNG\r\n\x1a\n" + noise, "png", undecodable),
            (b"\x89PN", "png", "not even a PNG or JPEG signature"),
            (b"GIF89a" + noise[:100], "gif", "unsupported compressed format"),
            (jpeg[:20], "jpeg", "truncated JPEG header"),
            (jpeg[: len(jpeg) // 2], "jpeg", undecodable),
            (jpeg[: jpeg.find(b"\xff\xda") + 4], "jpeg", undecodable),
            (png[:10], "png", "truncated PNG header"),
            (png[:40], "png", undecodable),
            (png[: len(png) // 2], "png", undecodable),
            (png_declaring(100_000, 100_000), "png", budget),
            (png_declaring(100_000, 100_000), "jpeg", budget),  # format lies as well
            (jpeg_declaring(65535, 65535), "jpeg", budget),
            (jpeg_declaring(0, 0), "jpeg", "zero size"),
            (png_declaring(0, 7), "png", "zero size"),
        ]
        for data, fmt, reason in cases:
            fuzz.bad("frames", compressed_msg(g, data, fmt), reason)
        # Under oversize_policy reduce the bombs stay refused (PNG always; 1/8 too large).
        assert g.set_params(oversize_policy="reduce")[0].successful
        try:
            fuzz.bad("frames", compressed_msg(g, png_declaring(100_000, 100_000), "png"),
                     "PNG cannot be decoded at reduced size")
            fuzz.bad("frames", compressed_msg(g, jpeg_declaring(65535, 65535), "jpeg"),
                     "even decoded at 1/8")
        finally:
            assert g.set_params(oversize_policy="refuse")[0].successful
        # A payload over max_compressed_bytes is refused unopened (the good JPEG is 1.8 kB).
        assert g.set_params(max_compressed_bytes=3000)[0].successful
        try:
            fuzz.bad("frames", compressed_msg(g, png, "png"), "max_compressed_bytes")
            fuzz.bad("frames", compressed_msg(g, noise, "jpeg"), "max_compressed_bytes")
        finally:
            assert g.set_params(max_compressed_bytes=32 * 2**20)[0].successful
        # The format field is only quoted in errors: the data identifies itself.
        size = SimpleNamespace(height=H, width=W)
        for data, fmt in [(jpeg, "png"), (png, "jpeg; bgr8"), (png, "")]:
            msg = compressed_msg(g, data, fmt)
            fuzz.odd("frames", msg, SimpleNamespace(header=msg.header, **vars(size)))
    finally:
        fuzz.compressed = False
        assert g.set_params(input_transport="raw")[0].successful
        assert g.transition(DEACTIVATE) and g.transition(ACTIVATE)
        fuzz.bad_seen = None
    fuzz.good()


# -- (b) parameter abuse -----------------------------------------------------------------------
WRONG_TYPES = [
    ("max_rate", "fast"), ("max_rate", 5), ("overlay_alpha", True), ("input_timeout", [1.0]),
    ("qos_depth", 2.5), ("cpu_threads", "1"), ("input_size", 64.0), ("label_divisor", False),
    ("max_image_pixels", 1e6), ("weights", True), ("device", 1), ("category_filter", ["sky"]),
    ("oversize_policy", 0.0), ("overlay_labels", 1), ("autostart", "yes"),
    ("use_sim_time", "true"), ("score_threshold", 1), ("stuff_area", 100.0),
    ("strategy", False), ("overlap_threshold", "0.5"),
]
OUT_OF_RANGE = [
    ("max_rate", -1.0), ("max_rate", 1000.5), ("overlay_alpha", 1.5), ("overlay_alpha", -0.01),
    ("qos_depth", 0), ("qos_depth", 101), ("cpu_threads", -1), ("cpu_threads", 1025),
    ("input_size", -1), ("input_size", 8193), ("label_divisor", -5),
    ("label_divisor", 1_000_001), ("max_image_pixels", 0), ("max_image_pixels", 2**31),
    ("max_compressed_bytes", 0), ("input_timeout", 0.1), ("score_threshold", 1.01),
    ("overlap_threshold", -0.5), ("stuff_area", -2), ("stuff_area", 2**40),
    ("precision", "fp64"), ("oversize_policy", "REFUSE"), ("input_transport", ""),
    ("qos_reliability", "maybe"), ("strategy", "bogus"), ("backend", ""),
    ("device", "cuda:-1"), ("category_filter", "unicorn, sky"), ("category_filter", "0"),
]
NOT_FINITE = [
    ("max_rate", math.nan), ("max_rate", math.inf), ("max_rate", -math.inf),
    ("overlay_alpha", math.nan), ("input_timeout", math.inf), ("score_threshold", math.nan),
    ("overlap_threshold", -math.inf),
]
HUGE = [("category_filter", "x" * HUGE_TEXT), ("device", "cuda" * (HUGE_TEXT // 4)),
        ("backend", "b" * HUGE_TEXT), ("strategy", "s" * HUGE_TEXT)]
UNKNOWN = ["", "max_rat", "MAX_RATE", "max_rate ", "panoptic_segmentation.max_rate", "/max_rate",
           "r\u00e4te_\u4e2d", "p" * 10_000]


def test_parameter_abuse(fuzz, graph):
    g = graph
    for name, value in WRONG_TYPES:
        fuzz.refused(name, value, "Wrong parameter type")
    for name, value in OUT_OF_RANGE + NOT_FINITE + HUGE:
        fuzz.refused(name, value)
    for name in UNKNOWN:  # "" slips past rclpy's own check (any() of the names): the node's
        fuzz.refused(name, 1.0, "empty parameter name" if not name else "undeclared")
    assert not set(UNKNOWN) & g.list_params()
    fuzz.refused("start_type_description_service", False, "read-only")
    # START / CONFIGURE / ACTIVATE parameters set live: taken, applied at their time (the
    # running pipeline is unchanged: the good frames that follow still come out).
    if g.describe("autostart")[0].read_only:
        fuzz.refused("autostart", False, "read-only")
    else:  # taken, and only logged: it is read once at start
        fuzz.accepted({"autostart": True}, autostart=False)
    fuzz.accepted({"input_size": 64, "variant": "narrow"}, input_size=32, variant="b7")
    fuzz.accepted({"qos_depth": 1, "qos_reliability": "auto"}, qos_depth=7,
                  qos_reliability="best_effort")
    fuzz.accepted({"weights": ""}, weights="w" * HUGE_TEXT)
    fuzz.accepted({"category_filter": ""}, category_filter="sky, " * (HUGE_TEXT // 5))
    # Atomic batches with one bad entry: all refused, none applied.
    names = ["max_rate", "overlay_alpha", "score_threshold", "category_filter",
             "input_timeout", "stuff_area"]
    before = g.get_params(*names)
    valid = dict(max_rate=5.0, overlay_alpha=0.3, score_threshold=0.2, category_filter="sky",
                 input_timeout=10.0)
    for bad in [{"stuff_area": -7},  # refused by the descriptor's range (rclpy)
                {"category_filter": "unicorn"},  # refused by the node's callback
                {"stuff_area": 12.5},  # wrong type
                {"no_such_parameter": 1},  # undeclared
                {"overlay_labels": True, "max_rate": math.nan}]:
        res = g.set_params_atomically(**{**valid, **bad})
        assert not res.successful and res.reason, bad
        assert g.get_params(*names) == before, bad
        BATTERY["parameters"] += 1
        fuzz.good()
    res = g.set_params_atomically(**valid, stuff_area=100)  # all valid: all applied
    assert res.successful, res.reason
    assert g.get_params(*names) == [*valid.values(), 100]
    fuzz.good()
    assert g.set_params_atomically(**dict(zip(names, before, strict=True))).successful
    assert g.get_params(*names) == before
    BATTERY["parameters"] += 1
    fuzz.good()
    # set_parameters (not atomic) judges each entry alone: the valid one applies.
    results = g.set_params(overlay_alpha=0.7, max_rate=-3.0)
    assert [r.successful for r in results] == [True, False]
    assert g.get_params("overlay_alpha", "max_rate") == [0.7, 0.0]
    assert g.set_params(overlay_alpha=0.5)[0].successful
    BATTERY["parameters"] += 1
    fuzz.good()
    # Rapid alternating max_rate changes while frames arrive, ending unthrottled.
    for k in range(30):
        assert g.set_params(max_rate=(0.001, 1000.0, 0.0)[k % 3])[0].successful
        g.image_pub.publish(image_msg(g))
    assert g.set_params(max_rate=0.0)[0].successful
    BATTERY["parameters"] += 1
    fuzz.good()


# -- (c) lifecycle abuse -----------------------------------------------------------------------
def test_lifecycle_abuse(fuzz, graph):
    g, t = graph, fuzz.transition
    # From active: activate, configure, cleanup and nonsense are refused; still active.
    t(ACTIVATE, False, "active")
    t(CONFIGURE, False, "active")
    t(CLEANUP, False, "active")
    t(99, False, "active")
    t(0, False, "active", label="explode")
    # Inactive: deactivate again, configure twice refused.
    t(DEACTIVATE, True, "inactive")
    t(DEACTIVATE, False, "inactive")
    t(CONFIGURE, False, "inactive")
    t(ACTIVATE, True, "active")
    # Unconfigured: activate, deactivate, cleanup refused.
    t(DEACTIVATE, True, "inactive")
    t(CLEANUP, True, "unconfigured")
    t(ACTIVATE, False, "unconfigured")
    t(DEACTIVATE, False, "unconfigured")
    t(CLEANUP, False, "unconfigured")
    # Configure failing (bad weights), then fixed.
    for weights in ["/nonexistent/fuzz_weights.pt", "/", str(fuzz.log.parent / "params.yaml")]:
        assert g.set_params(weights=weights)[0].successful
        t(CONFIGURE, False, "unconfigured")
    assert g.set_params(weights="")[0].successful
    # A filter judged against the label set then in place, the label set changed after it:
    # configure refuses the combination with a reason; fixed, it configures.
    assert g.set_params(label_set="coco_panoptic")[0].successful
    assert g.set_params(category_filter="traffic light")[0].successful
    assert g.set_params(label_set="synthetic")[0].successful
    t(CONFIGURE, False, "unconfigured")
    assert g.set_params(category_filter="")[0].successful
    t(CONFIGURE, True, "inactive")
    t(CONFIGURE, False, "inactive")  # configure twice
    t(ACTIVATE, True, "active")
    g.wait_for(lambda: "configure failed" in fuzz.log.read_text(), what="the logged reason")
    # Deactivate while frames stream (30 Hz, bounded), then activate again.
    frames = [image_msg(g) for _ in range(45)]
    g.wait_for(lambda: g.image_pub.get_subscription_count() > 0)

    def stream() -> None:
        start = time.monotonic()
        for k, msg in enumerate(frames):
            delay = start + k / 30.0 - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the publisher, not synchronisation
            g.image_pub.publish(msg)

    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        g.wait_for(lambda: g.received("panoptic", frames[0].header.stamp) or [
            m for m in frames[1:10] if g.received("panoptic", m.header.stamp)],
            what="the stream being processed")
        t(DEACTIVATE, True, "inactive")
    finally:
        streamer.join()
    t(ACTIVATE, True, "active")
    # Rapid deactivate/activate cycles with frames in between.
    for _ in range(10):
        g.image_pub.publish(image_msg(g))
        assert g.transition(DEACTIVATE)
        g.image_pub.publish(image_msg(g))
        assert g.transition(ACTIVATE)
    assert g.state() == "active"
    BATTERY["lifecycle"] += 1
    fuzz.good()


# -- the whole battery -------------------------------------------------------------------------
def test_node_survived_the_battery(fuzz, graph):
    g = graph
    size = sum(BATTERY.values())
    print(f"\nfuzz battery: {size} cases ({dict(BATTERY)})")
    assert fuzz.proc.poll() is None
    fuzz.good()
    for stamp in fuzz.bad_stamps:
        assert not g.received("panoptic", stamp), stamp
    assert all(d["processing_errors"] == "0" for d in g.reports())
    log = fuzz.log.read_text()
    assert "Traceback" not in log and "processing failed" not in log, log[-4000:]
