"""The test side of a real ROS 2 graph around the node: start/stop the node process, publish
frames, collect outputs and diagnostics, call lifecycle and parameter services.

Waits on events with timeouts, never fixed sleeps. Imported by the node test modules and the
soak benchmark (``test/`` on ``sys.path``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import rclpy
import yaml
from conftest import REPO, ros_env
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from panoptic_ros.msg import InstanceCounts, PanopticSegmentation
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import (
    DescribeParameters,
    GetParameters,
    SetParameters,
    SetParametersAtomically,
)
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage, Image

from panoptic_ros.categories import synthetic
from panoptic_ros.result import PanopticResult
from panoptic_ros.ros.conversions import array_to_image, image_to_array

NODE = "/panoptic_segmentation"
# Lifecycle transitions.
CONFIGURE, ACTIVATE = Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE
DEACTIVATE, CLEANUP = Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP
IMAGE_TOPIC = "/test_camera/image"
H, W = 48, 64
LS = synthetic()
EVENT_TIMEOUT = 60.0  # generous: two busy cores shared with other test runs

PARAMS = {
    "weights": "",
    "backend": "efficientps",
    "variant": "narrow",
    "label_set": "synthetic",
    "device": "cpu",
    "cpu_threads": 1,
    "input_size": 64,
    "autostart": True,
}


def write_params(path: Path, key: str = "panoptic_segmentation", **overrides) -> Path:
    path.write_text(yaml.safe_dump({key: {"ros__parameters": {**PARAMS, **overrides}}}))
    return path


def start_node(params_file: Path, log: Path, *extra: str, exe: list[str] | None = None):
    cmd = (exe or [sys.executable, "-m", "panoptic_ros.ros.node"]) + [
        "--ros-args", "--params-file", str(params_file), "-r", f"image:={IMAGE_TOPIC}",
        "-r", f"image/compressed:={IMAGE_TOPIC}/compressed", *extra]
    env = ros_env(PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    with open(log, "w") as out:
        return subprocess.Popen(cmd, env=env, cwd=log.parent, stdout=out,
                                stderr=subprocess.STDOUT)


def stop_node(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    return proc.returncode


class Graph:
    """The test's side of the graph: its own rclpy context, node and spinning thread."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("panoptic_test_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.cond = threading.Condition()
        self.inbox: dict[str, list] = {}
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        self.image_pub = self.node.create_publisher(Image, IMAGE_TOPIC, 10)
        self.compressed_pub = self.node.create_publisher(
            CompressedImage, IMAGE_TOPIC + "/compressed", 10)
        self.listen("panoptic", PanopticSegmentation, NODE + "/panoptic")
        self.listen("counts", InstanceCounts, NODE + "/instance_counts")
        self.listen("diagnostics", DiagnosticArray, "/diagnostics")
        self._stamp = 0

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - context shut down at teardown
            pass

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    # -- topics ------------------------------------------------------------------------------
    def listen(self, key: str, msg_type, topic: str, qos: QoSProfile | int = 10):
        self.inbox.setdefault(key, [])

        def store(msg) -> None:
            with self.cond:
                self.inbox[key].append((time.monotonic(), msg))
                self.cond.notify_all()

        return self.node.create_subscription(msg_type, topic, store, qos)

    def wait_for(self, predicate: Callable[[], object], timeout: float = EVENT_TIMEOUT,
                 what: str = "condition"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
                self.cond.wait(min(left, 0.2))

    def messages(self, key: str) -> list:
        with self.cond:
            return [m for _, m in self.inbox[key]]

    def received(self, key: str, stamp) -> list:
        with self.cond:
            return [m for _, m in self.inbox[key] if m.header.stamp == stamp]

    def next_stamp(self):
        self._stamp += 1
        msg = Image()
        msg.header.stamp.sec = 1_000 + self._stamp
        msg.header.stamp.nanosec = 123_000 + self._stamp
        return msg.header.stamp

    def send(self, msg, key: str = "panoptic", retries: int = 20, step: float = 3.0):
        """Publish until the node's output with the message's stamp arrives (best effort)."""
        pub = self.compressed_pub if isinstance(msg, CompressedImage) else self.image_pub
        self.wait_for(lambda: pub.get_subscription_count() > 0, what="the node's subscription")
        for _ in range(retries):
            pub.publish(msg)
            try:
                return self.wait_for(lambda: self.received(key, msg.header.stamp), step,
                                     what="output")[0]
            except AssertionError:
                continue
        raise AssertionError(f"no {key} output for stamp {msg.header.stamp}")

    def reports(self, since: float = 0.0) -> list[dict[str, str]]:
        """The node's diagnostics received after ``since`` (monotonic), oldest first."""
        out = []
        with self.cond:
            for t, arr in self.inbox["diagnostics"]:
                for status in arr.status:
                    if t >= since and status.name.startswith(NODE):
                        values = {kv.key: kv.value for kv in status.values}
                        values.update(_level=status.level, _message=status.message, _t=t)
                        out.append(values)
        return out

    def diagnostics(self, predicate=lambda d: True, what="diagnostics") -> dict[str, str]:
        """Wait until the latest diagnostics report satisfies ``predicate``; return it."""
        def latest():
            reports = self.reports()
            return reports[-1] if reports and predicate(reports[-1]) else None

        return self.wait_for(latest, what=what)

    def idle(self, since: float, timeout: float = 120.0) -> dict[str, str]:
        """Wait until the node has stopped by itself; its last report.

        Two reports received after ``since`` agree on the frames received, and every frame
        received is accounted for: processed, dropped or bad.
        """
        def check():
            later = self.reports(since=since)
            if len(later) < 2 or later[-1]["frames_received"] != later[-2]["frames_received"]:
                return None
            d = later[-1]
            done = sum(int(d[k]) for k in ("frames_processed", "frames_dropped", "bad_inputs",
                                          "processing_errors"))
            return d if int(d["frames_received"]) == done else None

        return self.wait_for(check, timeout=timeout, what="the node to go idle")

    def stream(self, rgb: np.ndarray, n_frames: int, rate: float = 30.0):
        """Publish ``n_frames`` at ``rate`` Hz (bounded load); stamp -> monotonic send time."""
        self.wait_for(lambda: self.image_pub.get_subscription_count() > 0)
        sent_at: dict[tuple[int, int], float] = {}
        start = time.monotonic()
        for k in range(n_frames):
            msg = image_msg(self, rgb)
            delay = start + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the publisher, not synchronisation
            sent_at[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.monotonic()
            self.image_pub.publish(msg)
        return sent_at

    def outputs(self, sent_at) -> list[tuple[float, tuple[int, int]]]:
        """(arrival time, stamp) of the panoptic outputs of frames in ``sent_at``."""
        with self.cond:
            return [(t, (m.header.stamp.sec, m.header.stamp.nanosec))
                    for t, m in self.inbox["panoptic"]
                    if (m.header.stamp.sec, m.header.stamp.nanosec) in sent_at]

    # -- services ----------------------------------------------------------------------------
    def call(self, srv_type, name: str, request, timeout: float = EVENT_TIMEOUT):
        client = self.node.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"service {name} missing"
            done = threading.Event()
            future = client.call_async(request)
            future.add_done_callback(lambda _: done.set())
            assert done.wait(timeout), f"service {name} did not answer"
            return future.result()
        finally:
            self.node.destroy_client(client)

    def state(self, node: str = NODE) -> str:
        return self.call(GetState, node + "/get_state", GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        req = ChangeState.Request(transition=Transition(id=transition_id))
        return self.call(ChangeState, NODE + "/change_state", req, timeout=180).success

    def set_params(self, **values):
        req = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return self.call(SetParameters, NODE + "/set_parameters", req).results

    def set_params_atomically(self, **values):
        """Set ``values`` in one ``set_parameters_atomically`` call: all applied or none."""
        req = SetParametersAtomically.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return self.call(SetParametersAtomically, NODE + "/set_parameters_atomically",
                         req).result

    def describe(self, *names: str) -> list:
        r"""``ParameterDescriptor``\ s of the node's parameters (``[]`` if one is undeclared)."""
        res = self.call(DescribeParameters, NODE + "/describe_parameters",
                        DescribeParameters.Request(names=list(names)))
        return list(res.descriptors)

    def list_params(self) -> set[str]:
        from rcl_interfaces.srv import ListParameters

        res = self.call(ListParameters, NODE + "/list_parameters", ListParameters.Request())
        return set(res.result.names)

    def get_params(self, *names: str) -> list:
        res = self.call(GetParameters, NODE + "/get_parameters",
                        GetParameters.Request(names=list(names)))
        return [Parameter.from_parameter_msg(ParameterMsg(name=n, value=v)).value
                for n, v in zip(names, res.values, strict=True)]


# -- synthetic input -----------------------------------------------------------------------------
def scene_rgb(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (90, 140, 230)
    img[h // 2 :] = (60, 120, 50)
    img[h // 4 : h // 2 + 4, w // 5 : w // 3] = (220, 30, 40)
    img[h // 2 : h - 6, w // 2 : w - 8] = (20, 20, 160)
    return np.clip(img + rng.integers(0, 12, img.shape), 0, 255).astype(np.uint8)


def encode_as(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """Raw pixels of ``rgb`` in ``encoding``'s layout (input for array_to_image)."""
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        order = {"rgb8": [0, 1, 2], "bgr8": [2, 1, 0], "rgba8": [0, 1, 2], "bgra8": [2, 1, 0]}
        out = rgb[..., order[encoding]]
        if encoding.endswith("a8"):
            out = np.concatenate([out, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], 2)
        return np.ascontiguousarray(out)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if encoding == "mono8":
        return grey
    if encoding == "mono16":
        return grey.astype(np.uint16) * 257
    if encoding.startswith("bayer_"):
        layout = {"rggb": [[0, 1], [1, 2]], "bggr": [[2, 1], [1, 0]],
                  "gbrg": [[1, 2], [0, 1]], "grbg": [[1, 0], [2, 1]]}[encoding[6:10]]
        channel = np.tile(np.array(layout), (rgb.shape[0] // 2, rgb.shape[1] // 2))
        return np.take_along_axis(rgb, channel[..., None], axis=2)[..., 0]
    # Packed 4:2:2, BT.601 studio range (what cameras send): YUYV pairs, UYVY swapped.
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    yuyv = np.empty(rgb.shape[:2] + (2,), np.float64)
    yuyv[..., 0] = y
    yuyv[:, 0::2, 1] = (u[:, 0::2] + u[:, 1::2]) / 2
    yuyv[:, 1::2, 1] = (v[:, 0::2] + v[:, 1::2]) / 2
    yuyv = np.clip(np.rint(yuyv), 0, 255).astype(np.uint8)
    if encoding in ("yuv422_yuy2", "yuyv"):
        return yuyv
    return np.ascontiguousarray(yuyv[..., ::-1])  # (C, Y) pairs: U Y0 V Y1


def image_msg(graph: Graph, rgb: np.ndarray | None = None, encoding: str = "rgb8",
              frame_id: str = "test_camera_optical") -> Image:
    rgb = scene_rgb() if rgb is None else rgb
    msg = array_to_image(encode_as(rgb, encoding), encoding)
    msg.header.stamp = graph.next_stamp()
    msg.header.frame_id = frame_id
    return msg


def check_panoptic(out: PanopticSegmentation, sent: Image) -> np.ndarray:
    assert out.header == sent.header and out.ids.header == sent.header
    assert (out.ids.height, out.ids.width) == (sent.height, sent.width)
    assert out.ids.encoding == "32SC1" and out.label_divisor == 1000
    ids = image_to_array(out.ids)
    assert ids.dtype == np.int32
    again = PanopticResult.from_ids(ids, LS, out.label_divisor)
    assert [s.id for s in out.segments] == [s.id for s in again.segments]
    for info, seg in zip(out.segments, again.segments, strict=True):
        assert (info.area, info.category_id, info.instance_id, info.is_thing) == (
            seg.area, seg.category_id, seg.instance_id, seg.is_thing)
        assert (info.bbox.x_offset, info.bbox.y_offset, info.bbox.width,
                info.bbox.height) == seg.bbox
        assert info.label == LS.by_id(info.category_id).name
    return ids




class running_node:  # noqa: N801 - a context manager used as a function
    """A node process for one test: started with ``params``, stopped (SIGINT, exit 0) after.

    ``with running_node(graph, tmp_path, autostart=False, ...) as (proc, log):``; with
    ``autostart`` (the default) it waits until the node is active.
    """

    def __init__(self, graph: Graph, tmp: Path, *extra: str, **params) -> None:
        self.graph, self.tmp, self.extra, self.params = graph, tmp, extra, params

    def __enter__(self):
        file = write_params(self.tmp / "params.yaml", **self.params)
        self.log = self.tmp / "node.log"
        self.proc = start_node(file, self.log, *self.extra)
        want = "active" if self.params.get("autostart", True) else "unconfigured"
        try:
            self.graph.wait_for(lambda: self.proc.poll() is not None or self._state() == want,
                                timeout=180, what=f"the node to become {want}")
            assert self.proc.poll() is None, self.log.read_text()
        except BaseException:
            stop_node(self.proc)
            raise
        return self.proc, self.log

    def _state(self) -> str:
        try:
            return self.graph.state()
        except AssertionError:  # no answer (yet): ask again
            return ""

    def __exit__(self, *exc) -> None:
        code = stop_node(self.proc)
        # The next node of the same name must not meet this one's services in the graph cache.
        self.graph.wait_for(lambda: NODE + "/get_state" not in dict(
            self.graph.node.get_service_names_and_types()), timeout=30,
            what="the stopped node to leave the graph")
        assert code == 0, self.log.read_text()[-4000:]
