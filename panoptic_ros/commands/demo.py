"""``panoptic-ros demo``: the live demo over real ROS 2 topics, on loopback, offline.

A synthetic camera (video sequences the demo model never saw, ``--source sequences``, the
default; or independent scenes, ``--source scenes``) streams at ``--rate`` Hz to the real
``panoptic_node`` process; a monitor scores the node's outputs against the camera's ground
truth as they arrive: PQ, end-to-end latency, FPS, dropped frames, instance counts, and on
sequences STQ, ID switches and the 3D centroid error of matched things (the node runs with
``use_depth`` on the camera's depth and camera_info; the monitor also subscribes its
``~/points`` and ``~/markers`` and counts them). At the end it prints a summary and writes into
``--output``:

* ``summary.json``: every figure of the summary;
* ``contact_sheet.png``: rows of input | node overlay | ground truth;
* ``predictions.json`` + ``predictions/`` and ``ground_truth.json`` + ``ground_truth/`` +
  ``images/``: COCO panoptic files of every scored frame (on sequences a video data set), so
  that ``panoptic-ros eval --gt-json OUT/ground_truth.json --pred-json OUT/predictions.json``
  reproduces the live PQ (and STQ, ID switches, 3D centroid error) exactly (checked at the
  end, ``offline_eval_matches``);
* ``panoptic_params.yaml`` (the node's parameters) and ``logs/`` (node and camera output).

Network safety: before rclpy starts, this process sets ``ROS_AUTOMATIC_DISCOVERY_RANGE=
LOCALHOST`` and its own ``ROS_DOMAIN_ID`` (``--domain-id``, default from its pid) for itself
and its child processes, and (unless already set) ``FASTDDS_DEFAULT_PROFILES_FILE`` to
``panoptic_ros/ros/fastdds_loopback.xml``: shared memory large enough for camera frames, UDP
bound to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from panoptic_ros.errors import UserError

HELP = ("live demo: synthetic camera -> panoptic node -> monitor (PQ, STQ, ID switches, "
        "3D error, latency) over ROS 2")

LOOPBACK_PROFILE = Path(__file__).resolve().parent.parent / "ros" / "fastdds_loopback.xml"
"""Fast DDS profile of the demo's processes: 32 MiB shared memory, UDP on 127.0.0.1 only."""

MAX_DOMAIN_ID = 101
"""Highest ROS_DOMAIN_ID that is safe on every platform (ROS 2 docs)."""

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``demo``."""
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of streaming (default 60)")
    parser.add_argument("--size", default="256x320", metavar="HxW",
                        help="camera image size (default 256x320, the demo model's training "
                             "resolution)")
    parser.add_argument("--rate", type=float, default=10.0, help="camera frame rate, Hz "
                        "(default 10)")
    parser.add_argument("--output", type=Path, default=Path("demo_output"),
                        help="results folder (default demo_output/)")
    parser.add_argument("--backend", default="efficientps",
                        help="the node's model backend: efficientps (default) or onnx (give "
                             "--weights an .onnx file from 'panoptic-ros export --format "
                             "onnx')")
    parser.add_argument("--weights", default="demo",
                        help="'demo' (the bundled model, default), a checkpoint path, or "
                             "'random' (random initialisation: plumbing only, PQ near 0); "
                             "--backend onnx: an exported .onnx file")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None,
                        help="the node's torch CPU threads (default: cores - 1, at least 1; "
                             "the camera and the monitor need the rest)")
    parser.add_argument("--domain-id", type=int, default=None,
                        help=f"ROS_DOMAIN_ID, 0..{MAX_DOMAIN_ID} (default: from the pid)")
    parser.add_argument("--rows", type=int, default=6, help="contact sheet rows (default 6)")
    parser.add_argument("--seed", type=int, default=2026,
                        help="scene seed (default 2026; the demo model trained on 1000)")
    parser.add_argument("--source", choices=("sequences", "scenes"), default="sequences",
                        help="'sequences' (default: videos whose objects move and keep their "
                             "ids; live STQ and ID switches) or 'scenes' (independent images)")
    parser.add_argument("--frames-per-sequence", type=int, default=60, metavar="N",
                        help="frames of each video (--source sequences, default 60)")


def parse_size(text: str) -> tuple[int, int]:
    """``"256x320"`` -> (256, 320); at least 32 x 32, else :class:`UserError`."""
    from panoptic_ros.commands.infer import parse_input_size

    try:
        size = parse_input_size(text)
    except UserError:
        size = None
    if not isinstance(size, tuple) or min(size) < 32:
        raise UserError(f"--size must be HxW with both sides >= 32 (e.g. 256x320), got {text!r}")
    return size


def resolve_weights(text: str, backend: str = "efficientps") -> str:
    """The node's ``weights`` parameter for ``--weights``; :class:`UserError` if missing."""
    if backend != "efficientps" and text in ("demo", "random"):
        raise UserError(f"--backend {backend} needs --weights FILE (for onnx: 'panoptic-ros "
                        f"export --format onnx --output demo.onnx' exports the bundled model)")
    if text == "random":
        return ""
    if text == "demo":
        from panoptic_ros import models  # no torch: this check is instant

        if not models.DEMO_WEIGHTS.is_file():
            raise UserError(
                f"the bundled demo model is missing ({models.DEMO_WEIGHTS}); train it with "
                "'panoptic-ros train --config config/train_demo.yaml' or pass --weights PATH")
        return "demo"
    path = Path(text).expanduser()
    if not path.is_file():
        raise UserError(f"weights not found: {text}")
    return str(path.resolve())


