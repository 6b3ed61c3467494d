"""``panoptic-ros export``: the EfficientPS network as ONNX or TorchScript for deployment.

The file holds the network up to its raw outputs (semantic logits, boxes, scores, labels,
mask logits) at a fixed input size; the fusion runs on the host
(:func:`panoptic_ros.export.panoptic_from_raw`). See :mod:`panoptic_ros.export`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from panoptic_ros.errors import ModelLoadError, UserError

HELP = "export the EfficientPS network (raw outputs, fusion on the host) to ONNX or TorchScript"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``export`` (no torch import here)."""
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"),
                        help="onnx (for onnxruntime / TensorRT) or torchscript")
    parser.add_argument("--weights", default="demo",
                        help="EfficientPS checkpoint, or 'demo' for the bundled model (default)")
    parser.add_argument("--output", required=True, type=Path, help="file to write")
    parser.add_argument("--input-size", metavar="HxW",
                        help="fixed network input size, multiples of 32 (default: the "
                             "model's own: the checkpoint's input_size when it is HxW, else "
                             "the size of the generated scenes it was trained on, as for "
                             "the demo model); images are fitted into it and padded")
    parser.add_argument("--opset", type=int, default=17,
                        help="ONNX opset, 11..20 (default 17)")
    parser.add_argument("--device", default="cpu",
                        help="torchscript: the device to trace on, which is the device it will "
                             "run on (cpu, cuda, cuda:N); a trace keeps its device")
    parser.add_argument("--fold-constants", action="store_true",
                        help="ONNX: fold the shape computations (onnxruntime), as TensorRT's "
                             "parser wants them")


def run(args: argparse.Namespace) -> int:
    """Load the checkpoint, export, print what was written."""
    from panoptic_ros.commands.infer import parse_input_size
    from panoptic_ros.devices import parse_device
    from panoptic_ros.export import FORMATS, OPSETS, export_model, model_input_size
    from panoptic_ros.inference import Predictor

    if args.format not in FORMATS:  # argparse checks too; kept for direct calls
        raise UserError(f"--format must be one of {FORMATS}, got {args.format!r}")
    if args.format == "onnx" and args.opset not in OPSETS:
        raise UserError(f"--opset must lie in {OPSETS.start}..{OPSETS.stop - 1}, "
                        f"got {args.opset}")
    if args.output.is_dir():
        raise UserError(f"output {args.output} is a folder; give a file name")
    try:
        model = Predictor(weights=args.weights, device="cpu").model
    except (ModelLoadError, ValueError) as err:
        raise UserError(f"cannot load the model: {err}") from None
    size = parse_input_size(args.input_size)
    source = "--input-size"
    if size is None:
        size, source = model_input_size(model)
        if size is None:
            raise UserError(f"{source}: give --input-size HxW")
    elif isinstance(size, int):
        raise UserError(f"--input-size must be HxW for an export (a fixed size), got "
                        f"{args.input_size!r}")
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise UserError("ONNX export needs the 'onnx' package (pip install onnx)") from None
    if args.fold_constants:
        if args.format != "onnx":
            raise UserError("--fold-constants applies to --format onnx")
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UserError("--fold-constants needs onnxruntime (pip install onnxruntime)"
                            ) from None
    try:
        path = export_model(model, args.output, args.format, tuple(size), args.opset,
                            fold=args.fold_constants, device=parse_device(args.device))
    except ValueError as err:
        if source != "--input-size":
            raise UserError(f"{err} (the input size is {source}; give --input-size HxW)"
                            ) from None
        raise UserError(str(err)) from None
    h, w = size
    print(f"wrote {path} ({args.format}, input 1x3x{h}x{w}, {model.config.variant}, "
          f"{len(model.label_set)} categories)")
    if source != "--input-size":
        print(f"input size {h}x{w}: {source} (--input-size HxW sets another)")
    return 0
