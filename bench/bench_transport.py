"""Do large images reach a subscriber in another process? Fresh-start trials over loopback.

    PYTHONPATH=. .venv/bin/python bench/bench_transport.py                 # the default matrix
    PYTHONPATH=. .venv/bin/python bench/bench_transport.py --case BE:BE:pub --trials 10
    PYTHONPATH=. .venv/bin/python bench/bench_transport.py --smoke         # 2 short trials

Each trial starts two fresh processes of this script: a publisher of ``--size``-byte
sensor_msgs/Image frames (plus a small std_msgs/String beside each frame, as a control) at
``--rate`` Hz, and, ``--gap`` s later, a subscriber that counts what arrives for ``--limit`` s
(or until ``--after`` s past its first frame). A start is *delivered* when at least one frame
arrived. Trials run one after the other (two processes per trial are enough load on two cores).

A case is ``PUB:SUB[:PROFILE]``: the publisher's and the subscriber's reliability (``R`` or
``BE``, KEEP_LAST ``--depth``) and which side runs with ``FASTDDS_DEFAULT_PROFILES_FILE`` set to
``--profile`` (``none``, ``pub``, ``sub`` or ``both``; default none). The default matrix answers
which side's profile matters for a best-effort subscriber, and whether a reliable subscriber
needs one. Findings (2026-12, kilted wheels, Fast DDS 3.2): the publisher's shared-memory segment
is the one that counts (see ``panoptic_ros/ros/qos.py``).

Network safety: the children run with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and
``ROS_DOMAIN_ID=--domain-id`` (default: the test suite's domain when run from it, else 97);
the profiles used must keep UDP on 127.0.0.1 (the package's does).
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
import time
from dataclasses import dataclass, field
from pathlib import Path

from _host import host_line

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "panoptic_ros" / "ros" / "fastdds_loopback.xml"
DEFAULT_DOMAIN_ID = 97
RELIABILITY = {"R": "reliable", "BE": "best_effort"}
PROFILE_SIDES = ("none", "pub", "sub", "both")
DEFAULT_CASES = ("R:BE", "BE:BE", "R:BE:pub", "BE:BE:pub", "R:BE:sub", "BE:BE:sub", "R:R")
SMOKE_CASES = ("R:R", "BE:BE:pub")


# -- the two roles (child processes; the only code here that imports rclpy) -----------------
def run_role(args: argparse.Namespace) -> int:
    """Publisher or subscriber of one trial; prints one ``RESULT {json}`` line at the end."""
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    reliability = (ReliabilityPolicy.RELIABLE if args.reliability == "reliable"
                   else ReliabilityPolicy.BEST_EFFORT)
    qos = QoSProfile(depth=args.depth, history=HistoryPolicy.KEEP_LAST, reliability=reliability)
    rclpy.init()
    node = Node(f"bench_transport_{args.role}")
    t0 = time.monotonic()
    result: dict[str, object] = {"role": args.role}
    try:
        if args.role == "pub":
            image_pub = node.create_publisher(Image, "bench_transport/image", qos)
            small_pub = node.create_publisher(String, "bench_transport/small", qos)
            frame = Image(height=1, width=args.size, encoding="mono8", step=args.size)
            frame.data = bytes(args.size)
            counts = {"sent": 0, "errors": 0}

            def tick() -> None:
                try:
                    image_pub.publish(frame)
                except Exception:  # noqa: BLE001 - "cannot publish data" under load: count it
                    counts["errors"] += 1
                small_pub.publish(String(data="x"))
                counts["sent"] += 1

            node.create_timer(1.0 / args.rate, tick)
            stop = Path(args.stop)
            while time.monotonic() - t0 < args.limit and not stop.exists():
                rclpy.spin_once(node, timeout_sec=0.05)
            result.update(counts)
        else:
            frames: list[float] = []
            smalls: list[float] = []
            node.create_subscription(Image, "bench_transport/image",
                                     lambda _m: frames.append(time.monotonic() - t0), qos)
            node.create_subscription(String, "bench_transport/small",
                                     lambda _m: smalls.append(time.monotonic() - t0), qos)
            matched = None
            while True:
                rclpy.spin_once(node, timeout_sec=0.05)
                now = time.monotonic() - t0
                if matched is None and node.count_publishers("bench_transport/image") > 0:
                    matched = now
                if now > args.limit or (frames and now > frames[0] + args.after):
                    break
            result.update(matched=matched, end=time.monotonic() - t0, frames=len(frames),
                          first=frames[0] if frames else None, smalls=len(smalls))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- the parent: trials, table ---------------------------------------------------------------
@dataclass
class Case:
    """One row of the table: reliabilities and which side has the profile."""

    pub: str
    sub: str
    profile: str = "none"
    delivered: int = 0
    failed: int = 0
    frames: int = 0
    expected: float = 0.0
    firsts: list[float] = field(default_factory=list)
    smalls_missing: int = 0

    @classmethod
    def parse(cls, text: str) -> Case:
        """``PUB:SUB[:PROFILE]``, e.g. ``BE:BE:pub``."""
        parts = text.split(":")
        if (len(parts) not in (2, 3) or parts[0] not in RELIABILITY
                or parts[1] not in RELIABILITY or (len(parts) == 3
                                                   and parts[2] not in PROFILE_SIDES)):
            raise argparse.ArgumentTypeError(
                f"case {text!r}: expected PUB:SUB[:PROFILE], PUB and SUB in R/BE, PROFILE in "
                f"{'/'.join(PROFILE_SIDES)}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "none")

    @property
    def label(self) -> str:
        """``R -> BE``."""
        return f"{self.pub:>2} -> {self.sub:<2}"


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM when this benchmark dies (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))


def child_env(domain_id: int, profile: Path | None) -> dict[str, str]:
    """Loopback-only discovery in this run's domain; the Fast DDS profile or none."""
    env = dict(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain_id),
               PYTHONUNBUFFERED="1")
    for name in ("ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY", "FASTDDS_DEFAULT_PROFILES_FILE"):
        env.pop(name, None)
    if profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    return env


