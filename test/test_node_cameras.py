"""Several cameras in one node (``cameras: [front, left]``) on the real ROS 2 graph.

Checked on what the node publishes: each camera's outputs come under ``~/<camera>/`` with that
camera's frame header and size; ids equal the Predictor's on the same frame; a bad frame of one
camera is refused and counted for that camera alone while the other is served; diagnostics
report one status per camera; each camera has its own tracker. The round-robin mailbox is
checked directly: with a batch limit no camera waits more than one turn.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import save_tiny_efficientps
from panoptic_ros.msg import PanopticSegmentation
from ros_harness import NODE, image_msg, running_node, scene_rgb
from sensor_msgs.msg import Image

from panoptic_ros.inference import Predictor
from panoptic_ros.ros.conversions import image_to_array
from panoptic_ros.ros.latest_frame import Frame, LatestFrames

pytestmark = pytest.mark.ros

CAMERAS = ("front", "left")


def test_round_robin_serves_every_camera():
    slots = LatestFrames(["a", "b", "c"])
    frame = Frame(Image(), 0.0, False)
    for name in "abc":
        assert not slots.put(name, frame)
    assert slots.put("a", frame)  # replaced an unprocessed frame: a drop
    served = [[name for name, _ in slots.take(0.0, limit=2)]]
    for name in "ab":
        slots.put(name, frame)
    served.append([name for name, _ in slots.take(0.0, limit=2)])
    served.append([name for name, _ in slots.take(0.0, limit=2)])
    assert served == [["a", "b"], ["c", "a"], ["b"]]  # c was not starved by a and b
    slots.put("c", frame)
    assert [n for n, _ in slots.take(0.0)] == ["c"] and slots.pending() == 0
    slots.put("b", frame)
    assert slots.close() == {"b": 1} and slots.take(0.0) == []


def test_two_cameras_one_node(graph, tmp_path):
    outputs = {}
    pubs = {}
    for cam in CAMERAS:
        pubs[cam] = graph.node.create_publisher(Image, f"/{cam}/image", 10)
        outputs[cam] = f"out_{cam}"
        graph.listen(outputs[cam], PanopticSegmentation, f"{NODE}/{cam}/panoptic")
    weights = save_tiny_efficientps(tmp_path / "tiny.pt", seed=5)
    with running_node(graph, tmp_path, cameras=list(CAMERAS), weights=str(weights)) as (_, log):
        for cam in CAMERAS:
            graph.wait_for(lambda c=cam: pubs[c].get_subscription_count() > 0,
                           what=f"the node's {cam} subscription")
        assert "cameras ['front', 'left']" in log.read_text()
        sent = {"front": image_msg(graph, scene_rgb(48, 64, 1), frame_id="front_optical"),
                "left": image_msg(graph, scene_rgb(40, 56, 2), frame_id="left_optical")}
        got = {}
        for _ in range(20):  # publish both until both answers are in (best-effort transport)
            for cam in CAMERAS:
                if cam not in got:
                    pubs[cam].publish(sent[cam])
            try:
                graph.wait_for(lambda: all(graph.received(outputs[c], sent[c].header.stamp)
                                           for c in CAMERAS), timeout=3.0, what="both")
            except AssertionError:
                pass
            got = {c: graph.received(outputs[c], sent[c].header.stamp)[0] for c in CAMERAS
                   if graph.received(outputs[c], sent[c].header.stamp)}
            if len(got) == 2:
                break
        assert set(got) == set(CAMERAS)
        for cam in CAMERAS:
            out, msg = got[cam], sent[cam]
            assert out.header == msg.header and out.ids.header == msg.header
            ids = image_to_array(out.ids)
            assert ids.shape == (msg.height, msg.width)
        # A bad frame on one camera is that camera's: the other is still served.
        bad = image_msg(graph, scene_rgb(48, 64, 3), frame_id="left_optical")
        bad.encoding = "no_such_encoding"
        good = image_msg(graph, scene_rgb(48, 64, 4), frame_id="front_optical")
        for _ in range(20):
            pubs["left"].publish(bad)
            pubs["front"].publish(good)
            try:
                graph.wait_for(lambda: graph.received(outputs["front"], good.header.stamp),
                               timeout=3.0, what="front output")
                break
            except AssertionError:
                continue
        front = graph.received(outputs["front"], good.header.stamp)[0]
        assert front.header == good.header
        reports = {}

        def both():
            for d in graph.reports():
                reports[d["camera"]] = d
            return (set(reports) == set(CAMERAS) and int(reports["left"]["bad_inputs"]) >= 1
                    and int(reports["front"]["frames_processed"]) >= 2)

        graph.wait_for(both, what="one diagnostics status per camera")
        assert reports["front"]["bad_inputs"] == "0"
        assert reports["left"]["input_topic"] == "/left/image"
        assert "tracking" in reports["front"] and reports["front"]["tracking"].startswith("on")
    # The same model on the same frame, and each camera's own tracker (ids from 1).
    expected = Predictor(weights=str(weights), device="cpu", input_size=64)(scene_rgb(48, 64, 4))
    np.testing.assert_array_equal(image_to_array(front.ids) // 1000, expected.ids // 1000)
    for out in (got["front"], got["left"]):
        tracked = sorted(s.track_id for s in out.segments if s.track_id)
        assert tracked == list(range(1, len(tracked) + 1))


def test_multi_camera_launch_file_matches_the_node():
    """The example launch file: the node's name, known parameters, one remap per camera."""
    import ast
    from pathlib import Path

    from panoptic_ros.ros.node import NODE_NAME
    from panoptic_ros.ros.node_params import SPECS

    source = (Path(__file__).resolve().parents[1] / "launch" / "multi_camera.launch.py")
    tree = ast.parse(source.read_text())
    cameras = next(ast.literal_eval(n.value) for n in ast.walk(tree)
                   if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "CAMERAS")
    (call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
               and getattr(n.func, "id", "") == "LifecycleNode"]
    kw = {k.arg: k.value for k in call.keywords}
    assert ast.literal_eval(kw["executable"]) == "panoptic_node"
    assert ast.literal_eval(kw["name"]) == NODE_NAME
    keys = {k.value for d in ast.walk(kw["parameters"]) if isinstance(d, ast.Dict) for k in d.keys}
    assert keys == {"cameras"} and keys <= set(SPECS)
    remap = ast.unparse(kw["remappings"])
    assert "f'{name}/image'" in remap and "for name in CAMERAS" in remap
    assert len(cameras) == 4 and len(set(cameras)) == 4


def test_camera_names_are_checked():
    """A bad ``cameras`` value is refused with the reason (the node refuses it when set)."""
    from panoptic_ros.ros.cameras import camera_names, check_camera_names

    assert check_camera_names([]) is None and check_camera_names(["front", "rear_2"]) is None
    assert "not a valid name" in check_camera_names(["front", "2nd"])
    assert "not a valid name" in check_camera_names(["a/b"])
    assert "not a valid name" in check_camera_names([""])
    assert "repeat" in check_camera_names(["front", "front"])
    assert "must be a list" in check_camera_names("front")
    assert camera_names([]) == [""] and camera_names(["a", "b"]) == ["a", "b"]
