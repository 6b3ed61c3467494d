"""``panoptic-ros synth``: write synthetic panoptic scenes as a COCO panoptic dataset."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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
                        help="output folder: images/, panoptic/, panoptic.json")
    parser.add_argument("--count", required=True, type=int, help="number of scenes")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument("--size", default="256x320", help="HEIGHTxWIDTH (default 256x320)")
    parser.add_argument("--start-id", type=int, default=1,
                        help="image id of the first scene (default 1)")
    parser.add_argument("--image-format", choices=("jpg", "png"), default="jpg",
                        help="image file format (default jpg)")


def run(args: argparse.Namespace) -> int:
    """Generate and write the scenes."""
    height, width = parse_size(args.size)
    if args.count < 0 or args.seed < 0 or args.start_id < 0:
        raise UserError("--count, --seed and --start-id must be >= 0")
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out exists and is not a folder: {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create output folder {out}: {err.strerror}") from None
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
