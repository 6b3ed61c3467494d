"""The node on a real ROS 2 graph: a separate node process, rclpy + Fast DDS, loopback only.

One node process serves the whole module (random-weights model, synthetic label set, tiny
images); tests talk to it only through topics and its lifecycle and parameter services, and
wait on events with timeouts. Tests that change the node's state (lifecycle, transport, model)
come last and leave it active with the module's configuration.
"""

from __future__ import annotations

import array
import ast
import importlib.util
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import REPO
from lifecycle_msgs.msg import Transition
from panoptic_ros.msg import CategoryArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_harness import (
    IMAGE_TOPIC,
    LS,
    NODE,
    Graph,
    H,
    W,
    check_panoptic,
    image_msg,
    scene_rgb,
    start_node,
    stop_node,
    write_params,
)
from sensor_msgs.msg import CompressedImage, Image

from panoptic_ros import viz
from panoptic_ros.result import PanopticResult
from panoptic_ros.ros.conversions import image_to_array

pytestmark = pytest.mark.ros


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def node(tmp_path_factory, graph):
    tmp = tmp_path_factory.mktemp("panoptic_node")
    params = write_params(tmp / "params.yaml", overlay_alpha=0.5)
    log = tmp / "node.log"
    proc = start_node(params, log, "-p", "overlay_alpha:=0.25")
    try:
        graph.wait_for(lambda: proc.poll() is not None or graph.state() == "active",
                       timeout=180, what="the node to become active")
        assert proc.poll() is None, log.read_text()
        yield proc, log
    finally:
        code = stop_node(proc)
        assert code == 0, log.read_text()[-4000:]


