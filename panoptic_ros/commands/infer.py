"""``panoptic-ros infer``: panoptic segmentation of an image or a folder into COCO panoptic files.

Writes ``OUTPUT/predictions.json`` (COCO panoptic ``annotations`` with ``segments_info`` and
the categories) and ``OUTPUT/predictions/<stem>.png`` (segment ids as RGB): the PNG folder is
named after the JSON without ``.json``, the COCO panoptic convention that ``panoptic-ros eval``
follows, so ``eval --pred-json OUTPUT/predictions.json`` finds the PNGs with no other flag. An
image's id is its file stem as an integer when the stem is one, else the stem.

With ``--track`` the images are one video in file-name order: frame ``k`` has the stamp
``k / --rate`` seconds, and each result goes through the tracker
(:class:`panoptic_ros.tracking.TrackedPredictor`), so a thing's segment id (its pixel value
``category * label_divisor + track instance number``) stays the same in every frame where the
object is tracked, and its ``segments_info`` entry carries ``track_id`` and ``track_age``
(seconds since first seen).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING

from panoptic_ros.errors import ModelLoadError, UserError

if TYPE_CHECKING:
    from panoptic_ros.inference import Predictor

HELP = ("segment an image or a folder of images; write COCO panoptic predictions.json + "
        "predictions/ PNGs")

PRED_JSON = "predictions.json"
"""Name of the prediction JSON in ``--output``; its PNG folder is the name without ``.json``."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``infer`` (values checked when the model loads: no torch import here)."""
    parser.add_argument("--input", required=True, type=Path,
                        help="an image file or a folder of images (not recursive)")
    parser.add_argument("--output", required=True, type=Path,
                        help=f"output folder: {PRED_JSON} + {Path(PRED_JSON).stem}/ PNGs")
    add_model_arguments(parser)
    tracking = parser.add_argument_group("tracking (a folder as one video)")
    tracking.add_argument("--track", action="store_true",
                          help="treat the images, in file-name order, as one video: thing ids "
                               "persist across frames, segments carry track_id and track_age")
    tracking.add_argument("--rate", type=float, default=10.0, metavar="HZ",
                          help="frame rate of the video for --track: frame k is at k/HZ s "
                               "(default 10)")
    add_pretrained_arguments(parser)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and Predictor options shared by the commands that run a model.

    Pair with :func:`add_pretrained_arguments` and read back with :func:`load_predictor`.
    """
    parser.add_argument("--backend", default="efficientps",
                        help="model backend: efficientps (default), mask2former or onnx")
    parser.add_argument("--weights", default="demo",
                        help="efficientps: checkpoint path, or 'demo' for the bundled model "
                             "(default); mask2former: a hub model id or a save_pretrained "
                             "folder; onnx: a file written by 'panoptic-ros export --format "
                             "onnx'")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--input-size", default=None, metavar="HxW",
                        help="network input size: HxW box the image is fitted into, or N for "
                             "the shorter side (default: the model's, else the image's own)")
    parser.add_argument("--score-threshold", type=float, metavar="S",
                        help="minimum score of a detection / query (default: the model's)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network (the first image pays the compilation)")
    parser.add_argument("--onnx-providers", metavar="LIST",
                        help="--backend onnx: ONNX Runtime execution providers in priority "
                             "order, comma-separated: cpu (default), cuda, tensorrt; those "
                             "missing here fall back to cpu with a warning")


def add_pretrained_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the pretrained backends (a group at the end of the help)."""
    pretrained = parser.add_argument_group("pretrained backends (mask2former)")
    pretrained.add_argument("--allow-download", action="store_true",
                            help="let a hub model id missing from the local cache download")
    pretrained.add_argument("--cache-dir", help="Hugging Face cache directory")
    pretrained.add_argument("--label-set", metavar="NAME",
                            help="categories of the model's labels: auto (default), coco, "
                                 "cityscapes, custom or a category JSON")
    pretrained.add_argument("--rules",
                            help="panoptic inference rules: mask2former (default, the original "
                                 "implementation's) or transformers")


def parse_input_size(text: str | None) -> int | tuple[int, int] | None:
    """``"512"`` -> 512, ``"256x320"`` -> (256, 320), None -> None; else :class:`UserError`."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not match or int(match.group(1)) < 1 or (match.group(2) and int(match.group(2)) < 1):
        raise UserError(f"--input-size must be HxW (e.g. 256x320) or N, got {text!r}")
    if match.group(2) is None:
        return int(match.group(1))
    return int(match.group(1)), int(match.group(2))


def load_predictor(args: argparse.Namespace) -> Predictor:
    """The Predictor the options of :func:`add_model_arguments` describe.

    Raises:
        UserError: a malformed ``--input-size``, or the model cannot be loaded (the reason).
    """
    from panoptic_ros.inference import Predictor, PredictorConfig

    input_size = parse_input_size(args.input_size)
    options = {}
    if args.onnx_providers is not None:
        if args.backend != "onnx":
            raise UserError("--onnx-providers applies to --backend onnx")
        options["providers"] = args.onnx_providers
    try:
        return Predictor(PredictorConfig(
            backend=args.backend, weights=args.weights, device=args.device,
            precision=args.precision, input_size=input_size, compile=args.compile,
            allow_download=args.allow_download, cache_dir=args.cache_dir,
            pretrained_label_set=args.label_set,
            inference={"score_threshold": args.score_threshold, "rules": args.rules},
            backend_options=options,
        ))
    except (ModelLoadError, ValueError) as err:
        raise UserError(f"cannot load the model: {err}") from None


def find_images(path: Path) -> list[Path]:
    """The image file itself, or the images of a folder sorted by name."""
    from panoptic_ros.data.coco_panoptic import IMAGE_SUFFIXES

    if not path.exists():
        raise UserError(f"input not found: {path}")
    if path.is_file():
        return [path]
    images = sorted(p for p in path.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    return images


def run(args: argparse.Namespace) -> int:
    """Segment every input image and write the prediction set."""
    from tqdm import tqdm

    from panoptic_ros.data.coco_panoptic import (
        CocoPanopticWriter,
        image_id_from_stem,
        read_image,
    )
    from panoptic_ros.tracking import TrackedPredictor, Tracker

    images = find_images(args.input)
    ids: dict[int | str, Path] = {}
    for path in images:
        image_id = image_id_from_stem(path.stem)
        if image_id in ids:
            raise UserError(f"{ids[image_id].name} and {path.name} have the same image id "
                            f"{image_id!r}")
        ids[image_id] = path
    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"output {args.output} exists and is not a folder")
    if args.track and not (args.rate > 0 and args.rate < float("inf")):
        raise UserError(f"--rate must be a positive number of frames per second, got {args.rate}")
    predictor = load_predictor(args)
    step = TrackedPredictor(predictor, Tracker() if args.track else None)
    writer = CocoPanopticWriter(args.output, predictor.label_set, json_name=PRED_JSON,
                                png_dir_name=Path(PRED_JSON).stem)
    progress = tqdm(ids.items(), total=len(ids), unit="img", disable=len(ids) < 2,
                    desc="infer")
    for frame, (image_id, path) in enumerate(progress):
        result = step(read_image(path), stamp=frame / args.rate)
        writer.add(image_id, result, image_suffix=path.suffix)
    json_path = writer.close()
    tracked = f", {step.tracker.last_track_id} track(s)" if args.track else ""
    print(f"wrote {len(ids)} prediction(s){tracked}: {json_path} and {writer.png_dir}/")
    return 0
