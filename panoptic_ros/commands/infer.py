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

With ``--depth DIR --camera-info FILE`` each image's depth (``DIR/<stem>.png``, 16-bit
millimetres, 0 = none, as ``panoptic-ros synth`` writes it; same field of view, scaled by nearest
neighbour when its size differs) and the colour camera's calibration
(``camera_calibration_parsers`` YAML; ``P`` when set, else ``K``) add the frame path's 3D step
(:func:`panoptic_ros.geometry.segment_geometry`): every thing segment with a valid depth pixel
gets ``"centroid_m": [x, y, z]`` (per-axis median of its back-projected depth pixels),
``"distance_m"`` (5th percentile of their range) and ``"valid_depth_fraction"``, metres in the
camera optical frame.
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
    depth = parser.add_argument_group("3D (depth aligned with the images)")
    depth.add_argument("--depth", type=Path, metavar="DIR",
                       help="folder of 16-bit millimetre depth PNGs named like the images "
                            "(e.g. DATA/depth/<video>); adds centroid_m, distance_m and "
                            "valid_depth_fraction to thing segments")
    depth.add_argument("--camera-info", type=Path, metavar="YAML",
                       help="calibration of the colour camera (camera_calibration_parsers "
                            "YAML, e.g. DATA/camera_info/<video>.yaml); needed with --depth")
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


def find_depth(depth_dir: Path | None, camera_info: Path | None,
               images: list[Path]) -> dict[Path, Path] | None:
    """Each image's depth PNG (``depth_dir/<stem>.png``), or None without ``--depth``.

    Raises:
        UserError: only one of the two options, a missing folder, file or depth PNG.
    """
    if depth_dir is None and camera_info is None:
        return None
    if depth_dir is None or camera_info is None:
        raise UserError("--depth and --camera-info go together (depth needs the calibration)")
    if not depth_dir.is_dir():
        raise UserError(f"depth folder not found: {depth_dir}")
    if not camera_info.is_file():
        raise UserError(f"camera calibration not found: {camera_info}")
    paths = {image: depth_dir / f"{image.stem}.png" for image in images}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise UserError(f"no depth PNG for {len(missing)} image(s) in {depth_dir} (e.g. "
                        f"{missing[0]}): depth files are named like the images")
    return paths


def with_depth(result, depth_png: Path, calibration):
    """The frame path's 3D step on one result (depth read, scaled, intrinsics checked)."""
    from panoptic_ros.data.sequences import read_depth_png
    from panoptic_ros.geometry import (
        DepthError,
        intrinsics_from_calibration,
        match_depth_size,
        segment_geometry,
    )

    try:
        camera = intrinsics_from_calibration(calibration, result.ids.shape)
        depth, _ = match_depth_size(read_depth_png(depth_png), result.height, result.width)
    except DepthError as err:
        raise UserError(f"{depth_png.name}: {err}") from None
    return segment_geometry(result, depth, camera)


def run(args: argparse.Namespace) -> int:
    """Segment every input image and write the prediction set."""
    from tqdm import tqdm

    from panoptic_ros.camera_model import CameraCalibration
    from panoptic_ros.data.coco_panoptic import (
        CocoPanopticWriter,
        image_id_from_stem,
        read_image,
    )
    from panoptic_ros.geometry import geometry_json
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
    depth_paths = find_depth(args.depth, args.camera_info, images)
    predictor = load_predictor(args)
    step = TrackedPredictor(predictor, Tracker() if args.track else None)
    writer = CocoPanopticWriter(args.output, predictor.label_set, json_name=PRED_JSON,
                                png_dir_name=Path(PRED_JSON).stem)
    progress = tqdm(ids.items(), total=len(ids), unit="img", disable=len(ids) < 2,
                    desc="infer")
    calibration = (CameraCalibration.read(args.camera_info) if depth_paths is not None
                   else None)
    for frame, (image_id, path) in enumerate(progress):
        result = step(read_image(path), stamp=frame / args.rate)
        writer.add(image_id, result, image_suffix=path.suffix)
        if depth_paths is not None:
            result = with_depth(result, depth_paths[path], calibration)
            by_id = {s.id: s for s in result.segments}
            for entry in writer.annotations[-1]["segments_info"]:
                seg = by_id[entry["id"]]
                if seg.is_thing:
                    entry.update(geometry_json(seg.geometry))
    json_path = writer.close()
    tracked = f", {step.tracker.last_track_id} track(s)" if args.track else ""
    print(f"wrote {len(ids)} prediction(s){tracked}: {json_path} and {writer.png_dir}/")
    return 0
