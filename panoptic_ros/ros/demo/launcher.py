"""The live demo on a real ROS 2 graph: camera process -> panoptic node process -> monitor.

:func:`run_demo` starts the ``panoptic_node`` executable and the demo camera as separate
processes (their own session, so a terminal Ctrl-C reaches only the demo, which stops them in
order; and a parent-death signal, so they never outlive a killed demo) and scores the node's
outputs with a :class:`~panoptic_ros.ros.demo.monitor.PanopticMonitor` in this process. The
camera and the monitor run in different processes so that scene generation never delays the
monitor's receive timestamps: the measured latency is stamp (camera, at publish) to receipt
(monitor), both on the system clock.

The caller sets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and ``ROS_DOMAIN_ID`` in
``os.environ`` before calling (the children inherit them); :func:`run_demo` checks both.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rclpy
import yaml
from lifecycle_msgs.srv import GetState
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from panoptic_ros.errors import PanopticRosError, UserError
from panoptic_ros.ros.demo.monitor import SEGMENTATION_NODE, PanopticMonitor
from panoptic_ros.ros.demo.report import LOGS_DIR, PARAMS_NAME
from panoptic_ros.ros.demo.scoring import LiveSnapshot

NAMESPACE = "/panoptic_demo"

# Run by the child's Python before exec'ing the real program: ask the kernel to send SIGTERM
# when the demo dies (rclpy shuts a node down cleanly on SIGTERM), unless that already happened.
_EXEC_WITH_PARENT_DEATH_SIGNAL = (
    "import ctypes, os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


class DemoError(PanopticRosError):
    """The demo could not run (a process died, the node did not start); the message says why."""


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs.

    Attributes:
        output_dir: folder of the results and of ``logs/`` (node, camera).
        backend: the node's ``backend`` parameter (``efficientps``, ``onnx``...).
        weights: the node's ``weights`` parameter: ``demo``, a checkpoint path, or ``""``
            (random initialisation, plumbing only).
        duration_s: streaming time, seconds, from the first frame.
        rate_hz: camera frame rate.
        height: image height, pixels.
        width: image width, pixels.
        device: the node's ``device`` parameter.
        cpu_threads: the node's ``cpu_threads`` parameter (0: one per core).
        seed: scene seed of the camera.
        source: the camera's ``source``: ``sequences`` (videos with persistent ids, depth and
            camera info; live STQ and ID switches) or ``scenes`` (independent images).
        frames_per_sequence: frames of each video (``sequences``).
        sheet_rows: frames on the contact sheet.
        namespace: namespace of the camera, node and monitor.
        start_timeout_s: longest wait for the node to load its model and activate.
    """

    output_dir: Path
    backend: str = "efficientps"
    weights: str = "demo"
    duration_s: float = 60.0
    rate_hz: float = 10.0
    height: int = 256
    width: int = 320
    device: str = "auto"
    cpu_threads: int = 0
    seed: int = 2026
    source: str = "sequences"
    frames_per_sequence: int = 60
    sheet_rows: int = 6
    namespace: str = NAMESPACE
    start_timeout_s: float = 300.0


StatusCallback = Callable[[str, LiveSnapshot | None, float], None]
"""Progress reports: ``(phase, running figures or None, seconds streamed)``."""


# -- processes -------------------------------------------------------------------------------
def executable(console_script: str, module: str) -> list[str]:
    """The command of an entry point.

    The console script beside this Python (this environment's, never another one found on
    ``PATH``), else ``python -m module`` (a source checkout or a colcon install).
    """
    beside = Path(sys.executable).parent / console_script
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-m", module]


def start_process(cmd: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own session, output to ``log_path``, dying with this process."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = [sys.executable, "-c", _EXEC_WITH_PARENT_DEATH_SIGNAL, str(os.getpid()), *cmd]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log:
        return subprocess.Popen(wrapped, stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> int | None:
    """SIGINT (a clean ROS shutdown), then SIGKILL after ``timeout`` s; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:  # also when a second Ctrl-C interrupts the wait
            if proc.poll() is None:
                proc.kill()
                proc.wait(5.0)
    return proc.returncode


def log_reason(log_path: Path) -> str:
    """The last error line of a node's log (without the logger prefix), or its last line."""
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines()
                 if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if "[ERROR]" in ln or "Error" in ln]
    line = (errors or lines or [""])[-1]
    return line.split("]: ", 1)[-1]


def write_node_params(path: Path, cfg: DemoConfig) -> Path:
    """The node's parameters file: the demo's model and device, autostart.

    On sequences also ``use_depth`` (the camera sends depth and camera_info): 3D per segment,
    ``~/points`` and ``~/markers``.
    """
    params = {"backend": cfg.backend, "weights": cfg.weights, "device": cfg.device,
              "cpu_threads": cfg.cpu_threads,
              "autostart": True, "max_rate": 0.0, "use_depth": cfg.source == "sequences"}
    if not cfg.weights:
        params.update(variant="narrow", label_set="synthetic")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False))
    return path


