"""Several cameras: one node serving N cameras vs N single-camera nodes, side by side.

    PYTHONPATH=. .venv/bin/python bench/bench_cameras.py                 # 4 cameras, 40 s each
    PYTHONPATH=. .venv/bin/python bench/bench_cameras.py --smoke         # 2 cameras, seconds

One run, two set-ups, each on the real ROS 2 graph (loopback only, a domain of this run, the
loopback Fast DDS profile), the bundled model on the CPU, every camera at ``--rate`` Hz
(faster than the node can serve all of them, so both set-ups run flat out):

* ``one node``: ``cameras: [cam0, ..., camN-1]``, ``cpu_threads`` = cores: the newest frame of
  every camera runs as one batch;
* ``N nodes``: one ``panoptic_node`` process per camera, ``cpu_threads`` 1 each (more would
  oversubscribe the cores and only slow the baseline down).

Measured per set-up after ``--warmup`` seconds: the processed frames of all cameras per second
(from each camera's ``/diagnostics`` status) and the resident memory (VmRSS, summed over the
node processes). Goals (issue 16): memory of the one node <= 0.4x that of the N nodes, total
processed rate >= 1.0x. The camera frames are synthetic scenes, 256x320 rgb8, published by
this process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "panoptic_ros" / "ros" / "fastdds_loopback.xml"
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_STATIC_PEERS", None)
os.environ.pop("ROS_LOCALHOST_ONLY", None)
os.environ["ROS_DOMAIN_ID"] = (os.environ.get("PANOPTIC_TEST_DOMAIN_ID")
                               or str(1 + os.getpid() % 100))
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(PROFILE))
sys.path.insert(0, str(REPO))

import rclpy  # noqa: E402
from _host import host_line  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from panoptic_ros.data.synthetic import SceneConfig, generate_scene, scene_rng  # noqa: E402
from panoptic_ros.ros.conversions import array_to_image  # noqa: E402

NAMESPACE = "/bench_cameras"
GOAL_MEMORY = 0.4
GOAL_RATE = 1.0


def rss_mib(pid: int) -> float:
    """Resident memory of a process (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def start_node(workdir: Path, name: str, params: dict, remaps: list[str]) -> subprocess.Popen:
    """A ``panoptic_node`` process named ``name`` in this benchmark's namespace."""
    file = workdir / f"{name}.yaml"
    file.write_text(json.dumps({f"{NAMESPACE}/{name}": {"ros__parameters": params}}))
    cmd = [sys.executable, "-m", "panoptic_ros.ros.node", "--ros-args", "--params-file",
           str(file), "-r", f"__ns:={NAMESPACE}", "-r", f"__node:={name}"]
    for remap in remaps:
        cmd += ["-r", remap]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    log = open(workdir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Rig:
    """This process's side: the cameras' publishers and a diagnostics listener."""

    def __init__(self, cameras: list[str], height: int, width: int) -> None:
        rclpy.init()
        self.node = rclpy.create_node("bench_cameras_rig", namespace=NAMESPACE)
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {c: self.node.create_publisher(Image, f"{c}/image", qos) for c in cameras}
        config = SceneConfig(height=height, width=width)
        self.frames = [array_to_image(generate_scene(scene_rng(7, k), config).image, "rgb8")
                       for k in range(8)]
        self.processed: dict[str, int] = {}
        self.lock = threading.Lock()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _on_diag(self, msg: DiagnosticArray) -> None:
        with self.lock:
            for status in msg.status:
                if not status.name.startswith(NAMESPACE):
                    continue
                values = {kv.key: kv.value for kv in status.values}
                self.processed[status.name] = int(values.get("frames_processed", 0))

    def total(self) -> int:
        with self.lock:
            return sum(self.processed.values())

    def stream(self, rate: float, seconds: float) -> None:
        """Publish every camera's next frame at ``rate`` Hz for ``seconds`` (bounded)."""
        start, k = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            now = self.node.get_clock().now().to_msg()
            for name, pub in self.pubs.items():
                msg = self.frames[k % len(self.frames)]
                msg.header.stamp = now
                msg.header.frame_id = f"{name}_optical"
                pub.publish(msg)
            k += 1
            time.sleep(max(0.0, start + k / rate - time.monotonic()))

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


def run(rig: Rig, procs: list[subprocess.Popen], statuses: int, args) -> dict:
    """Warm up, then measure the processed rate and memory of ``procs``."""
    deadline = time.monotonic() + 300
    while len(rig.processed) < statuses:  # every camera's status has arrived: all active
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise SystemExit("the nodes did not start (see the logs)")
        rig.stream(args.rate, 1.0)
    rig.stream(args.rate, args.warmup)
    before, t0 = rig.total(), time.monotonic()
    rig.stream(args.rate, args.duration)
    time.sleep(1.5)  # the next 1 Hz report
    rate = (rig.total() - before) / (time.monotonic() - t0)
    memory = sum(rss_mib(p.pid) for p in procs)
    return {"rate_hz": rate, "rss_mib": memory}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--rate", type=float, default=10.0, help="per camera, Hz")
    parser.add_argument("--duration", type=float, default=40.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--size", default="256x320")
    parser.add_argument("--smoke", action="store_true",
                        help="2 cameras of 64x80 at 5 Hz, 3 s after 2 s, a random tiny model")
    args = parser.parse_args()
    weights = "demo"
    if args.smoke:
        args.cameras, args.rate, args.duration, args.warmup = 2, 5.0, 3.0, 2.0
        args.size, weights = "64x80", ""
    height, width = (int(v) for v in args.size.split("x"))
    names = [f"cam{k}" for k in range(args.cameras)]
    cores = len(os.sched_getaffinity(0))
    print(host_line())
    rig = Rig(names, height, width)
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            model = {"weights": weights, "input_size": 64 if args.smoke else 0}
            one = [start_node(work, "multi", {"cameras": names, "cpu_threads": cores, **model},
                              [])]
            try:
                results["one node"] = run(rig, one, len(names), args)
            finally:
                stop(one)
            rig.processed.clear()
            many = [start_node(work, f"single_{n}", {"cpu_threads": 1, **model},
                               [f"image:={n}/image"]) for n in names]
            try:
                results[f"{len(names)} nodes"] = run(rig, many, len(names), args)
            finally:
                stop(many)
    finally:
        rig.close()
    a, b = results["one node"], results[f"{len(names)} nodes"]
    print(f"\n{len(names)} cameras at {args.rate:g} Hz each, {height}x{width}, "
          f"{'bundled' if weights else 'random tiny'} model, "
          f"{args.duration:g} s measured after {args.warmup:g} s")
    for name, r in results.items():
        print(f"{name:10s} processed {r['rate_hz']:6.2f} frames/s in all   "
              f"memory {r['rss_mib']:7.0f} MiB")
    memory, rate = a["rss_mib"] / b["rss_mib"], a["rate_hz"] / max(b["rate_hz"], 1e-9)
    print(f"memory one/many {memory:.2f}x (goal <= {GOAL_MEMORY}x): "
          f"{'PASS' if memory <= GOAL_MEMORY else 'FAIL'}")
    print(f"rate one/many {rate:.2f}x (goal >= {GOAL_RATE}x): "
          f"{'PASS' if rate >= GOAL_RATE else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
