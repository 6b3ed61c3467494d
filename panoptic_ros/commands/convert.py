"""``panoptic-ros convert``: other datasets' annotations to COCO panoptic format."""

from __future__ import annotations

import argparse
from pathlib import Path

from panoptic_ros.data.cityscapes import convert_cityscapes
from panoptic_ros.errors import UserError

HELP = "convert a dataset (cityscapes) to COCO panoptic format"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``convert``."""
    parser.add_argument("format", choices=("cityscapes",), help="source dataset format")
    parser.add_argument("--root", required=True, type=Path,
                        help="dataset root (Cityscapes: holds gtFine/ and leftImg8bit/)")
    parser.add_argument("--split", default="val", help="split to convert (default val)")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder: images/, panoptic/, panoptic.json")


def run(args: argparse.Namespace) -> int:
    """Convert the split."""
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out exists and is not a folder: {out}")
    json_path = convert_cityscapes(args.root, args.split, out)
    print(f"converted Cityscapes {args.split} to {json_path}")
    return 0