# -- the run ---------------------------------------------------------------------------------
class _Run:
    """One demo run: the rclpy context, the monitor, the two child processes."""

    def __init__(self, cfg: DemoConfig, status: StatusCallback) -> None:
        self.cfg = cfg
        self.status = status
        self.logs = cfg.output_dir / LOGS_DIR
        self.wake = threading.Event()  # never set: an interruptible sleep
        self.context = rclpy.Context()
        # No rclpy signal handlers: SIGINT stays Python's KeyboardInterrupt in this thread.
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        overrides = [Parameter("output_dir", value=str(cfg.output_dir)),
                     Parameter("sheet_rows", value=int(cfg.sheet_rows)),
                     Parameter("report_period", value=0.0),
                     Parameter("video", value=cfg.source == "sequences"),
                     Parameter("max_pending", value=max(100, math.ceil(10 * cfg.rate_hz)))]
        self.monitor = PanopticMonitor(context=self.context, namespace=cfg.namespace,
                                       parameter_overrides=overrides)
        self.helper = Node("panoptic_demo", context=self.context, namespace=cfg.namespace)
        self.state_client = self.helper.create_client(
            GetState, f"{cfg.namespace}/{SEGMENTATION_NODE}/get_state")
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.executor.add_node(self.monitor)
        self.executor.add_node(self.helper)
        self.spinner = threading.Thread(target=self._spin, name="demo-executor", daemon=True)
        self.spinner.start()
        self.node_proc: subprocess.Popen | None = None
        self.camera_proc: subprocess.Popen | None = None

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - the context is shut down at the end
            pass

    def _check_alive(self) -> None:
        for proc, name, log in ((self.node_proc, "panoptic node", "node.log"),
                                (self.camera_proc, "demo camera", "camera.log")):
            if proc is not None and proc.poll() is not None:
                raise DemoError(f"the {name} exited with code {proc.returncode}: "
                                f"{log_reason(self.logs / log)} (log: {self.logs / log})")

    def start_node(self) -> None:
        """Start ``panoptic_node`` and wait until it is active and its outputs are visible."""
        cfg = self.cfg
        params = write_node_params(cfg.output_dir / PARAMS_NAME, cfg)
        cmd = executable("panoptic_node", "panoptic_ros.ros.node") + [
            "--ros-args", "--params-file", str(params),
            "-r", f"__ns:={cfg.namespace}",
            "-r", f"image:={cfg.namespace}/camera/image_raw",
            "-r", f"depth:={cfg.namespace}/camera/depth",
            "-r", f"camera_info:={cfg.namespace}/camera/camera_info"]
        self.node_proc = start_process(cmd, self.logs / "node.log")
        deadline = time.monotonic() + cfg.start_timeout_s
        future = None
        while True:
            self._check_alive()
            if future is None and self.state_client.service_is_ready():
                future = self.state_client.call_async(GetState.Request())
            if future is not None and future.done():
                state = future.result().current_state.label
                if state != "active":
                    log = self.logs / "node.log"
                    raise UserError(f"the panoptic node did not start ({state}): "
                                    f"{log_reason(log)} (log: {log})")
                if (self.monitor.categories_received.is_set()
                        and self.helper.count_publishers(self.monitor.panoptic_topic) > 0):
                    return
            if time.monotonic() > deadline:
                raise DemoError(f"the panoptic node was not active after "
                                f"{cfg.start_timeout_s:.0f} s (log: {self.logs / 'node.log'})")
            self.status("loading the model", None, 0.0)
            self.wake.wait(0.2)

    def start_camera(self) -> None:
        """Start the camera and wait for its first frame to reach the monitor."""
        cfg = self.cfg
        cmd = executable("panoptic_demo_camera", "panoptic_ros.ros.demo.camera") + [
            "--ros-args", "-r", f"__ns:={cfg.namespace}",
            "-p", f"rate:={float(cfg.rate_hz)}", "-p", f"seed:={int(cfg.seed)}",
            "-p", f"height:={int(cfg.height)}", "-p", f"width:={int(cfg.width)}",
            "-p", f"source:={cfg.source}",
            "-p", f"frames_per_sequence:={int(cfg.frames_per_sequence)}"]
        self.camera_proc = start_process(cmd, self.logs / "camera.log")
        deadline = time.monotonic() + 120.0
        while self.monitor.evaluator.frames_in == 0:
            self._check_alive()
            if time.monotonic() > deadline:
                raise DemoError(f"no camera frame after 120 s (log: {self.logs / 'camera.log'})")
            self.status("starting the camera", None, 0.0)
            self.wake.wait(0.1)

    def stream(self) -> tuple[float, bool]:
        """Let it run for the duration; (seconds streamed, interrupted by Ctrl-C)."""
        start = time.monotonic()
        interrupted = False
        try:
            while (elapsed := time.monotonic() - start) < self.cfg.duration_s:
                self._check_alive()
                self.status("running", self.monitor.evaluator.snapshot(), elapsed)
                self.wake.wait(min(0.5, max(0.0, self.cfg.duration_s - elapsed)))
        except KeyboardInterrupt:
            interrupted = True
        return time.monotonic() - start, interrupted

    def drain(self, timeout: float) -> None:
        """After the camera stopped: wait until the node has answered or dropped every frame.

        Done when a diagnostics report newer than the camera's stop (plus the node's 1 s report
        period) accounts for every frame the node received, and the monitor has every output.
        """
        stopped = time.monotonic()
        deadline = stopped + timeout
        while time.monotonic() < deadline:
            if self.node_proc is None or self.node_proc.poll() is not None:
                return
            diag, when = self.monitor.node_diagnostics()
            if diag and when > stopped + 1.0:
                done = sum(int(diag.get(k, 0)) for k in (
                    "frames_processed", "frames_dropped", "bad_inputs", "processing_errors"))
                if (done >= int(diag.get("frames_received", 0))
                        and self.monitor.evaluator.frames_out
                        >= int(diag.get("frames_processed", 0))):
                    return
            self.status("finishing", self.monitor.evaluator.snapshot(), 0.0)
            self.wake.wait(0.2)

    def close(self) -> None:
        """Stop the children (camera first), the executor and the context; idempotent."""
        for proc in (self.camera_proc, self.node_proc):
            if proc is not None:
                stop_process(proc)
        self.executor.shutdown()
        self.spinner.join(5.0)

    def destroy(self) -> None:
        """Destroy this process's nodes and shut its rclpy context down."""
        self.monitor.destroy_node()
        self.helper.destroy_node()
        rclpy.try_shutdown(context=self.context)