def setup_ros_environment(domain_id: int | None) -> int:
    """Loopback-only discovery and this run's domain id, in ``os.environ``, before rclpy."""
    if domain_id is None:
        domain_id = 1 + os.getpid() % MAX_DOMAIN_ID
    if not 0 <= domain_id <= MAX_DOMAIN_ID:
        raise UserError(f"--domain-id must lie in 0..{MAX_DOMAIN_ID}, got {domain_id}")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ.pop("ROS_STATIC_PEERS", None)
    os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; conflicts with the range
    # Large images between processes: a Fast DDS shared-memory segment that holds them
    # (without it about half the frames are lost before the node's callback); kept when
    # the user chose a profile of their own.
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(LOOPBACK_PROFILE))
    return domain_id


class StatusLine:
    """One refreshing status line on a terminal; a line every ``period`` s otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, duration: float = 0.0,
                 period: float = 5.0) -> None:
        self.stream = stream
        self.duration = duration
        self.period = period
        self.tty = stream.isatty()
        self._last = -1e9
        self._shown = False

    def __call__(self, phase: str, snap, elapsed: float) -> None:
        """Show a phase and, while streaming, the running figures (a LiveSnapshot)."""
        from panoptic_ros.ros.demo.report import format_status

        now = time.monotonic()
        if not self.tty and now - self._last < self.period:
            return
        self._last = now
        text = f"[{phase}]"
        if snap is not None:
            clock = f"{elapsed:4.0f}/{self.duration:.0f} s " if phase == "running" else ""
            text = f"{text} {clock}{format_status(snap)}"
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self._shown = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the refreshing line."""
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()


def run(args: argparse.Namespace) -> int:
    """Run the demo, print the summary, write the results."""
    height, width = parse_size(args.size)
    if not args.duration > 0:
        raise UserError(f"--duration must be > 0 s, got {args.duration}")
    if not 0 < args.rate <= 1000:
        raise UserError(f"--rate must lie in (0, 1000] Hz, got {args.rate}")
    if not 1 <= args.rows <= 100:
        raise UserError(f"--rows must lie in 1..100, got {args.rows}")
    if not 1 <= args.frames_per_sequence <= 100_000:
        raise UserError(f"--frames-per-sequence must lie in 1..100000, got "
                        f"{args.frames_per_sequence}")
    threads = args.threads if args.threads is not None else max(1, (os.cpu_count() or 2) - 1)
    if not 1 <= threads <= 1024:
        raise UserError(f"--threads must lie in 1..1024, got {threads}")
    weights = resolve_weights(args.weights, args.backend)
    domain_id = setup_ros_environment(args.domain_id)
    out = args.output
    from panoptic_ros.ros.demo import report
    from panoptic_ros.ros.demo.launcher import DemoConfig, DemoError, run_demo

    report.prepare_output(out)
    cfg = DemoConfig(output_dir=out.resolve(), backend=args.backend, weights=weights,
                     duration_s=args.duration,
                     rate_hz=args.rate, height=height, width=width, device=args.device,
                     cpu_threads=threads, seed=args.seed, source=args.source,
                     frames_per_sequence=args.frames_per_sequence, sheet_rows=args.rows)
    model = {"demo": "bundled demo model", "": "random initialisation"}.get(weights, weights)
    model = model if args.backend == "efficientps" else f"{args.backend}: {model}"
    what = (f"videos of {args.frames_per_sequence} frames" if args.source == "sequences"
            else "scenes")
    print(f"panoptic-ros demo: {height}x{width} synthetic {what} (seed {args.seed}) at "
          f"{args.rate:g} Hz for {args.duration:g} s -> panoptic_node ({model}, device "
          f"{args.device}); ROS_DOMAIN_ID={domain_id}, loopback only", flush=True)
    status = StatusLine(duration=args.duration)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM = Ctrl-C
    try:
        summary = run_demo(cfg, status)
    except DemoError as err:
        print(f"panoptic-ros demo: error: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        status.close()
    summary["config"] = {"duration_s": args.duration, "rate_hz": args.rate,
                         "size": [height, width], "backend": args.backend,
                         "weights": args.weights,
                         "device": args.device, "threads": threads, "seed": args.seed,
                         "source": args.source,
                         "frames_per_sequence": args.frames_per_sequence, "rows": args.rows}
    summary["offline_eval_matches"] = report.offline_check(summary)
    summary_path = report.write_summary(out / report.SUMMARY_NAME, summary)
    print(report.format_summary(summary))
    if summary["offline_eval_matches"] is not None:
        verdict = "reproduces" if summary["offline_eval_matches"] else "DOES NOT reproduce"
        figures = (["PQ"] + (["STQ", "ID switches"] if summary.get("video") else [])
                   + (["3D centroid error"] if summary.get("centroid_error_m") else []))
        what = " and ".join([", ".join(figures[:-1]), figures[-1]] if figures[1:] else figures)
        print(f"offline: panoptic-ros eval --gt-json {out / report.GT_JSON} --pred-json "
              f"{out / report.PRED_JSON}  {verdict} the live {what}")
    for name, path in sorted(summary["files"].items()):
        print(f"wrote {name}: {path}")
    print(f"wrote summary: {summary_path}")
    if summary["interrupted"]:
        print("panoptic-ros demo: interrupted; results cover the frames so far", file=sys.stderr)
        return 130
    if summary["frames_out"] == 0:
        print(f"panoptic-ros demo: error: the node published no result in {args.duration:g} s "
              f"(log: {summary['logs']}/node.log)", file=sys.stderr)
        return 1
    return 0
