"""``panoptic-ros train``: train EfficientPS from a YAML config (torchrun for several GPUs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from panoptic_ros.errors import ModelLoadError, UserError

HELP = "train EfficientPS from a config (config/train_*.yaml); torchrun for DDP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``train``."""
    parser.add_argument("--config", required=True, type=Path, help="training YAML")
    parser.add_argument("--resume", help="continue from a trainer checkpoint; 'auto' = "
                        "OUTPUT_DIR/last.pt when it exists")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--max-steps", type=int, help="override max_steps")
    parser.add_argument("--batch-size", type=int, help="override batch_size (per process)")
    parser.add_argument("--device", help="override device (auto, cpu, cuda, cuda:N)")
    parser.add_argument("--num-workers", type=int, help="override num_workers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Load the config, train, print where the results are."""
    from panoptic_ros.training.config import load_train_config
    from panoptic_ros.training.trainer import train

    overrides = {k: v for k, v in {
        "output_dir": args.output_dir, "max_steps": args.max_steps,
        "batch_size": args.batch_size, "device": args.device,
        "num_workers": args.num_workers}.items() if v is not None}
    cfg = load_train_config(args.config, overrides)
    resume = args.resume
    if resume == "auto":
        last = Path(cfg.output_dir) / "last.pt"
        resume = last if last.is_file() else None
    elif resume is not None and not Path(resume).is_file():
        raise UserError(f"checkpoint to resume not found: {resume}")
    try:
        summary = train(cfg, resume=resume, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, ModelLoadError) as err:  # ModelLoadError: device
        raise UserError(str(err)) from None
    final = summary.get("final_val") or {}
    line = {k: summary[k] for k in ("steps", "train_seconds", "images_per_second")}
    if final:
        line.update(val_pq=round(final["all_pq"], 4), val_things_pq=round(final["things_pq"], 4),
                    val_stuff_pq=round(final["stuff_pq"], 4))
    print(json.dumps(line))
    print(f"checkpoint: {summary['checkpoints']['final']}  summary: "
          f"{Path(cfg.output_dir) / 'summary.json'}")
    return 0
