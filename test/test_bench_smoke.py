"""Every benchmark runs at its ``--smoke`` size and prints its ratio line(s), so none can rot.

Each ``bench/bench_*.py`` runs as a subprocess with a bounded timeout, one torch thread (two
threads on two shared cores spend more time spinning than computing) and the loopback-only ROS
environment of this test run (:func:`conftest.ros_env`) for those that start rclpy. The times
they print are not checked: smoke sizes say nothing about speed.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
from conftest import REPO, ros_env

BENCHES = sorted((REPO / "bench").glob("bench_*.py"))

# The line(s) each benchmark must print: its comparison ratios, with the optional package a
# line needs (the benchmark prints it only when that package is installed). A new benchmark
# that is not listed must print at least one line with "ratio" and a number.
NUMBER = r"[0-9]+(?:\.[0-9]+)?"
EXPECTED: dict[str, list[tuple[str, str | None]]] = {
    "bench_cameras.py": [(r"^host: .+ cores, flags ", None),
                         (rf"^one node +processed +{NUMBER} frames/s", None),
                         (rf"^memory one/many {NUMBER}x \(goal <= 0\.4x\): (PASS|FAIL)$", None),
                         (rf"^rate one/many {NUMBER}x \(goal >= 1\.0x\): (PASS|FAIL)$", None)],
    "bench_video.py": [(r"^host: .+ cores, flags ", None),
                       (rf"^tracking +{NUMBER} +{NUMBER}", None),
                       (rf"^per-frame ids +{NUMBER}", None),
                       (r"^goal idf1: (PASS|FAIL)", None),
                       (r"^goal stq: (PASS|FAIL)", None)],
    "bench_depth.py": [(r"^host: .+ cores, flags ", None),
                       (rf"^per-segment 3D .* ratio {NUMBER}x +identical$", None),
                       (rf"^cloud \(\d+ points\) .* ratio {NUMBER}x +identical$", None),
                       (r"^goal per-segment 3D <= 5 ms at 320x240: .*: (PASS|FAIL)$", None),
                       (r"^goal cloud <= 10 ms at 320x240: .*: (PASS|FAIL)$", None),
                       (r"^goal median centroid error <= 0\.1 m within 15 m: .*: (PASS|FAIL)$",
                        None)],
    "bench_fusion.py": [(rf"efficientps .*ratio +{NUMBER}x +identical", None),
                        (rf"panoptic_fpn .*ratio +{NUMBER}x +identical", None),
                        (rf"^min ratio {NUMBER}x \(target >= 10x\)", None)],
    "bench_network.py": [
        (r"^\| model \| params \| backbone params \| GFLOPs .* time / Mask R-CNN", None),
        (rf"^\| EfficientPS narrow \| .* \| {NUMBER} \|$", None),
        (rf"^\| Mask2Former .* \| {NUMBER} \|$", "transformers"),
        (r"^\| Mask R-CNN R50-FPN \(torchvision\) \| .* \| 1\.00 \|$", None)],
    "bench_pq.py": [(r"^PQ evaluation, [0-9]+ images of [0-9]+x[0-9]+", None),
                    (rf"ratio panopticapi / ours .* {NUMBER}x", "panopticapi"),
                    (rf"ratio hotcoco / ours .* {NUMBER}x", "hotcoco")],
    "bench_mask2former_postprocess.py": [(rf"^speed-up: min {NUMBER}x", "transformers")],
    "bench_node.py": [(rf"^ *[0-9]+x[0-9]+(?: +{NUMBER}){{9}}", None),  # frame ... ratio
                      (r"ratio = overhead / forward", None)],
    "bench_soak.py": [(r"^host: .+ cores, flags ", None),
                      (r"^streaming: sent [1-9][0-9]*, outputs [1-9][0-9]*, drops ", None),
                      (r"^goal RSS growth after warm-up: .*: (PASS|FAIL)$", None),
                      (r"^goal lifecycle RSS slope: .* over 3 cycles .*: (PASS|FAIL)$", None),
                      (rf"^goal output age: p50 last/first ratio {NUMBER}x .*: (PASS|FAIL)$",
                       None),
                      (r"^goal errors: 0 \(", None)],
    "bench_tracking.py": [(r"^host: .+ cores, flags ", None),
                          (rf"^ratio reference / ours \(p50\) {NUMBER}x +identical associations$",
                           None),
                          (r"^goal <= 2\.0 ms/frame at 240x320: p50 .*: (PASS|FAIL)", None)],
}
DEFAULT = [(rf"ratio.*{NUMBER}", None)]
TIMEOUT_S = 150
# bench_soak: node start, 8 s of 640x480 frames, 3 lifecycle cycles; bench_cameras: 3 node
# processes start twice (one 2-camera node, then two single-camera nodes).
TIMEOUTS_S = {"bench_soak.py": 150, "bench_cameras.py": 240}


@pytest.mark.parametrize("bench", BENCHES, ids=[b.name for b in BENCHES])
def test_benchmark_smoke_run_prints_its_ratios(bench):
    proc = subprocess.run(
        [sys.executable, str(bench), "--smoke"], cwd=REPO, capture_output=True, text=True,
        timeout=TIMEOUTS_S.get(bench.name, TIMEOUT_S),
        env=ros_env(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"),
    )
    output = proc.stdout + proc.stderr
    assert "unrecognized arguments: --smoke" not in output, f"{bench.name} has no --smoke flag"
    assert proc.returncode == 0, f"{bench.name} --smoke exited {proc.returncode}:\n{output}"
    for pattern, package in EXPECTED.get(bench.name, DEFAULT):
        if package is not None and importlib.util.find_spec(package) is None:
            continue
        assert re.search(pattern, proc.stdout, re.MULTILINE), (
            f"{bench.name} --smoke printed no line matching {pattern!r}:\n{proc.stdout}"
        )
