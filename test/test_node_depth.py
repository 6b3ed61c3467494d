"""Depth and 3D on the real ROS 2 graph: image + depth + camera_info in, 3D per segment out.

The bundled model runs on frames of a synthetic sequence whose depth and calibration are exact.
Checked on what the node publishes: things get 3D near the ground truth position, the nearest
distance per class, a labelled PointCloud2 whose points are the back-projected depth pixels
with the label image's ids, RViz markers added and deleted; and bad depth (wrong encoding,
half size, all invalid, no camera_info) leaves the 2D outputs going.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from panoptic_ros.msg import InstanceCounts
from ros_harness import running_node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from panoptic_ros.camera_model import depth_to_millimetres
from panoptic_ros.data.sequences import SequenceConfig, generate_sequence
from panoptic_ros.ros.conversions import array_to_image, image_to_array
from panoptic_ros.ros.demo.camera import camera_info_msg

pytestmark = pytest.mark.ros

SIZE = (128, 160)
DEPTH = "/test_camera/depth"
INFO = "/test_camera/camera_info"
NODE = "/panoptic_segmentation"


@pytest.fixture(scope="module")
def frames():
    config = SequenceConfig(height=SIZE[0], width=SIZE[1])
    return list(generate_sequence(seed=2026, video=3, frames=4, config=config))


def header_of(graph, stamp: float, msg):
    msg.header.stamp.sec = int(stamp)
    msg.header.stamp.nanosec = int(round((stamp % 1) * 1e9))
    msg.header.frame_id = "camera_optical"
    return msg


def send(graph, pubs, frame, stamp, depth=None, encoding="16UC1", info=True):
    """Publish a frame's image, depth and camera_info with one header; its panoptic output."""
    image = header_of(graph, stamp, array_to_image(frame.image, "rgb8"))
    if depth is None:
        depth = array_to_image(depth_to_millimetres(frame.depth), encoding)
    depth.header = image.header
    cam_info = camera_info_msg(frame.camera)
    cam_info.header = image.header
    for _ in range(20):
        if info:
            pubs["info"].publish(cam_info)
        pubs["depth"].publish(depth)
        graph.image_pub.publish(image)
        try:
            return graph.wait_for(lambda: graph.received("panoptic", image.header.stamp),
                                  timeout=3.0, what="output")[0]
        except AssertionError:
            continue
    raise AssertionError("no output")