def run_demo(cfg: DemoConfig, status: StatusCallback | None = None) -> dict[str, Any]:
    """Run the demo; returns the summary (:meth:`PanopticMonitor.finish` plus run figures).

    Ctrl-C while streaming ends the run early (``interrupted`` in the summary); everything is
    stopped and the results so far are written.

    Raises:
        UserError: the node could not load the model (the reason from its log).
        DemoError: a process died or did not start in time.
    """
    if (os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST"
            or not os.environ.get("ROS_DOMAIN_ID")):
        raise DemoError("set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and ROS_DOMAIN_ID before "
                        "the demo starts rclpy (network safety)")
    status = status or (lambda phase, snap, elapsed: None)
    run = _Run(cfg, status)
    summary: dict[str, Any] | None = None
    try:
        run.start_node()
        run.start_camera()
        streamed, interrupted = run.stream()
        stop_camera_at = time.monotonic()
        stop_process(run.camera_proc)
        camera_rc = run.camera_proc.returncode
        if not interrupted:
            p50 = run.monitor.evaluator.snapshot().latency_ms_p50 / 1e3
            run.drain(timeout=max(10.0, 5.0 * p50))
        node_rc = stop_process(run.node_proc)
        run.close()
        summary = run.monitor.finish()
        summary.update(
            streamed_s=streamed,
            drain_s=time.monotonic() - stop_camera_at,
            interrupted=interrupted,
            exit_codes={"camera": camera_rc, "node": node_rc},
            domain_id=int(os.environ["ROS_DOMAIN_ID"]),
            logs=str(run.logs),
        )
        return summary
    finally:
        if summary is None:
            run.close()
        run.destroy()