# -- tests ---------------------------------------------------------------------------------------
def test_frame_in_outputs_out_with_its_header(node, graph):
    sent = image_msg(graph)
    out = graph.send(sent)
    ids = check_panoptic(out, sent)
    counts = graph.wait_for(lambda: graph.received("counts", sent.header.stamp),
                            what="instance counts")[0]
    assert counts.header == sent.header
    expected = {c.id: 0 for c in LS.things}
    for info in out.segments:
        if info.is_thing:
            expected[info.category_id] += 1
    assert {c.category_id: c.count for c in counts.counts} == expected
    assert [c.label for c in counts.counts] == [c.name for c in LS.things]
    assert set(np.unique(ids // 1000)) <= {0, *LS.ids.tolist()}


def test_params_file_and_command_line_override(node, graph):
    assert graph.get_params("label_set", "variant", "overlay_alpha", "weights") == [
        "synthetic", "narrow", 0.25, ""]


def test_categories_are_latched_for_a_late_subscriber(node, graph):
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    graph.listen("categories", CategoryArray, NODE + "/categories", qos)
    msg = graph.wait_for(lambda: graph.messages("categories"), what="categories")[0]
    assert msg.label_divisor == 1000
    assert [(c.id, c.name, c.is_thing, tuple(int(v) for v in c.color)) for c in msg.categories] \
        == [(c.id, c.name, c.is_thing, c.color) for c in LS]


def test_overlay_semantic_instances_only_while_subscribed(node, graph):
    # Nobody listens yet: frames are processed, no overlay is drawn.
    for _ in range(2):
        graph.send(image_msg(graph))
    before = graph.diagnostics(lambda d: int(d["frames_processed"]) >= 2)
    assert before["overlays_computed"] == "0"
    assert graph.messages("panoptic")
    # Subscribe: overlay, semantic and instances arrive with the frame's header and size.
    graph.listen("overlay", Image, NODE + "/overlay")
    graph.listen("semantic", Image, NODE + "/semantic")
    graph.listen("instances", Image, NODE + "/instances")
    sent = image_msg(graph)
    for key in ("overlay", "semantic", "instances"):
        graph.send(sent, key=key)
    out = graph.received("panoptic", sent.header.stamp)[0]
    ids = image_to_array(out.ids)
    overlay = graph.received("overlay", sent.header.stamp)[0]
    assert (overlay.encoding, overlay.height, overlay.width) == ("rgb8", H, W)
    assert overlay.header == sent.header
    semantic = graph.received("semantic", sent.header.stamp)[0]
    assert semantic.encoding == "mono8" and semantic.header == sent.header
    np.testing.assert_array_equal(image_to_array(semantic), ids // 1000)
    instances = graph.received("instances", sent.header.stamp)[0]
    assert instances.encoding == "mono16" and instances.header == sent.header
    np.testing.assert_array_equal(image_to_array(instances), ids % 1000)
    after = graph.diagnostics(lambda d: int(d["overlays_computed"]) >= 1)
    assert int(after["overlays_computed"]) <= int(after["frames_processed"])
    # The overlay's pixels are viz.overlay of the frame and its label image at overlay_alpha
    # (0.25 from the command line), and follow a live change of it.
    result = PanopticResult.from_ids(ids, LS, 1000)
    np.testing.assert_array_equal(image_to_array(overlay), viz.overlay(scene_rgb(), result, LS,
                                                                         alpha=0.25))
    assert graph.set_params(overlay_alpha=0.75)[0].successful
    try:
        sent = image_msg(graph)
        again = graph.send(sent, key="overlay")
        ids = image_to_array(graph.received("panoptic", sent.header.stamp)[0].ids)
        expected = viz.overlay(scene_rgb(), PanopticResult.from_ids(ids, LS, 1000), LS,
                               alpha=0.75)
        np.testing.assert_array_equal(image_to_array(again), expected)
        assert not np.array_equal(expected, viz.overlay(
            scene_rgb(), PanopticResult.from_ids(ids, LS, 1000), LS, alpha=0.25))
    finally:
        assert graph.set_params(overlay_alpha=0.25)[0].successful


@pytest.mark.parametrize("encoding", [
    "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "yuv422", "uyvy", "yuv422_yuy2",
    "yuyv", "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"])
def test_every_input_encoding_is_accepted(node, graph, encoding):
    sent = image_msg(graph, encoding=encoding)
    check_panoptic(graph.send(sent), sent)


def bad_images(graph: Graph) -> list[tuple[str, Image]]:
    cases = []
    msg = image_msg(graph)
    msg.encoding = "hsv8"
    cases.append(("unsupported image encoding", msg))
    msg = image_msg(graph)
    msg.data = msg.data[: len(msg.data) // 2]
    cases.append(("data has", msg))
    msg = image_msg(graph)
    msg.height, msg.width, msg.step, msg.data = 0, 0, 0, array.array("B")
    cases.append(("zero size", msg))
    msg = image_msg(graph)
    msg.step = W  # rgb8 needs 3 * W
    cases.append(("step", msg))
    return cases


def test_bad_inputs_are_survived_and_counted(node, graph):
    for reason, bad in bad_images(graph):
        before = int(graph.diagnostics()["bad_inputs"])
        graph.wait_for(lambda: graph.image_pub.get_subscription_count() > 0)
        graph.image_pub.publish(bad)
        diag = graph.diagnostics(lambda d, n=before: int(d["bad_inputs"]) > n,
                                 what=f"bad input counted ({reason})")
        assert reason in diag["last_bad_input"]
        good = image_msg(graph)
        check_panoptic(graph.send(good), good)
        assert not graph.received("panoptic", bad.header.stamp)


def test_live_parameters_applied_and_invalid_refused(node, graph):
    results = graph.set_params(score_threshold=0.3, stuff_area=100, max_rate=0.0,
                               overlay_alpha=0.6)
    assert all(r.successful for r in results)
    assert graph.get_params("score_threshold", "overlay_alpha") == [0.3, 0.6]
    # The Predictor's fusion settings follow (reported in the node's diagnostics).
    graph.diagnostics(lambda d: d["inference.score_threshold"] == "0.3"
                      and d["inference.stuff_area"] == "100", what="thresholds applied")
    assert graph.set_params(score_threshold=-1.0, stuff_area=-1)[0].successful
    graph.diagnostics(lambda d: d["inference.score_threshold"] == "0.5"
                      and d["inference.stuff_area"] == "2048", what="the model's own thresholds")
    # The category filter applies to the next frame: only sky and ground (or void) remain.
    assert graph.set_params(category_filter="sky, ground")[0].successful
    sent = image_msg(graph)
    ids = check_panoptic(graph.send(sent), sent)
    assert set(np.unique(ids // 1000)) <= {0, 11, 12}
    counts = graph.wait_for(lambda: graph.received("counts", sent.header.stamp))[0]
    assert all(c.count == 0 for c in counts.counts)
    assert graph.set_params(category_filter="")[0].successful
    # Invalid values are refused with a reason and change nothing.
    for name, value, reason in [
        ("score_threshold", 1.5, ""),
        ("precision", "fp8", "one of"),
        ("category_filter", "unicorn", "unicorn"),
        ("qos_depth", 0, ""),
        ("cpu_threads", -1, ""),
        ("input_transport", "carrier pigeon", "one of"),
    ]:
        before = graph.get_params(name)
        (res,) = graph.set_params(**{name: value})
        assert not res.successful and reason in res.reason and res.reason
        assert graph.get_params(name) == before


def test_max_rate_caps_processing(node, graph):
    assert graph.set_params(max_rate=2.0)[0].successful
    try:
        base = graph.idle(time.monotonic())
        start = time.monotonic()
        sent_at = graph.stream(scene_rgb(), 45)  # 1.5 s at 30 Hz
        diag = graph.idle(time.monotonic())
        outs = graph.outputs(sent_at)
        # Processing starts are at least 1 / max_rate apart.
        assert 2 <= len(outs) <= 2.0 * (outs[-1][0] - start) + 1
        assert int(diag["frames_dropped"]) > int(base["frames_dropped"])
    finally:
        assert graph.set_params(max_rate=0.0)[0].successful


def test_diagnostics_report_rates_latency_device_and_model(node, graph):
    graph.send(image_msg(graph))
    diag = graph.diagnostics(lambda d: int(d["frames_processed"]) > 0)
    assert diag["device"] == "cpu" and "efficientps" in diag["model"]
    assert diag["state"] == "active" and diag["input_topic"] == IMAGE_TOPIC
    assert float(diag["inference_ms_max"]) > 0 and float(diag["latency_ms_max"]) > 0
    assert int(diag["frames_received"]) >= int(diag["frames_processed"])


def test_lifecycle_through_services(node, graph):
    assert graph.state() == "active"
    assert graph.transition(Transition.TRANSITION_DEACTIVATE)
    assert graph.state() == "inactive"
    graph.wait_for(lambda: graph.image_pub.get_subscription_count() == 0,
                   what="the node to unsubscribe")
    assert graph.transition(Transition.TRANSITION_CLEANUP)
    assert graph.state() == "unconfigured"
    # A model that cannot load fails configure with the reason logged; the node lives on.
    assert graph.set_params(weights="/nonexistent/panoptic_weights.pt")[0].successful
    assert not graph.transition(Transition.TRANSITION_CONFIGURE)
    assert graph.state() == "unconfigured"
    _, log = node
    graph.wait_for(lambda: "panoptic_weights.pt" in log.read_text(), what="the logged reason")
    assert "configure failed" in log.read_text()
    # Thresholds set while unconfigured apply at configure; -1 still means the model's own.
    assert graph.set_params(weights="", score_threshold=0.25)[0].successful
    assert graph.transition(Transition.TRANSITION_CONFIGURE)
    assert graph.state() == "inactive"
    assert graph.transition(Transition.TRANSITION_ACTIVATE)
    assert graph.state() == "active"
    activated = time.monotonic()
    graph.wait_for(lambda: [d for d in graph.reports(since=activated)
                            if d["inference.score_threshold"] == "0.25"], what="configured value")
    assert graph.set_params(score_threshold=-1.0)[0].successful
    graph.diagnostics(lambda d: d["inference.score_threshold"] == "0.5", what="the model's own")
    sent = image_msg(graph)
    check_panoptic(graph.send(sent), sent)


def test_compressed_input_and_corrupt_jpeg(node, graph):
    assert graph.set_params(input_transport="compressed")[0].successful
    assert graph.transition(Transition.TRANSITION_DEACTIVATE)
    assert graph.transition(Transition.TRANSITION_ACTIVATE)
    try:
        bad = CompressedImage(format="jpeg")
        bad.header.stamp = graph.next_stamp()
        bad.data = array.array("B", b"\xff\xd8\xff\xe0 not really a jpeg")
        activated = time.monotonic()  # counters restart at activation
        graph.wait_for(lambda: graph.compressed_pub.get_subscription_count() > 0)
        graph.compressed_pub.publish(bad)
        graph.wait_for(lambda: [d for d in graph.reports(since=activated)
                                if d["bad_inputs"] == "1"], what="the corrupt JPEG counted")
        diag = graph.reports(since=activated)[-1]
        assert "does not decode" in diag["last_bad_input"]
        rgb = scene_rgb()
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        good = CompressedImage(format="jpeg")
        good.header.stamp = graph.next_stamp()
        good.header.frame_id = "compressed_cam"
        good.data = array.array("B", jpeg.tobytes())
        out = graph.send(good)
        assert out.header == good.header and (out.ids.height, out.ids.width) == (H, W)
        assert not graph.received("panoptic", bad.header.stamp)
    finally:
        assert graph.set_params(input_transport="raw")[0].successful
        assert graph.transition(Transition.TRANSITION_DEACTIVATE)
        assert graph.transition(Transition.TRANSITION_ACTIVATE)


def test_slow_model_under_30hz_keeps_no_backlog(node, graph):
    """Latest frame wins: outputs stay fresh, frames are dropped, work stops with the input."""
    assert graph.set_params(variant="b0", input_size=160)[0].successful
    assert graph.transition(Transition.TRANSITION_DEACTIVATE)
    assert graph.transition(Transition.TRANSITION_CLEANUP)
    assert graph.transition(Transition.TRANSITION_CONFIGURE)
    assert graph.transition(Transition.TRANSITION_ACTIVATE)
    try:
        graph.send(image_msg(graph, scene_rgb(240, 320)), step=30.0)  # warm up
        base = graph.idle(time.monotonic())
        rgb = scene_rgb(240, 320)
        n_frames = 90
        start = time.monotonic()
        sent_at = graph.stream(rgb, n_frames)
        diag = graph.idle(time.monotonic())
        assert int(diag["frames_received"]) - int(base["frames_received"]) >= n_frames // 2
        during = graph.reports(since=start)
        assert any("not keeping up" in d["_message"] and d["_level"] == b"\x01"
                   for d in during), [d["_message"] for d in during]
        processed = int(diag["frames_processed"]) - int(base["frames_processed"])
        dropped = int(diag["frames_dropped"]) - int(base["frames_dropped"])
        assert dropped > 0 and processed < n_frames
        outs = graph.outputs(sent_at)
        assert len(outs) == processed
        stamps = [stamp for _, stamp in outs]
        assert stamps == sorted(stamps)  # never an older frame after a newer one
        ages = [t - sent_at[stamp] for t, stamp in outs]
        # The newest frame waits at most for the frame in progress, then for its own run.
        inference_s = max(float(d["inference_ms_max"]) for d in graph.reports(since=start)) / 1e3
        bound = 3 * inference_s + 2.0
        assert max(ages) <= bound, (ages, bound)
    finally:
        assert graph.set_params(variant="narrow", input_size=64)[0].successful
        assert graph.transition(Transition.TRANSITION_DEACTIVATE)
        assert graph.transition(Transition.TRANSITION_CLEANUP)
        assert graph.transition(Transition.TRANSITION_CONFIGURE)
        assert graph.transition(Transition.TRANSITION_ACTIVATE)


def test_console_script_starts_and_stops(graph, tmp_path):
    """The installed entry point runs the same node (autostart off: no model needed)."""
    exe = Path(sys.prefix) / "bin" / "panoptic_node"
    assert exe.exists(), f"console script not installed in {sys.prefix}: run `make dev`"
    params = write_params(tmp_path / "params.yaml", key="/**", autostart=False)
    log = tmp_path / "script.log"
    name = "/panoptic_script_check"
    proc = start_node(params, log, "-r", f"__node:={name[1:]}", exe=[str(exe)])
    try:
        assert graph.state(name) == "unconfigured"
    finally:
        assert stop_node(proc) == 0, log.read_text()


# -- launch file and installed files ---------------------------------------------------------
LAUNCH = REPO / "launch" / "panoptic.launch.py"


def test_launch_file_with_launch_ros():
    if importlib.util.find_spec("launch_ros") is None:
        pytest.skip("launch_ros is not importable here")
    spec = importlib.util.spec_from_file_location("panoptic_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from launch_ros.actions import LifecycleNode

    description = module.generate_launch_description()
    nodes = [e for e in description.entities if isinstance(e, LifecycleNode)]
    assert len(nodes) == 1
    assert nodes[0].node_package == "panoptic_ros"
    assert nodes[0].node_executable == "panoptic_node"


def _launch_calls(name: str) -> list[ast.Call]:
    tree = ast.parse(LAUNCH.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {k.arg: k.value for k in call.keywords}


def test_launch_file_structure_matches_the_node():
    """The launch description, read from its syntax tree (launch_ros is not installable here):
    one lifecycle node of our package and executable under the node's name, parameters that
    the node declares, remaps of the node's own inputs, every launch argument declared."""
    from panoptic_ros.ros.node import NODE_NAME
    from panoptic_ros.ros.node_params import SPECS

    (node,) = _launch_calls("LifecycleNode")
    kw = _keywords(node)
    module = ast.parse(LAUNCH.read_text())
    constants = {t.id: n.value.value for n in module.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(n.value, ast.Constant)}
    value = lambda e: constants[e.id] if isinstance(e, ast.Name) else e.value  # noqa: E731
    assert value(kw["package"]) == "panoptic_ros"
    assert value(kw["executable"]) == "panoptic_node"
    assert (REPO / "scripts" / value(kw["executable"])).is_file()
    assert value(kw["name"]) == NODE_NAME
    overrides = [d for d in kw["parameters"].elts if isinstance(d, ast.Dict)]
    keys = {k.value for d in overrides for k in d.keys}
    assert keys and keys <= set(SPECS), keys - set(SPECS)
    remapped = {t.elts[0].value for t in kw["remappings"].elts}
    assert remapped == {"image", "image/compressed"}
    declared = {c.args[0].value for c in _launch_calls("DeclareLaunchArgument")}
    used = {c.args[0].value for c in _launch_calls("LaunchConfiguration")}
    assert used <= declared, used - declared
    assert {"config", "panoptic.yaml", "rviz", "panoptic.rviz"} <= {
        n.value for n in ast.walk(module) if isinstance(n, ast.Constant)}


def test_installed_files_equal_the_source():
    """What the package installs (config, launch, rviz, the Fast DDS profile) is the source."""
    prefix = Path(sys.prefix)
    exe = prefix / "lib" / "panoptic_ros" / "panoptic_node"
    assert exe.exists() and os.access(exe, os.X_OK), f"panoptic_ros not installed in {prefix}"
    share = prefix / "share" / "panoptic_ros"
    for rel, src in [("config/panoptic.yaml", "config/panoptic.yaml"),
                     ("launch/panoptic.launch.py", "launch/panoptic.launch.py"),
                     ("launch/demo.launch.py", "launch/demo.launch.py"),
                     ("launch/multi_camera.launch.py", "launch/multi_camera.launch.py"),
                     ("rviz/panoptic.rviz", "rviz/panoptic.rviz"),
                     ("fastdds_loopback.xml", "panoptic_ros/ros/fastdds_loopback.xml")]:
        installed = share / rel
        assert installed.is_file(), f"{installed} missing: run `make dev`"
        assert installed.read_bytes() == (REPO / src).read_bytes(), f"{rel} is stale"


def test_config_file_declares_only_known_parameters():
    """Every node parameter and every live setting of the default backend, valid values."""
    from panoptic_ros.models.efficientps.config import FUSION_LIVE_PARAMS
    from panoptic_ros.ros.node_params import SPECS, check_live_value

    data = yaml.safe_load((REPO / "config" / "panoptic.yaml").read_text())
    (params,) = [v["ros__parameters"] for v in data.values()]
    live = {p.name: p for p in FUSION_LIVE_PARAMS}
    assert set(params) == set(SPECS) | set(live)
    for name, value in params.items():
        if name in live:
            assert type(value) is live[name].kind, name
            assert check_live_value(live[name], value) is None, name
        else:
            assert type(value) is type(SPECS[name].default), name
            assert SPECS[name].check(value) is None, name


def test_rviz_config_shows_the_overlay():
    config = yaml.safe_load((REPO / "rviz" / "panoptic.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    images = [d for d in displays if d["Class"] == "rviz_default_plugins/Image" and d["Enabled"]]
    assert [d["Topic"]["Value"] for d in images] == [NODE + "/overlay"]
    shown = {d["Class"]: d["Topic"]["Value"] for d in displays if d["Enabled"]}
    assert shown["rviz_default_plugins/PointCloud2"] == NODE + "/points"
    assert shown["rviz_default_plugins/MarkerArray"] == NODE + "/markers"
    (markers,) = [d for d in displays if d["Class"] == "rviz_default_plugins/MarkerArray"]
    from panoptic_ros.ros.messages import MARKER_NAMESPACES

    assert set(markers["Namespaces"]) == set(MARKER_NAMESPACES)