def test_node_publishes_3d_from_depth(graph, tmp_path, frames):
    pubs = {"depth": graph.node.create_publisher(Image, DEPTH, 10),
            "info": graph.node.create_publisher(CameraInfo, INFO, 10)}
    graph.listen("points", PointCloud2, NODE + "/points")
    graph.listen("markers", MarkerArray, NODE + "/markers")
    graph.listen("counts3d", InstanceCounts, NODE + "/instance_counts")
    with running_node(graph, tmp_path, "-r", f"depth:={DEPTH}", "-r", f"camera_info:={INFO}",
                      weights="demo", input_size=0, use_depth=True, cloud_stride=1) as (_, log):
        graph.wait_for(lambda: pubs["depth"].get_subscription_count() > 0, what="depth sub")
        frame = frames[0]
        # No camera_info yet: 2D outputs, the reason in the log.
        out = send(graph, pubs, frame, 9.0, info=False)
        assert out.segments and not any(s.has_3d for s in out.segments)
        graph.wait_for(lambda: "no camera_info received yet" in log.read_text(),
                       what="the camera_info reason")
        out = send(graph, pubs, frame, 10.0)
        ids = image_to_array(out.ids)
        things = [s for s in out.segments if s.is_thing]
        assert things and all(s.has_3d for s in things)
        # Each thing matched to a ground-truth object (IoU > 0.5): 3D near its position.
        errors = []
        for s in things:
            mask = ids == s.id
            for obj in frame.objects:
                gt = frame.result.ids == obj.id
                if obj.visible and (mask & gt).sum() > 0.5 * (mask | gt).sum():
                    errors.append(np.linalg.norm(np.array(s.centroid) - obj.position_m))
                    assert s.distance <= np.linalg.norm(s.centroid) + 1e-3
                    assert all(lo <= c <= hi for lo, c, hi in
                               zip(s.extent_min, s.centroid, s.extent_max, strict=True))
        assert errors and float(np.median(errors)) < 0.10, errors
        stuff = [s for s in out.segments if not s.is_thing]
        sky = [s for s in stuff if s.label == "sky"]
        # The sky has no depth: at most the few pixels the model gives it along the horizon.
        assert sky and all(s.valid_depth_fraction < 0.05 for s in sky)
        assert all(not s.has_3d or s.valid_depth_fraction > 0 for s in out.segments)
        counts = graph.wait_for(lambda: graph.received("counts3d", out.header.stamp),
                                what="counts")[0]
        for c in counts.counts:
            dists = [s.distance for s in things if s.category_id == c.category_id]
            if dists:
                assert c.nearest_distance == pytest.approx(min(dists))
            else:
                assert math.isnan(c.nearest_distance)

        # The labelled cloud: every valid depth pixel (stride 1), x y z rgb id, is_dense.
        cloud = graph.wait_for(lambda: graph.received("points", out.header.stamp),
                               what="the cloud")[0]
        assert cloud.header == out.header and cloud.is_dense and cloud.height == 1
        fields = {f.name: (f.offset, f.datatype) for f in cloud.fields}
        assert fields == {"x": (0, 7), "y": (4, 7), "z": (8, 7), "rgb": (12, 7), "id": (16, 6)}
        raw = np.frombuffer(bytes(cloud.data), np.uint8).reshape(cloud.width, cloud.point_step)
        xyz = raw[:, :12].copy().view(np.float32)
        pid = raw[:, 16:20].copy().view(np.uint32)[:, 0]
        depth_mm = depth_to_millimetres(frame.depth)
        valid = depth_mm > 0
        assert cloud.width == int(valid.sum())
        v, u = np.nonzero(valid)  # row-major order, as the cloud
        z = depth_mm[v, u] / 1000.0
        cam = frame.camera
        np.testing.assert_allclose(xyz[:, 2], z, rtol=1e-6)
        np.testing.assert_allclose(xyz[:, 0], (u - cam.cx) * z / cam.fx, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(pid, ids[v, u])

        # Markers: a box and a label per thing with 3D; gone objects deleted.
        markers = graph.wait_for(lambda: [m for m in graph.messages("markers")
                                          if m.markers and m.markers[0].header == out.header],
                                 what="markers")[0]
        adds = [m for m in markers.markers if m.action == Marker.ADD]
        assert len(adds) == 2 * len(things)
        labels = [m.text for m in adds if m.type == Marker.TEXT_VIEW_FACING]
        assert all(t.endswith(" m") for t in labels)
        assert all(m.lifetime.sec == 1 for m in adds)

        # Bad depth: 2D outputs continue, the problem is counted.
        wrong = array_to_image(np.zeros(SIZE, np.uint8), "mono8")
        out = send(graph, pubs, frames[1], 10.1, depth=wrong)
        assert out.segments and not any(s.has_3d for s in out.segments)
        invalid = array_to_image(np.zeros(SIZE, np.uint16), "16UC1")
        out = send(graph, pubs, frames[2], 10.2, depth=invalid)
        assert out.segments and not any(s.has_3d for s in out.segments)
        half = depth_to_millimetres(frames[3].depth)[::2, ::2]
        out = send(graph, pubs, frames[3], 10.3, depth=array_to_image(half, "16UC1"))
        assert any(s.has_3d for s in out.segments if s.is_thing)  # scaled to the image
        deleted = graph.wait_for(lambda: [m for m in graph.messages("markers")
                                          if any(k.action == Marker.DELETE for k in m.markers)],
                                 what="a DELETE marker")
        assert deleted
        diag = graph.diagnostics(lambda d: int(d.get("depth_errors", 0)) >= 2
                                 and int(d.get("depth_scaled", 0)) >= 1, what="depth counters")
        assert "mono8" in diag["last_depth_problem"]  # no camera_info, then mono8: 2 errors
        assert diag["depth"] == "on" and diag["camera_info"] == "received"
