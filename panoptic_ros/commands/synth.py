"""``panoptic-ros synth``: write synthetic panoptic scenes as a COCO panoptic dataset.

With ``--sequences N --frames T`` it writes video sequences instead (ids persistent per object,
depth in millimetres, camera calibration; see :mod:`panoptic_ros.data.sequences`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from panoptic_ros.data.sequences import SequenceConfig, write_sequence_dataset
from panoptic_ros.data.synthetic import SceneConfig, write_synthetic_dataset
from panoptic_ros.errors import UserError

HELP = "generate synthetic scenes with panoptic ground truth (COCO panoptic format)"


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (e.g. ``256x320``) to ``(height, width)``; :class:`UserError` if malformed."""
    parts = text.lower().split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise UserError(
            f"--size must look like HEIGHTxWIDTH (e.g. 256x320), got {text!r}"
        ) from None
    if height < 32 or width < 32:
        raise UserError(f"--size must be at least 32x32, got {text!r}")
    return height, width


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``synth``."""
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder: images/, panoptic/, panoptic.json (and "
                        "depth/, camera_info/ for sequences)")
    parser.add_argument("--count", type=int,
                        help="number of single-image scenes (or use --sequences)")
    parser.add_argument("--sequences", type=int,
                        help="number of video sequences (instead of --count): images/, "
                        "panoptic/, depth/ as <video>/<frame:06d>.png, camera_info/<video>.yaml")
    parser.add_argument("--frames", type=int, default=20,
                        help="frames per sequence (default 20)")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="frame rate of the sequences, Hz (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument("--size", default="256x320", help="HEIGHTxWIDTH (default 256x320)")
    parser.add_argument("--start-id", type=int, default=1,
                        help="image id of the first scene (default 1)")
    parser.add_argument("--image-format", choices=("jpg", "png"), default="jpg",
                        help="image file format (default jpg)")


def run(args: argparse.Namespace) -> int:
    """Generate and write the scenes."""
    height, width = parse_size(args.size)
    if (args.count is None) == (args.sequences is None):
        raise UserError("give exactly one of --count (scenes) and --sequences (videos)")
    if args.sequences is not None:
        return _run_sequences(args, height, width)
    if args.count < 0 or args.seed < 0 or args.start_id < 0:
        raise UserError("--count, --seed and --start-id must be >= 0")
    out = _output_folder(args.out)
    start = time.perf_counter()
    json_path = write_synthetic_dataset(
        out, args.count, seed=args.seed, config=SceneConfig(height=height, width=width),
        start_id=args.start_id, image_suffix="." + args.image_format,
    )
    elapsed = time.perf_counter() - start
    print(f"wrote {args.count} scenes ({height}x{width}, seed {args.seed}, ids "
          f"{args.start_id}..{args.start_id + args.count - 1}) to {json_path} "
          f"in {elapsed:.1f} s")
    return 0


def _run_sequences(args: argparse.Namespace, height: int, width: int) -> int:
    """Generate and write the video sequences."""
    if args.sequences < 0 or args.seed < 0 or args.frames < 1 or not args.rate > 0:
        raise UserError("--sequences and --seed must be >= 0, --frames >= 1, --rate > 0")
    out = _output_folder(args.out)
    start = time.perf_counter()
    json_path = write_sequence_dataset(
        out, args.sequences, args.frames, seed=args.seed,
        config=SequenceConfig(height=height, width=width, rate=args.rate))
    print(f"wrote {args.sequences} sequences of {args.frames} frames ({height}x{width}, "
          f"{args.rate:g} Hz, seed {args.seed}) to {json_path} in "
          f"{time.perf_counter() - start:.1f} s")
    return 0


def _output_folder(out: Path) -> Path:
    """Create ``--out``; :class:`UserError` when it is a file or cannot be created."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out exists and is not a folder: {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create output folder {out}: {err.strerror}") from None
    return out
