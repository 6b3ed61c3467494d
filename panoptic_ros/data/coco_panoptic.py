"""COCO panoptic files: read a dataset (JSON + PNG folder + images), write predictions alike.

Layout (COCO's own): a JSON with ``images``, ``annotations`` (one per image: ``image_id``,
``file_name`` of the PNG, ``segments_info``) and ``categories``; a folder of RGB PNGs whose
pixels encode segment ids as ``R + 256 * G + 256**2 * B``; a folder of images.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from panoptic_ros.categories import DEFAULT_LABEL_DIVISOR, LabelSet, id_to_rgb, rgb_to_id
from panoptic_ros.errors import UserError
from panoptic_ros.result import PanopticResult

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def coco_stem(image_id: int | str) -> str:
    """File stem of an image id, COCO style: integers zero-padded to 12 digits."""
    return f"{image_id:012d}" if isinstance(image_id, int) else str(image_id)


def image_id_from_stem(stem: str) -> int | str:
    """Image id of a file stem: the integer when the stem is one (as COCO names files)."""
    return int(stem) if stem.isdigit() else stem


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ndarray[H, W, 3] uint8 RGB; :class:`UserError` if unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write ndarray[H, W, 3] uint8 RGB to an image file (format from the suffix)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise UserError(f"cannot write image {path}")


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """Read a COCO panoptic PNG as ndarray[H, W] int32 segment ids."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise UserError(f"cannot read panoptic PNG {path}")
    if img.ndim != 3 or img.shape[2] < 3 or img.dtype != np.uint8:
        raise UserError(f"{path}: expected an 8-bit RGB PNG, got shape {img.shape} {img.dtype}")
    if sys.byteorder != "little":
        return rgb_to_id(img[..., 2::-1])  # BGR(A) -> RGB
    # RGBA bytes read as one little-endian uint32 are R + 256 G + 256**2 B + 256**3 A:
    # a view and a mask instead of three int32 planes (about 10x faster at 1024x2048).
    code = cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGBA
    rgba = cv2.cvtColor(img, code)
    return (rgba.view(np.uint32)[..., 0] & 0xFFFFFF).view(np.int32)


def write_panoptic_png(path: str | Path, segment_ids: np.ndarray) -> None:
    """Write ndarray[H, W] segment ids as a COCO panoptic RGB PNG."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), id_to_rgb(segment_ids)[..., ::-1]):
        raise UserError(f"cannot write {path}")


def load_json(path: str | Path, what: str = "JSON file") -> dict:
    """Load a JSON object; a missing or malformed file raises :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{what} {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path}: expected a JSON object at the top level")
    return data


