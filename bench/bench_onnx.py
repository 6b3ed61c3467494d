"""The node's processed rate with ``backend: onnx`` against PyTorch, on a real ROS 2 graph.

    PYTHONPATH=. .venv/bin/python bench/bench_onnx.py                 # 256x320, 30 s each
    PYTHONPATH=. .venv/bin/python bench/bench_onnx.py --smoke         # seconds, CI

The bundled demo model is exported to ONNX at its own input size (256x320, the scenes it was
trained on) with the package's exporter. Then, one after the other in this run, the node runs
as its own process (``python -m panoptic_ros.ros.node``, ``device: cpu``, the same
``cpu_threads``) with ``backend: efficientps, weights: demo`` and with ``backend: onnx,
weights: <the export>``, while this process is the camera: held-out synthetic scenes (seed
2026) at ``--rate`` Hz, faster than either node, so the node always has a new frame (latest
frame wins) and its output rate is its processing rate. After ``--warmup`` seconds from the
first output, the ``~/panoptic`` messages arriving during ``--seconds`` give the rate.

Goals (issue 16), each printed PASS/FAIL: ONNX rate >= 1.5x the PyTorch rate; the camera
faster than both nodes (else the rates measure the camera).

Network safety: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and ``ROS_DOMAIN_ID`` (the test
suite's when run from it, else ``--domain-id`` or one from this process's pid) for this process
and the nodes, with the package's loopback Fast DDS profile. The nodes stop on SIGINT (SIGKILL
after 30 s) and also when this process dies. The ROS plumbing (node process, camera, listener)
is the soak benchmark's (``bench_soak.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _host import host_line  # noqa: E402
from bench_soak import (  # noqa: E402
    Camera,
    Graph,
    make_frames,
    setup_environment,
    start_node,
    stop_node,
    verdict,
    wait_until_state,
)

GOAL_RATIO = 1.5
CAMERA_MARGIN = 1.2
"""The camera must publish at least this factor faster than the faster node."""


def export_demo(folder: Path) -> tuple[Path, tuple[int, int]]:
    """The bundled model as ONNX at its own input size, with the package's exporter."""
    from panoptic_ros.export import export_onnx, model_input_size
    from panoptic_ros.inference import Predictor

    model = Predictor(weights="demo", device="cpu").model
    size, _ = model_input_size(model)
    if size is None:
        raise SystemExit("the bundled model records no HxW input size")
    return export_onnx(model, folder / "demo.onnx", size), size


def measure(graph: Graph, frames: list, params: dict, args: argparse.Namespace,
            workdir: Path) -> dict[str, float]:
    """One node process under the camera: its output rate and the camera's rate, per s."""
    workdir.mkdir(parents=True, exist_ok=True)
    proc = start_node(workdir, params)
    camera = Camera(graph, frames, args.rate)
    try:
        wait_until_state(graph, proc, workdir, "active")
        with graph.cond:
            graph.outputs.clear()
        camera.start()
        first = graph.wait_for(lambda: graph.outputs[:1], 120, "the first output")[0][0]
        start = first + args.warmup
        end = start + args.seconds
        time.sleep(max(0.0, end - time.monotonic()))
        camera.stop()
        with graph.cond:
            outputs = sum(start <= t < end for t, _ in graph.outputs)
            inference_ms = float(graph.latest.get("inference_ms_mean", "nan"))
        sent = sum(start <= t < end for t in camera.sent.values())
    finally:
        camera.stop()
        code = stop_node(proc)
    if code not in (0, None):
        print(f"warning: the node exited {code}; log: {workdir / 'node.log'}")
    return {"outputs": outputs, "sent": sent, "seconds": args.seconds,
            "inference_ms": inference_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="measured seconds per node (default 30)")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds after the first output before measuring (default 5)")
    parser.add_argument("--rate", type=float, default=40.0,
                        help="camera rate, Hz (default 40: faster than both nodes)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="measurements per backend, in the order AB BA AB... so that a "
                             "load changing during the run weighs on both alike (default 2)")
    parser.add_argument("--cpu-threads", type=int, default=1,
                        help="the nodes' cpu_threads (torch and ONNX Runtime intra-op threads; "
                             "default 1)")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID (default: the test suite's, else from the pid)")
    parser.add_argument("--smoke", action="store_true",
                        help="CI: 3 s per node after 1 s of warm-up")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.warmup, args.rounds = 3.0, 1.0, 1
    domain = args.domain_id
    if domain is None:
        domain = int(os.environ.get("PANOPTIC_TEST_DOMAIN_ID") or 1 + os.getpid() % 100)
    setup_environment(domain)
    print(host_line())
    workdir = Path(tempfile.mkdtemp(prefix="panoptic_bench_onnx_"))
    onnx_path, (height, width) = export_demo(workdir)
    frames = make_frames(height, width, 20)
    common = {"device": "cpu", "cpu_threads": args.cpu_threads, "autostart": True}
    runs = {
        "PyTorch": {"backend": "efficientps", "weights": "demo", **common},
        "ONNX Runtime": {"backend": "onnx", "weights": str(onnx_path),
                         "onnx_providers": "cpu", **common},
    }
    print(f"node: python -m panoptic_ros.ros.node, bundled demo model, device cpu, cpu_threads "
          f"{args.cpu_threads}; camera {width}x{height} rgb8 at {args.rate:g} Hz (held-out "
          f"scenes, seed 2026); {args.warmup:g} s warm-up, {args.seconds:g} s measured per "
          f"node; domain {os.environ['ROS_DOMAIN_ID']}, loopback only")
    graph = Graph()
    totals = {name: {"outputs": 0, "sent": 0, "seconds": 0.0} for name in runs}
    try:
        for k in range(args.rounds):
            for name in (list(runs) if k % 2 == 0 else list(runs)[::-1]):
                r = measure(graph, frames, runs[name], args, workdir / f"{k}_{len(name)}")
                for key in ("outputs", "sent", "seconds"):
                    totals[name][key] += r[key]
                print(f"round {k + 1} {name:>13}: processed {r['outputs'] / r['seconds']:6.2f} "
                      f"frames/s ({r['outputs']} outputs), camera {r['sent'] / r['seconds']:.1f}"
                      f" Hz, Predictor {r['inference_ms']:.1f} ms/frame (node diagnostics)")
    finally:
        graph.close()
    rates = {name: t["outputs"] / t["seconds"] for name, t in totals.items()}
    for name, rate in rates.items():
        print(f"{name:>13}: processed {rate:6.2f} frames/s over {totals[name]['seconds']:g} s")
    torch_rate, onnx_rate = rates["PyTorch"], rates["ONNX Runtime"]
    ratio = onnx_rate / torch_rate if torch_rate > 0 else float("inf")
    camera = min(t["sent"] / t["seconds"] for t in totals.values())
    fast_enough = camera >= CAMERA_MARGIN * max(torch_rate, onnx_rate)
    print(f"ratio ONNX / PyTorch processed rate {ratio:.2f}x")
    print(f"goal ONNX rate >= {GOAL_RATIO}x PyTorch's: {ratio:.2f}x: "
          f"{verdict(ratio >= GOAL_RATIO)}")
    print(f"goal camera faster than both nodes (>= {CAMERA_MARGIN}x the faster): camera "
          f"{camera:.1f} Hz, fastest node {max(torch_rate, onnx_rate):.1f} frames/s: "
          f"{verdict(fast_enough)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