def _result(output: str) -> dict | None:
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):]) if lines else None


def _stop(proc: subprocess.Popen, grace_s: float) -> str:
    """Wait for a child, then SIGINT, then SIGKILL (which leaves /dev/shm/fastdds_* behind)."""
    for sig in (None, signal.SIGINT, signal.SIGKILL):
        if sig is not None:
            proc.send_signal(sig)
        try:
            return proc.communicate(timeout=grace_s)[0]
        except subprocess.TimeoutExpired:
            continue
    return proc.communicate()[0]


def trial(case: Case, args: argparse.Namespace, tmp: Path, index: int) -> dict:
    """One fresh start of both processes; returns the subscriber's result (and the pub's)."""
    common = ["--size", str(args.size), "--rate", str(args.rate), "--depth", str(args.depth),
              "--after", str(args.after)]
    stop = tmp / f"stop-{index}"
    me = [sys.executable, str(Path(__file__).resolve())]
    pub_profile = args.profile if case.profile in ("pub", "both") else None
    sub_profile = args.profile if case.profile in ("sub", "both") else None
    pub = subprocess.Popen(
        [*me, "--role", "pub", "--reliability", RELIABILITY[case.pub], "--stop", str(stop),
         "--limit", str(args.limit + args.gap + 10), *common],
        env=child_env(args.domain_id, pub_profile), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, preexec_fn=_die_with_parent)
    try:
        time.sleep(args.gap)
        sub = subprocess.Popen(
            [*me, "--role", "sub", "--reliability", RELIABILITY[case.sub],
             "--limit", str(args.limit), *common],
            env=child_env(args.domain_id, sub_profile), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, preexec_fn=_die_with_parent)
        sub_out = _stop(sub, args.limit + 15)
    finally:
        stop.touch()
        pub_out = _stop(pub, 10)
    res = _result(sub_out) or {"error": sub_out[-400:]}
    res["pub"] = _result(pub_out) or {"error": pub_out[-400:]}
    return res


