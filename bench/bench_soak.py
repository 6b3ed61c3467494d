"""Soak test of the node: memory and output age under a live camera, and lifecycle cycles.

    PYTHONPATH=. .venv/bin/python bench/bench_soak.py                     # 10 min + 100 cycles
    PYTHONPATH=. .venv/bin/python bench/bench_soak.py --minutes 2 --cycles 20
    PYTHONPATH=. .venv/bin/python bench/bench_soak.py --breakdown          # memory accounting

The node runs as its own process (``python -m panoptic_ros.ros.node``, bundled demo model,
``device: cpu``); this process is the camera (640x480 rgb8 at 30 Hz, synthetic scenes made
once at start and stamped with the wall clock at publish) and the consumer of ``~/panoptic``
and ``/diagnostics``.

* Phase 1, streaming (``--minutes``): RSS of the node process (``/proc/PID/status``) every
  ``--sample-s`` seconds; per minute the frames sent, the outputs, the drops (frames sent that
  got no output: the node keeps only the newest frame, so most frames are dropped by design
  when the camera is faster than the model) and the output age percentiles (age = arrival of
  ``~/panoptic`` here minus the publish time of the frame with that stamp).
* Phase 2, lifecycle (``--cycles``): the camera keeps streaming; every ``--cycle-s`` seconds
  deactivate -> activate through ``/panoptic_soak/panoptic_segmentation/change_state``, wait
  for the first output after activation, and read RSS after each cycle.

Goals, each printed PASS/FAIL: RSS growth after warm-up (the first ``--warmup-s``) <= 20 MiB
over the whole run (median RSS of the last minute against that of the first minute after
warm-up: single samples fall anywhere in a frame's allocations); least-squares slope of RSS
after each cycle <= 0.5 MiB per cycle; output age p50 of the last minute <= 1.2x the first
minute's; zero errors (diagnostics ``processing_errors``, ``bad_inputs``, ERROR lines of the
node's log, failed transitions).

``--breakdown`` instead starts the node with ``autostart: false`` under a small probe (the node's
own ``main`` plus a control thread reading commands on stdin) and reports, stage by stage
(imports, model loaded, active, first frame, N frames at 640x480 and, in a second node process,
at 1920x1080, deactivated): RSS split by mapping kind (``/proc/PID/smaps``: libraries, glibc
arenas, ``[heap]``, other anonymous memory, thread stacks, Fast DDS shared memory), glibc's
``mallinfo2`` (bytes in use and free bytes kept by malloc), RSS after a ``malloc_trim(0)`` and
the peak (VmHWM). ``--no-trim`` switches the node's own trimming off (glibc's default
behaviour, for comparison); ``--tracemalloc`` adds the top Python allocation sites.

Network safety: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and ``ROS_DOMAIN_ID`` (``--domain-id``,
default 88, or the test suite's domain) for this process and the node, and the package's Fast
DDS profile ``panoptic_ros/ros/fastdds_loopback.xml`` (32 MiB shared-memory segment, UDP bound
to 127.0.0.1) so that 640x480 frames are delivered. Everything stops by itself: the camera after
the run, the node on SIGINT (SIGKILL after 30 s), and the node also when this process dies.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "panoptic_ros" / "ros" / "fastdds_loopback.xml"
NAMESPACE = "/panoptic_soak"
"""The node's namespace: its services and status never clash with another graph's
``/panoptic_segmentation`` that shares the domain (a test run whose domain happens to match)."""
NODE = NAMESPACE + "/panoptic_segmentation"
CAMERA_TOPIC = "/soak_camera/image"
DEFAULT_DOMAIN_ID = 88
MIB = 1024.0 * 1024.0

GOAL_GROWTH_MIB = 20.0
GOAL_SLOPE_MIB = 0.5
GOAL_AGE_RATIO = 1.2


# -- host and environment --------------------------------------------------------------------
def host_description() -> str:
    """CPU model, cores usable here, the SIMD flags that matter to torch, memory, versions."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
            if f in flags]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / MIB:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    versions = []
    for dist in ("torch", "numpy"):
        try:
            from importlib.metadata import version

            versions.append(f"{dist} {version(dist)}")
        except Exception:  # noqa: BLE001 - informational only
            pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"host: {model}, {cores} cores, flags {' '.join(simd) or 'none of avx2/avx512'}"
            f"{mem}, kernel {platform.release()}, Python {platform.python_version()}, "
            f"{', '.join(versions)}, load average {load:.2f}")