class CocoPanopticDataset:
    """A COCO-panoptic-format dataset on disk.

    Args:
        json_path: the annotations JSON.
        png_dir: folder of panoptic PNGs; default: the JSON's path without ``.json``
            (``panoptic_val2017.json`` -> ``panoptic_val2017/``), else ``panoptic/`` beside it.
        image_dir: folder of images; default ``images/`` beside the JSON when it exists.
        label_set: categories; default: the JSON's ``categories``.
    """

    def __init__(
        self,
        json_path: str | Path,
        png_dir: str | Path | None = None,
        image_dir: str | Path | None = None,
        label_set: LabelSet | None = None,
    ) -> None:
        self.json_path = Path(json_path)
        data = load_json(self.json_path, "annotation JSON")
        for key in ("annotations",):
            if not isinstance(data.get(key), list):
                raise UserError(f"{self.json_path}: missing the '{key}' list of COCO panoptic")
        if png_dir is None:
            stem_dir = self.json_path.with_suffix("")
            png_dir = stem_dir if stem_dir.is_dir() else self.json_path.parent / "panoptic"
        self.png_dir = Path(png_dir)
        if image_dir is None and (self.json_path.parent / "images").is_dir():
            image_dir = self.json_path.parent / "images"
        self.image_dir = Path(image_dir) if image_dir is not None else None
        if label_set is None:
            if not data.get("categories"):
                raise UserError(f"{self.json_path}: no 'categories' and no label set given")
            label_set = LabelSet.from_coco(data["categories"], name=self.json_path.stem)
        self.label_set = label_set
        self.categories = {int(c["id"]): c for c in data.get("categories") or label_set.to_coco()}
        self.images = {im["id"]: im for im in data.get("images", [])}
        self.annotations: dict[int | str, dict] = {}
        for ann in data["annotations"]:
            try:
                self.annotations[ann["image_id"]] = ann
                ann["file_name"], ann["segments_info"]  # noqa: B018 - presence check
            except (KeyError, TypeError):
                raise UserError(
                    f"{self.json_path}: an annotation lacks image_id/file_name/segments_info"
                ) from None

    def __len__(self) -> int:
        return len(self.annotations)

    def __iter__(self) -> Iterator[int | str]:
        return iter(self.annotations)

    @property
    def image_ids(self) -> list[int | str]:
        """Image ids in file order."""
        return list(self.annotations)

    def annotation(self, image_id: int | str) -> dict:
        """The annotation dict of an image (``file_name``, ``segments_info``, ...)."""
        try:
            return self.annotations[image_id]
        except KeyError:
            raise UserError(f"no annotation for image id {image_id!r}") from None

    def png_path(self, image_id: int | str) -> Path:
        """Path of the image's panoptic PNG."""
        return self.png_dir / self.annotation(image_id)["file_name"]

    def image_path(self, image_id: int | str) -> Path:
        """Path of the image file (from ``images[].file_name``, else the PNG's stem + .jpg)."""
        if self.image_dir is None:
            raise UserError(f"{self.json_path}: no image folder known")
        info = self.images.get(image_id)
        if info is not None:
            return self.image_dir / info["file_name"]
        stem = Path(self.annotation(image_id)["file_name"]).stem
        for suffix in IMAGE_SUFFIXES:
            if (self.image_dir / (stem + suffix)).is_file():
                return self.image_dir / (stem + suffix)
        raise UserError(f"no image file for id {image_id!r} in {self.image_dir}")

    def load_segment_ids(self, image_id: int | str) -> np.ndarray:
        """ndarray[H, W] int32 of the dataset's own segment ids (0 = void)."""
        return read_panoptic_png(self.png_path(image_id))

    def load_image(self, image_id: int | str) -> np.ndarray:
        """ndarray[H, W, 3] uint8 RGB."""
        return read_image(self.image_path(image_id))

    def load_result(
        self, image_id: int | str, label_divisor: int = DEFAULT_LABEL_DIVISOR
    ) -> PanopticResult:
        """The ground truth as a :class:`PanopticResult` (ids re-encoded, crowd flagged)."""
        ann = self.annotation(image_id)
        return PanopticResult.from_coco(
            self.load_segment_ids(image_id), ann["segments_info"], self.label_set, label_divisor
        )


class CocoPanopticWriter:
    """Write results as a COCO panoptic prediction set: PNG folder + JSON.

    Args:
        out_dir: output folder (created).
        label_set: categories written into the JSON.
        json_name: name of the JSON inside ``out_dir``.
        png_dir_name: name of the PNG folder inside ``out_dir``.
        image_dir_name: when set, :meth:`add` can also store the input image there.
    """

    def __init__(
        self,
        out_dir: str | Path,
        label_set: LabelSet,
        json_name: str = "predictions.json",
        png_dir_name: str = "panoptic",
        image_dir_name: str | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.json_path = self.out_dir / json_name
        self.png_dir = self.out_dir / png_dir_name
        self.image_dir = self.out_dir / image_dir_name if image_dir_name else None
        self.png_dir.mkdir(parents=True, exist_ok=True)
        self.label_set = label_set
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add(
        self,
        image_id: int | str,
        result: PanopticResult,
        image: np.ndarray | None = None,
        image_suffix: str = ".jpg",
    ) -> None:
        """Add one image's result (and optionally its RGB image)."""
        stem = coco_stem(image_id)
        rgb, segments_info = result.to_coco()
        png_name = stem + ".png"
        if not cv2.imwrite(str(self.png_dir / png_name), rgb[..., ::-1]):
            raise UserError(f"cannot write {self.png_dir / png_name}")
        file_name = stem + image_suffix
        if image is not None and self.image_dir is not None:
            write_image(self.image_dir / file_name, image)
        self.images.append(
            {"id": image_id, "file_name": file_name, "height": result.height,
             "width": result.width}
        )
        self.annotations.append(
            {"image_id": image_id, "file_name": png_name, "segments_info": segments_info}
        )

    def close(self) -> Path:
        """Write the JSON; returns its path."""
        data = {
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.label_set.to_coco(),
        }
        self.json_path.write_text(json.dumps(data))
        return self.json_path

    def __enter__(self) -> CocoPanopticWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