def host_description() -> str:
    """:func:`host_line`, then kernel, Python, Fast DDS, the RMW and the UDP buffer limits."""
    sysctl = []
    for name in ("rmem_default", "rmem_max"):
        try:
            value = Path("/proc/sys/net/core", name).read_text().strip()
            sysctl.append(f"net.core.{name} {value}")
        except OSError:
            pass
    fastdds = "Fast DDS (version unknown)"
    try:
        from importlib.metadata import version

        fastdds = f"Fast DDS {version('ros-fastdds')}"
    except Exception:  # noqa: BLE001 - apt installs have no such distribution; informational
        pass
    rmw = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)")
    return (f"{host_line()}, kernel {platform.release()}, Python "
            f"{platform.python_version()}, {fastdds}, {rmw}, {', '.join(sysctl)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", type=Case.parse, dest="cases",
                        help="PUB:SUB[:PROFILE] (repeatable); default: "
                             + " ".join(DEFAULT_CASES))
    parser.add_argument("--trials", type=int, default=5, help="fresh starts per case")
    parser.add_argument("--size", type=int, default=640 * 480 * 3, help="frame bytes")
    parser.add_argument("--rate", type=float, default=1.0, help="frames per second")
    parser.add_argument("--depth", type=int, default=1, help="KEEP_LAST depth of both sides")
    parser.add_argument("--limit", type=float, default=20.0, help="seconds per start")
    parser.add_argument("--after", type=float, default=5.0,
                        help="keep counting this long after the first frame, s")
    parser.add_argument("--gap", type=float, default=1.0,
                        help="seconds between the publisher's and the subscriber's start")
    parser.add_argument("--profile", type=Path, default=PROFILE,
                        help="Fast DDS XML for the profiled side(s)")
    parser.add_argument("--domain-id", type=int,
                        default=int(os.environ.get("PANOPTIC_TEST_DOMAIN_ID",
                                                   DEFAULT_DOMAIN_ID)))
    parser.add_argument("--smoke", action="store_true",
                        help="CI: " + " and ".join(SMOKE_CASES) + ", one 5 s start each, 5 Hz")
    # Child roles (internal).
    parser.add_argument("--role", choices=("pub", "sub"), help=argparse.SUPPRESS)
    parser.add_argument("--reliability", help=argparse.SUPPRESS)
    parser.add_argument("--stop", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        return run_role(args)
    if not 0 <= args.domain_id <= 101:
        parser.error(f"--domain-id must lie in 0..101, got {args.domain_id}")
    if args.trials < 1 or args.rate <= 0 or args.limit <= 0 or args.size < 1:
        parser.error("--trials, --rate, --limit and --size must be positive")
    if args.smoke:
        args.trials, args.limit, args.rate, args.after = 1, 5.0, 5.0, 1.0
        args.cases = args.cases or [Case.parse(c) for c in SMOKE_CASES]
    cases = args.cases or [Case.parse(c) for c in DEFAULT_CASES]
    if any(c.profile != "none" for c in cases) and not args.profile.is_file():
        parser.error(f"--profile {args.profile} not found")

    print(host_description())
    print(f"{args.size:,}-byte frames at {args.rate:g} Hz, KEEP_LAST {args.depth}, "
          f"{args.trials} fresh start(s) per case, {args.limit:g} s each (or {args.after:g} s "
          f"past the first frame), ROS_DOMAIN_ID {args.domain_id}, loopback only; profile "
          f"{args.profile.name}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_transport_") as tmp:
        starts = 0
        for case in cases:
            for i in range(args.trials):
                starts += 1
                res = trial(case, args, Path(tmp), starts)
                first, matched = res.get("first"), res.get("matched")
                if first is not None:
                    case.delivered += 1
                    case.firsts.append(first - (matched or 0.0))
                else:
                    case.failed += 1
                case.frames += int(res.get("frames") or 0)
                if matched is not None and res.get("end") is not None:
                    case.expected += max(0.0, (res["end"] - matched) * args.rate - 1)
                sent = (res.get("pub") or {}).get("sent") or 0
                if "error" in res:
                    print(f"  {case.label} {case.profile}: start {i + 1} gave no result: "
                          f"{res['error']!r}", file=sys.stderr)
                print(f"  {case.label} profile {case.profile:<4} start {i + 1}: "
                      f"{'delivered' if first is not None else 'FAILED   '} frames "
                      f"{res.get('frames')}, small {res.get('smalls')}, published {sent}",
                      flush=True)

    header = (f"{'pub -> sub':<10} {'profile':>7} {'starts':>6} {'delivered':>9} {'failed':>6} "
              f"{'frames':>7} {'ratio':>6} {'first s':>8}")
    print()
    print(header)
    print("-" * len(header))
    for c in cases:
        ratio = min(1.0, c.frames / c.expected) if c.expected else 0.0
        first = f"{statistics.median(c.firsts):8.2f}" if c.firsts else f"{'-':>8}"
        print(f"{c.label:<10} {c.profile:>7} {c.delivered + c.failed:>6} {c.delivered:>9} "
              f"{c.failed:>6} {c.frames:>7} {ratio:6.2f} {first}")
    print("delivered = starts with at least one frame; frames = frames received in all starts; "
          "ratio = frames / frames published while matched (about); first s = median seconds "
          "from match to the first frame; profile = side(s) with FASTDDS_DEFAULT_PROFILES_FILE")
    delivered = sum(c.delivered for c in cases)
    total = sum(c.delivered + c.failed for c in cases)
    print(f"all cases: {delivered} of {total} starts delivered, ratio {delivered / total:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