def setup_environment(domain_id: int) -> None:
    """Loopback-only discovery, this run's domain and the loopback Fast DDS profile."""
    if not 0 <= domain_id <= 101:
        raise SystemExit(f"--domain-id must lie in 0..101, got {domain_id}")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ.pop("ROS_STATIC_PEERS", None)
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(PROFILE))


# -- the node process ------------------------------------------------------------------------
def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when this benchmark dies (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))


def write_params(path: Path, **params) -> Path:
    """A parameters file of the node (JSON is valid YAML)."""
    path.write_text(json.dumps({NODE: {"ros__parameters": params}}))
    return path


def start_node(workdir: Path, params: dict, probe: bool = False,
               env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the node (``probe``: under this script's control thread, stdin a pipe)."""
    file = write_params(workdir / "params.yaml", **params)
    head = ([sys.executable, str(Path(__file__).resolve()), "--probe-node"] if probe
            else [sys.executable, "-m", "panoptic_ros.ros.node"])
    cmd = head + ["--ros-args", "--params-file", str(file), "-r", f"__ns:={NAMESPACE}",
                  "-r", f"image:={CAMERA_TOPIC}"]
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    with open(workdir / "node.log", "w") as log:
        return subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                                stdin=subprocess.PIPE if probe else subprocess.DEVNULL)


def stop_node(proc: subprocess.Popen) -> int | None:
    """SIGINT (clean ROS shutdown), SIGKILL after 30 s; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon, RssFile, RssShmem, VmHWM (MiB) and Threads of a process."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024.0
        elif key == "Threads":
            out[key] = int(value)
    return out


SMAPS_KINDS = ("libraries", "arenas", "heap", "anon", "stacks", "dds_shm", "other")


def smaps_breakdown(pid: int) -> dict[str, float]:
    """RSS of a process by kind of mapping, MiB (from ``/proc/PID/smaps``).

    * libraries: file-backed mappings (code and data of torch, rclpy, ...);
    * arenas: glibc's per-thread malloc arenas (anonymous, 64 MiB-aligned, reserved 64 MiB);
    * heap: ``[heap]``, glibc's main arena (the main thread's mallocs);
    * stacks: anonymous mappings right after a guard page (thread stacks) and ``[stack]``;
    * dds_shm: Fast DDS shared-memory segments and ports (``/dev/shm``);
    * anon: the rest of anonymous memory: allocations above malloc's mmap threshold (large
      numpy/torch buffers), Python's object arenas, libraries' zero pages;
    * other: vdso, vvar and the like.
    """
    maps: list[dict] = []
    current: dict | None = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if "-" in parts[0] and ":" not in parts[0]:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            current = {"start": start, "end": end, "perms": parts[1],
                       "path": " ".join(parts[5:]) if len(parts) > 5 else "", "rss": 0}
            maps.append(current)
        elif parts[0] == "Rss:" and current is not None:
            current["rss"] = int(parts[1])
    out = dict.fromkeys(SMAPS_KINDS, 0.0)
    arena_align = 64 << 20
    for i, m in enumerate(maps):
        path, kb = m["path"], m["rss"] / 1024.0
        prev = maps[i - 1] if i else None
        nxt = maps[i + 1] if i + 1 < len(maps) else None
        if path.startswith("/dev/shm/"):
            kind = "dds_shm"
        elif path == "[heap]":
            kind = "heap"
        elif path == "[stack]":
            kind = "stacks"
        elif path.startswith("/"):
            kind = "libraries"
        elif path.startswith("["):
            kind = "other"
        elif (m["start"] % arena_align == 0 and "rw" in m["perms"]
              and (m["end"] - m["start"] == arena_align
                   or (nxt is not None and nxt["start"] == m["end"] and nxt["perms"] == "---p"
                       and nxt["path"] == ""))):
            kind = "arenas"
        elif (prev is not None and prev["end"] == m["start"] and prev["perms"] == "---p"
              and prev["path"] == "" and prev["end"] - prev["start"] <= 64 << 10):
            kind = "stacks"
        else:
            kind = "anon"
        out[kind] += kb
    return out


# -- the camera and consumer side -------------------------------------------------------------
def make_frames(height: int, width: int, count: int) -> list:
    """``count`` synthetic rgb8 ``sensor_msgs/Image`` scenes (seed 2026, new to the model)."""
    from panoptic_ros.data.synthetic import SceneConfig, generate_scene, scene_rng
    from panoptic_ros.ros.conversions import array_to_image

    config = SceneConfig(height=height, width=width)
    frames = []
    for k in range(count):
        msg = array_to_image(generate_scene(scene_rng(2026, k), config).image, "rgb8")
        msg.header.frame_id = "soak_camera_optical"
        frames.append(msg)
    return frames


COUNTERS = ("frames_received", "frames_processed", "frames_dropped", "bad_inputs",
            "processing_errors")


@dataclass
class Totals:
    """Node counters summed over activations (diagnostics restart them at each activate)."""

    sums: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    last: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))

    def add(self, report: dict[str, str]) -> None:
        for key in COUNTERS:
            value = int(report.get(key, 0))
            prev = self.last[key]
            self.sums[key] += value - prev if value >= prev else value
            self.last[key] = value


class Graph:
    """This process's side: the camera publisher, ``~/panoptic`` and diagnostics listeners,
    and the lifecycle client; its own rclpy context, spun in a thread."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from panoptic_ros.msg import PanopticSegmentation
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("soak_bench", context=self.context)
        self.cond = threading.Condition()
        self.outputs: list[tuple[float, tuple[int, int]]] = []  # (arrival, stamp)
        self.totals = Totals()
        self.latest: dict[str, str] = {}
        self.reports = 0
        # A reliable camera (the node's ``auto`` reliability then subscribes reliable, which
        # repairs lost fragments of large frames), keep last 1: never blocks, never queues.
        camera_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                reliability=ReliabilityPolicy.RELIABLE)
        self.camera = self.node.create_publisher(Image, CAMERA_TOPIC, camera_qos)
        out_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(PanopticSegmentation, NODE + "/panoptic",
                                      self._on_panoptic, out_qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - the context shut down at close
            pass

    def _on_panoptic(self, msg) -> None:
        now = time.monotonic()
        with self.cond:
            self.outputs.append((now, (msg.header.stamp.sec, msg.header.stamp.nanosec)))
            self.cond.notify_all()

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(NODE):
                report = {kv.key: kv.value for kv in status.values}
                with self.cond:
                    self.totals.add(report)
                    self.latest = report
                    self.reports += 1
                    self.cond.notify_all()

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Wait until the node has finished every frame it received (camera stopped).

        Two diagnostics reports after the call, the last one accounting for every frame
        received: processed, dropped, bad or failed.
        """
        with self.cond:
            start = self.reports

        def idle() -> bool:
            if self.reports < start + 2:
                return False
            done = sum(int(self.latest.get(k, 0)) for k in COUNTERS[1:])
            return int(self.latest.get("frames_received", 0)) == done

        self.wait_for(idle, timeout, "the node to finish its frames")

    def wait_for(self, predicate: Callable[[], object], timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (value := predicate()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
                self.cond.wait(min(left, 0.2))
            return value

    def call(self, srv_type, name: str, request, timeout: float = 120.0):
        """One service call with a client of its own (as the tests do): a client kept across
        node processes can send to a server that is gone and wait forever."""
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} missing")
            done = threading.Event()
            future = client.call_async(request)
            future.add_done_callback(lambda _: done.set())
            if not done.wait(timeout):
                raise TimeoutError(f"service {name} did not answer")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self.call(GetState, NODE + "/get_state", GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        req = ChangeState.Request(transition=Transition(id=transition_id))
        return bool(self.call(ChangeState, NODE + "/change_state", req, timeout=180.0).success)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.thread.join(10)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


class Camera:
    """Publishes the frames round-robin at ``rate`` Hz in a thread, wall-clock stamped.

    A tick more than one period late is skipped (counted), so the rate never drifts upwards
    after a stall of this process. ``sent`` maps stamp -> monotonic publish time.
    """

    def __init__(self, graph: Graph, frames: list, rate: float) -> None:
        self.graph, self.frames, self.period = graph, frames, 1.0 / rate
        self.sent: dict[tuple[int, int], float] = {}
        self.skipped = 0
        self.publish_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-camera", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        start, k = time.monotonic(), 0
        while not self._stop.is_set():
            tick = start + k * self.period
            delay = tick - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)  # pacing the camera
                continue
            if -delay > self.period:
                self.skipped += 1
                k += 1
                continue
            msg = self.frames[k % len(self.frames)]
            ns = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = ns // 10**9, ns % 10**9
            sent = time.monotonic()
            try:
                self.graph.camera.publish(msg)
            except Exception:  # noqa: BLE001 - Fast DDS "cannot publish data" under load
                self.publish_errors += 1
            else:
                self.sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = sent
            k += 1


class RssSampler:
    """Reads the node's ``/proc/PID/status`` every ``period`` s in a thread."""

    def __init__(self, pid: int, period: float) -> None:
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), proc_status(self.pid)))
            except OSError:
                return
            self._stop.wait(self.period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# -- statistics ------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (0 for fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# -- the soak --------------------------------------------------------------------------------
def wait_until_state(graph: Graph, proc: subprocess.Popen, workdir: Path, state: str) -> None:
    """Wait (up to 300 s) for the node's lifecycle ``state``; fail early on an error."""
    log = workdir / "node.log"

    def settled() -> bool:
        if proc.poll() is not None or "[ERROR]" in log.read_text(errors="replace"):
            return True
        return graph.state() == state

    graph.wait_for(settled, 300, f"the node to become {state}")
    if proc.poll() is not None or graph.state() != state:
        raise RuntimeError(f"the node did not become {state} (exit code {proc.poll()}):\n"
                           + log.read_text(errors="replace")[-3000:])


def node_params(args: argparse.Namespace, autostart: bool = True) -> dict:
    return {"weights": "demo", "device": "cpu", "cpu_threads": args.cpu_threads,
            "autostart": autostart}


def run_soak(args: argparse.Namespace) -> int:
    from lifecycle_msgs.msg import Transition

    stream_s = args.minutes * 60.0
    print(f"soak: node = python -m panoptic_ros.ros.node (demo model, cpu, cpu_threads "
          f"{args.cpu_threads}); camera {args.width}x{args.height} rgb8 at {args.rate:g} Hz "
          f"(reliable, keep last 1); streaming {stream_s:g} s, then {args.cycles} lifecycle "
          f"cycles every {args.cycle_s:g} s; RSS every {args.sample_s:g} s; warm-up "
          f"{args.warmup_s:g} s; domain {os.environ['ROS_DOMAIN_ID']}, Fast DDS profile "
          f"{os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE')}"
          + (f"; node environment {' '.join(args.node_env)}" if args.node_env else ""))
    frames = make_frames(args.height, args.width, args.scenes)
    workdir = Path(tempfile.mkdtemp(prefix="panoptic_soak_"))
    graph = Graph()  # the camera exists before the node subscribes: it chooses reliable
    proc = start_node(workdir, node_params(args),
                      env=dict(kv.split("=", 1) for kv in args.node_env))
    sampler = camera = None
    try:
        t_start = time.monotonic()
        wait_until_state(graph, proc, workdir, "active")
        graph.wait_for(lambda: graph.camera.get_subscription_count() > 0, 60,
                       "the node's image subscription")
        idle = proc_status(proc.pid)
        print(f"node pid {proc.pid} active after {time.monotonic() - t_start:.1f} s: RSS "
              f"{idle['VmRSS']:.0f} MiB idle (anon {idle['RssAnon']:.0f}, file "
              f"{idle['RssFile']:.0f}, shmem {idle['RssShmem']:.0f}), {idle['Threads']:.0f} "
              f"threads; log {workdir / 'node.log'}")
        sampler = RssSampler(proc.pid, args.sample_s)
        camera = Camera(graph, frames, args.rate)
        t0 = time.monotonic()
        camera.start()

        # Phase 1: streaming.
        print(f"\n{'t (s)':>7} {'RSS MiB':>8} {'anon':>6} {'file':>6} {'shmem':>6} "
              f"{'threads':>7}")
        printed = 0
        while time.monotonic() - t0 < stream_s:
            if proc.poll() is not None:
                raise RuntimeError(f"the node exited {proc.returncode} while streaming")
            time.sleep(min(args.sample_s, max(0.05, t0 + stream_s - time.monotonic())))
            for t, s in sampler.samples[printed:]:
                print(f"{t - t0:7.1f} {s['VmRSS']:8.1f} {s['RssAnon']:6.1f} "
                      f"{s['RssFile']:6.1f} {s['RssShmem']:6.1f} {s['Threads']:7.0f}",
                      flush=True)
            printed = len(sampler.samples)
        t1 = time.monotonic()
        with graph.cond:
            totals_stream = dict(graph.totals.sums)

        # Phase 2: lifecycle cycles, camera still streaming.
        cycle_rss: list[float] = []
        cycle_times: list[float] = []
        failed = 0
        if args.cycles:
            print(f"\n{'cycle':>5} {'deact s':>8} {'act s':>6} {'1st out s':>9} "
                  f"{'RSS MiB':>8} {'threads':>7}")
        for c in range(1, args.cycles + 1):
            c0 = time.monotonic()
            ok = graph.transition(Transition.TRANSITION_DEACTIVATE)
            c1 = time.monotonic()
            ok = graph.transition(Transition.TRANSITION_ACTIVATE) and ok
            c2 = time.monotonic()
            if not ok:
                failed += 1
                print(f"{c:5d} transition failed; state {graph.state()}")
                if graph.state() != "active":
                    break
                continue
            with graph.cond:
                before = len(graph.outputs)
            graph.wait_for(lambda b=before: len(graph.outputs) > b, 120,
                           "an output after activation")
            c3 = time.monotonic()
            left = c0 + args.cycle_s - time.monotonic()
            if left > 0:
                time.sleep(left)  # the cycle's period: frames flow, then RSS is read
            s = proc_status(proc.pid)
            cycle_rss.append(s["VmRSS"])
            cycle_times.append(c3 - c2)
            if c <= 3 or c % max(1, args.cycles // 20) == 0 or c == args.cycles:
                print(f"{c:5d} {c1 - c0:8.2f} {c2 - c1:6.2f} {c3 - c2:9.2f} "
                      f"{s['VmRSS']:8.1f} {s['Threads']:7.0f}", flush=True)
        t2 = time.monotonic()
        # Two more diagnostics reports, so the counters include the last frames.
        with graph.cond:
            seen = graph.reports
        graph.wait_for(lambda: graph.reports >= seen + 2, 30, "diagnostics")
        camera.stop()
        time.sleep(1.0)  # outputs of the last frames arrive
        sampler.stop()
        final = proc_status(proc.pid)
        kinds = smaps_breakdown(proc.pid)
    finally:
        if camera is not None:
            camera.stop()
        if sampler is not None:
            sampler.stop()
        code = stop_node(proc)
        graph.close()
    log_text = (workdir / "node.log").read_text(errors="replace")
    log_errors = sum("[ERROR]" in ln for ln in log_text.splitlines())

    # -- report ----------------------------------------------------------------------------
    sent = dict(camera.sent)
    with graph.cond:
        outputs = list(graph.outputs)
        totals = dict(graph.totals.sums)
    ages = [(arr - sent[st], sent[st]) for arr, st in outputs if st in sent]
    answered = {st for _, st in outputs if st in sent}
    bucket = args.bucket_s
    n_buckets = max(1, int(round(stream_s / bucket)))
    print(f"\nstreaming, per {bucket:g} s (age = output arrival - frame publish, ms)")
    print(f"{'from s':>6} {'sent':>6} {'outputs':>7} {'drops':>6} {'p50':>7} {'p95':>7} "
          f"{'max':>7} {'RSS MiB':>8}")
    rows = []
    for b in range(n_buckets):
        lo, hi = t0 + b * bucket, min(t0 + (b + 1) * bucket, t1)
        sent_b = [st for st, t in sent.items() if lo <= t < hi]
        age_b = [a * 1e3 for a, t in ages if lo <= t < hi]
        rss_b = [s["VmRSS"] for t, s in sampler.samples if lo <= t < hi]
        drops = sum(st not in answered for st in sent_b)
        row = (percentile(age_b, 0.5), percentile(age_b, 0.95))
        rows.append(row)
        print(f"{b * bucket:6.0f} {len(sent_b):6d} {len(age_b):7d} {drops:6d} {row[0]:7.1f} "
              f"{row[1]:7.1f} {max(age_b, default=float('nan')):7.1f} "
              f"{(rss_b[-1] if rss_b else float('nan')):8.1f}")
    sent_stream = [st for st, t in sent.items() if t < t1]
    sent_cycles = [st for st, t in sent.items() if t >= t1]
    ages_cycles = [a * 1e3 for a, t in ages if t >= t1]
    print(f"streaming: sent {len(sent_stream)}, outputs "
          f"{sum(st in answered for st in sent_stream)}, drops "
          f"{sum(st not in answered for st in sent_stream)}; node received "
          f"{totals_stream['frames_received']}, processed {totals_stream['frames_processed']}, "
          f"dropped (replaced by a newer frame) {totals_stream['frames_dropped']}; camera "
          f"skipped {camera.skipped} late ticks, {camera.publish_errors} publish errors")
    if args.cycles:
        print(f"lifecycle: {len(cycle_rss)} cycles ({failed} failed) in {t2 - t1:.0f} s; sent "
              f"{len(sent_cycles)}, outputs {sum(st in answered for st in sent_cycles)}; age "
              f"p50 {percentile(ages_cycles, 0.5):.1f} ms, p95 "
              f"{percentile(ages_cycles, 0.95):.1f} ms; first output after activate: median "
              f"{percentile(cycle_times, 0.5):.2f} s, max {max(cycle_times, default=0):.2f} s")
    print(f"node: exit code {code}, {log_errors} ERROR lines in its log; totals over the run: "
          + ", ".join(f"{k} {v}" for k, v in totals.items()))

    if not ages:
        print("no output reached the benchmark: nothing to judge (see the node's log)")
        return 2
    # Growth: median RSS of the last window (--bucket-s) of the run against that of the first
    # window after warm-up. A single sample lands anywhere in a frame's allocation cycle (the
    # working set of one 640x480 frame is tens of MiB), medians of windows do not.
    samples = [(t, s["VmRSS"]) for t, s in sampler.samples] + [(time.monotonic(), final["VmRSS"])]
    post = [(t, r) for t, r in samples if t >= t0 + args.warmup_s] or samples[-1:]
    t_base, t_end = post[0][0], post[-1][0]
    base = statistics.median(r for t, r in post if t <= t_base + args.bucket_s)
    end = statistics.median(r for t, r in post if t >= t_end - args.bucket_s)
    peak = max(r for _, r in post)
    growth = end - base
    per_cycle = slope(list(range(len(cycle_rss))), cycle_rss)
    first, last = rows[0], rows[-1]
    ratio = last[0] / first[0] if first[0] > 0 else float("nan")
    errors = totals["processing_errors"] + totals["bad_inputs"] + log_errors + failed
    print(f"\nRSS (MiB): {idle['VmRSS']:.1f} idle before streaming; median {base:.1f} in the "
          f"first {args.bucket_s:g} s after warm-up, {end:.1f} in the last {args.bucket_s:g} s; "
          f"samples {post[0][1]:.1f} first after warm-up, {final['VmRSS']:.1f} last, {peak:.1f} "
          f"peak; VmHWM {final['VmHWM']:.1f}; at the end by kind: "
          + ", ".join(f"{k} {v:.1f}" for k, v in kinds.items()))
    goals = [
        (f"goal RSS growth after warm-up: {growth:+.1f} MiB, median of the last "
         f"{args.bucket_s:g} s - median of the first {args.bucket_s:g} s after warm-up (last "
         f"sample - first: {final['VmRSS'] - post[0][1]:+.1f}) (target <= "
         f"{GOAL_GROWTH_MIB:g} MiB)", growth <= GOAL_GROWTH_MIB),
        (f"goal lifecycle RSS slope: {per_cycle:+.3f} MiB per cycle over {len(cycle_rss)} "
         f"cycles (target <= {GOAL_SLOPE_MIB:g})",
         per_cycle <= GOAL_SLOPE_MIB and len(cycle_rss) == args.cycles),
        (f"goal output age: p50 last/first ratio {ratio:.2f}x ({last[0]:.1f} / {first[0]:.1f} "
         f"ms; p95 {last[1]:.1f} / {first[1]:.1f} ms) (target <= {GOAL_AGE_RATIO:g}x)",
         ratio <= GOAL_AGE_RATIO),
        (f"goal errors: {errors} (processing_errors {totals['processing_errors']}, "
         f"bad_inputs {totals['bad_inputs']}, log ERROR lines {log_errors}, failed "
         f"transitions {failed}) (target 0)", errors == 0),
    ]
    for text, ok in goals:
        print(f"{text}: {verdict(ok)}")
    all_ok = all(ok for _, ok in goals)
    print(f"soak {verdict(all_ok)}")
    return 0 if all_ok or args.smoke else 1


# -- memory breakdown ------------------------------------------------------------------------
class Probe:
    """Talks to a node started with ``--probe-node``: stats and trims on request."""

    def __init__(self, proc: subprocess.Popen, out: Path) -> None:
        self.proc, self.out, self.n = proc, out, 0

    def ask(self, command: str, timeout: float = 60.0) -> dict:
        self.n += 1
        tag = f"{command}-{self.n}"
        self.proc.stdin.write(f"{command} {tag}\n".encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.out.is_file():
                for line in self.out.read_text().splitlines():
                    rec = json.loads(line)
                    if rec["tag"] == tag:
                        return rec
            if self.proc.poll() is not None:
                raise RuntimeError(f"the node exited {self.proc.returncode}")
            time.sleep(0.1)
        raise TimeoutError(f"the probe did not answer {command}")


def breakdown_row(label: str, pid: int, probe: Probe, base: float | None) -> dict:
    status = proc_status(pid)
    kinds = smaps_breakdown(pid)
    info = probe.ask("stats")
    row = {"stage": label, **status, **kinds, **info["mallinfo"]}
    added = "" if base is None else f"{status['VmRSS'] - base:+8.1f}"
    print(f"{label:<34} {status['VmRSS']:7.1f} {added:>8} {status['RssAnon']:6.1f} "
          f"{status['RssFile']:6.1f} "
          + " ".join(f"{kinds[k]:6.1f}" for k in ("arenas", "heap", "anon", "stacks",
                                                   "dds_shm"))
          + f" {info['mallinfo']['in_use']:7.1f} {info['mallinfo']['free']:6.1f} "
          f"{info['mallinfo']['mmapped']:6.1f} {info['mallinfo']['mmapped_blocks']:4d} "
          f"{status['Threads']:4.0f}", flush=True)
    return row


def breakdown_one(args: argparse.Namespace, graph: Graph, height: int, width: int,
                  n_frames: int, env: dict[str, str]) -> None:
    from lifecycle_msgs.msg import Transition

    frames = make_frames(height, width, 4)
    workdir = Path(tempfile.mkdtemp(prefix="panoptic_mem_"))
    proc = start_node(workdir, node_params(args, autostart=False), probe=True, env=env)
    probe = Probe(proc, workdir / "probe.jsonl")
    try:
        wait_until_state(graph, proc, workdir, "unconfigured")
        print(f"\n{width}x{height}, {n_frames} frames at {args.rate:g} Hz"
              + (f"; node environment {env}" if env else ""))
        print(f"{'stage':<34} {'RSS':>7} {'added':>8} {'anon':>6} {'file':>6} {'arenas':>6} "
              f"{'heap':>6} {'anon*':>6} {'stacks':>6} {'shm':>6} {'in use':>7} {'free':>6} "
              f"{'mmap':>6} {'#':>4} {'thr':>4}")
        breakdown_row("imports (rclpy, node; unconfigured)", proc.pid, probe, None)
        graph.transition(Transition.TRANSITION_CONFIGURE)
        model = breakdown_row("configured (torch, model loaded)", proc.pid, probe, None)
        base = model["VmRSS"]
        graph.transition(Transition.TRANSITION_ACTIVATE)
        graph.wait_for(lambda: graph.camera.get_subscription_count() > 0, 60, "subscription")
        breakdown_row("active, idle", proc.pid, probe, base)
        camera = Camera(graph, frames, args.rate)
        with graph.cond:
            before = len(graph.outputs)
        camera.start()
        try:
            graph.wait_for(lambda: len(graph.outputs) > before, 120, "the first output")
            camera.stop()
            graph.wait_idle()
            time.sleep(1.0)  # the node's idle moment (it trims after 0.5 s without frames)
            breakdown_row("after the first frame", proc.pid, probe, base)
            camera = Camera(graph, frames, args.rate)
            camera.start()
            graph.wait_for(lambda: len(graph.outputs) >= before + n_frames, 60 + n_frames * 5,
                           f"{n_frames} outputs")
        finally:
            camera.stop()
        graph.wait_idle()
        time.sleep(1.0)
        breakdown_row(f"after {n_frames} frames", proc.pid, probe, base)
        graph.transition(Transition.TRANSITION_DEACTIVATE)
        breakdown_row("deactivated (model released)", proc.pid, probe, base)
        trimmed = probe.ask("trim")
        s = proc_status(proc.pid)
        print(f"{'  then malloc_trim(0) here':<34} {s['VmRSS']:7.1f} {s['VmRSS'] - base:+8.1f} "
              f"{s['RssAnon']:6.1f} {s['RssFile']:6.1f}  (malloc_trim returned "
              f"{trimmed['result']}); peak: VmHWM {s['VmHWM']:.1f}, {s['VmHWM'] - base:+.1f}")
        if trimmed.get("tracemalloc"):
            print("  top Python allocations (tracemalloc, MiB):")
            for line in trimmed["tracemalloc"]:
                print(f"    {line}")
    finally:
        stop_node(proc)


def run_breakdown(args: argparse.Namespace) -> int:
    print("memory breakdown of the node process, MiB: RSS and its kinds from /proc/PID/smaps "
          "(arenas = glibc per-thread malloc arenas, heap = main arena, anon* = other "
          "anonymous: large mmapped blocks, Python arenas; stacks = thread stacks; shm = Fast "
          "DDS /dev/shm); in use / free / mmap from glibc mallinfo2; added = RSS - RSS when "
          "configured (imports + model); free counts pages malloc_trim already returned too")
    env = dict(kv.split("=", 1) for kv in args.node_env)
    if args.tracemalloc:
        env["PANOPTIC_SOAK_TRACEMALLOC"] = "25"
    if args.no_trim:
        env["PANOPTIC_SOAK_NO_TRIM"] = "1"
    graph = Graph()
    try:
        sizes = [(args.height, args.width, args.frames)]
        if not args.smoke:
            sizes.append((1080, 1920, max(10, args.frames // 3)))
        for h, w, n in sizes:
            breakdown_one(args, graph, h, w, n, env)
    finally:
        graph.close()
    return 0


# -- the probe (runs inside the node's process) ----------------------------------------------
class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo(libc) -> dict[str, float]:
    """glibc's view, MiB: in_use (allocated), free (kept by malloc), mmapped (large blocks)."""
    try:
        libc.mallinfo2.restype = _MallInfo2
        m = libc.mallinfo2()
    except AttributeError:  # glibc < 2.33
        return {"in_use": float("nan"), "free": float("nan"), "mmapped": float("nan")}
    return {"in_use": (m.uordblks + m.hblkhd) / MIB, "free": m.fordblks / MIB,
            "mmapped": m.hblkhd / MIB, "mmapped_blocks": m.hblks, "arena_bytes": m.arena / MIB}


def probe_node() -> int:
    """The node's ``main`` with a control thread: ``stats TAG`` / ``trim TAG`` on stdin.

    Answers are JSON lines appended to ``probe.jsonl`` in the working directory.
    """
    import tracemalloc

    frames = int(os.environ.get("PANOPTIC_SOAK_TRACEMALLOC", "0") or 0)
    if frames:
        tracemalloc.start(frames)
    libc = ctypes.CDLL("libc.so.6")
    out = Path("probe.jsonl")

    def control() -> None:
        for line in sys.stdin:
            command, _, tag = line.strip().partition(" ")
            rec = {"tag": tag}
            if command == "trim":
                import gc

                gc.collect()
                rec["result"] = int(libc.malloc_trim(0))
                if tracemalloc.is_tracing():
                    snap = tracemalloc.take_snapshot().statistics("lineno")
                    total = sum(s.size for s in snap) / MIB
                    rec["tracemalloc"] = [f"total traced {total:.1f}"] + [
                        f"{s.size / MIB:7.2f} {s.traceback[0].filename}:"
                        f"{s.traceback[0].lineno}" for s in snap[:10]]
            rec["mallinfo"] = _mallinfo(libc)
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")

    threading.Thread(target=control, name="soak-probe", daemon=True).start()
    import panoptic_ros.ros.node as node

    if os.environ.get("PANOPTIC_SOAK_NO_TRIM"):  # glibc's default behaviour, for comparison
        node.HeapTrimmer.after_frame = lambda self: False
        node.release_free_heap = lambda: False
    return node.main(sys.argv[1:])


# -- main ------------------------------------------------------------------------------------
def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
def main() -> int:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # this checkout's panoptic_ros, as the node's
    if len(sys.argv) > 1 and sys.argv[1] == "--probe-node":
        sys.argv = [sys.argv[0], *sys.argv[2:]]
        return probe_node()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="streaming time")
    parser.add_argument("--cycles", type=int, default=100, help="deactivate/activate cycles")
    parser.add_argument("--cycle-s", type=float, default=3.0, help="period of the cycles, s")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--scenes", type=int, default=8, help="distinct frames, round-robin")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period, s")
    parser.add_argument("--warmup-s", type=float, default=60.0,
                        help="streaming time before the RSS baseline, s")
    parser.add_argument("--bucket-s", type=float, default=60.0,
                        help="age statistics per this many seconds")
    parser.add_argument("--cpu-threads", type=int, default=0,
                        help="the node's cpu_threads parameter (0: torch's default)")
    parser.add_argument("--domain-id", type=int, default=int(
        os.environ.get("PANOPTIC_TEST_DOMAIN_ID") or DEFAULT_DOMAIN_ID))
    parser.add_argument("--breakdown", action="store_true",
                        help="memory accounting by stage instead of the soak")
    parser.add_argument("--frames", type=int, default=150,
                        help="--breakdown: frames processed at 640x480 (a third at 1080p)")
    parser.add_argument("--node-env", action="append", default=[], metavar="VAR=VALUE",
                        help="environment of the node process (e.g. MALLOC_ARENA_MAX=4)")
    parser.add_argument("--no-trim", action="store_true",
                        help="--breakdown: switch off the node's malloc trimming (after frames, "
                        "trim at deactivate) to compare with glibc's default")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="--breakdown: top Python allocation sites (slows the node)")
    parser.add_argument("--smoke", action="store_true",
                        help="CI: 8 s streaming, 3 cycles (--breakdown: 640x480, 5 frames)")
    args = parser.parse_args()
    if args.smoke:
        args.minutes, args.cycles, args.cycle_s = 8 / 60, min(args.cycles, 3), 1.0
        args.sample_s, args.warmup_s, args.bucket_s, args.scenes = 1.0, 2.0, 4.0, 2
        args.frames = min(args.frames, 5)
    setup_environment(args.domain_id)
    # SIGTERM (a timeout, CI) ends the run through the cleanup (camera, node), like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    print(host_description())
    return run_breakdown(args) if args.breakdown else run_soak(args)


if __name__ == "__main__":
    sys.exit(main())
