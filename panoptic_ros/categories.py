"""Category tables and the id encodings: the one owner of these conventions.

Conventions used everywhere in the package:

* A *category id* is the dataset's own id (COCO panoptic 1..200, Cityscapes label ids such as
  car = 26), never a contiguous training index, so that 0 can stay :data:`VOID`.
* A *training index* is the contiguous position of a category in its :class:`LabelSet`,
  stuff first, then things (the order of the semantic head's channels).
* A panoptic label image holds ``category_id * label_divisor + instance_id`` per pixel as int32,
  ``label_divisor`` = :data:`DEFAULT_LABEL_DIVISOR` by default; stuff has instance 0, things 1..;
  void is 0.
* COCO panoptic PNGs store a segment id per pixel as RGB: ``id = R + 256 * G + 256**2 * B``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

VOID = 0
"""Pixel value (and category id) of void / unlabelled pixels."""

DEFAULT_LABEL_DIVISOR = 1000
"""Default ``label_divisor`` of the panoptic label image."""

IGNORE_INDEX = 255
"""Training-index value of pixels ignored by the semantic loss (void, crowd, unknown)."""


class CategoryError(ValueError):
    """A category table or category id is invalid."""


@dataclass(frozen=True)
class Category:
    """One category of a label set.

    Attributes:
        id: dataset category id (> 0).
        name: human-readable name.
        is_thing: countable object (has instances) or amorphous stuff.
        color: RGB colour, 0..255 each, used by overlays and COCO tools.
    """

    id: int
    name: str
    is_thing: bool
    color: tuple[int, int, int]


class LabelSet:
    """An ordered table of categories: stuff first, then things.

    The position of a category in :attr:`categories` is its contiguous *training index*, the
    channel of the semantic head; things are additionally numbered ``0..num_things-1`` in the
    same order (the instance head's classes are ``thing_index + 1``, 0 being background).

    Args:
        name: short name of the table (``"coco_panoptic"``, ``"cityscapes"``, ...).
        categories: the categories in any order; stuff is moved before things, keeping the
            relative order within each group.
    """

    def __init__(self, name: str, categories: Iterable[Category]) -> None:
        cats = list(categories)
        if not cats:
            raise CategoryError(f"label set {name!r} has no categories")
        ids = [c.id for c in cats]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise CategoryError(f"label set {name!r} repeats category ids {dup}")
        bad = [i for i in ids if not (0 < i < 65536)]
        if bad:
            raise CategoryError(
                f"label set {name!r}: category ids must be in 1..65535 (0 is void), got {bad}"
            )
        self.name = name
        self.categories: tuple[Category, ...] = tuple(
            [c for c in cats if not c.is_thing] + [c for c in cats if c.is_thing]
        )
        self._index = {c.id: i for i, c in enumerate(self.categories)}
        self.num_stuff = sum(not c.is_thing for c in self.categories)
        self.num_things = len(self.categories) - self.num_stuff
        # index -> dataset id, and a dense lookup table dataset id -> training index.
        self.ids = np.array([c.id for c in self.categories], dtype=np.int64)
        self.is_thing_mask = np.array([c.is_thing for c in self.categories], dtype=bool)
        self.colors = np.array([c.color for c in self.categories], dtype=np.uint8).reshape(-1, 3)
        self.id_to_index = np.full(int(self.ids.max()) + 1, IGNORE_INDEX, dtype=np.int64)
        self.id_to_index[self.ids] = np.arange(len(self.categories))

    # -- lookup ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.categories)

    def __iter__(self):
        return iter(self.categories)

    def __contains__(self, category_id: object) -> bool:
        return category_id in self._index

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LabelSet)
            and self.name == other.name
            and self.categories == other.categories
        )

    def __hash__(self) -> int:
        return hash((self.name, self.categories))

    def __repr__(self) -> str:
        return (
            f"LabelSet({self.name!r}, {len(self)} categories: "
            f"{self.num_stuff} stuff, {self.num_things} things)"
        )

    @property
    def num_classes(self) -> int:
        """Number of categories (semantic head channels)."""
        return len(self.categories)

    @property
    def stuff(self) -> tuple[Category, ...]:
        """Stuff categories in training-index order."""
        return self.categories[: self.num_stuff]

    @property
    def things(self) -> tuple[Category, ...]:
        """Thing categories in training-index order."""
        return self.categories[self.num_stuff :]

    def by_id(self, category_id: int) -> Category:
        """The category with dataset id ``category_id``; :class:`CategoryError` if unknown."""
        try:
            return self.categories[self._index[int(category_id)]]
        except KeyError:
            raise CategoryError(
                f"category id {category_id} is not in label set {self.name!r}"
            ) from None

    def by_name(self, name: str) -> Category:
        """The category called ``name``; :class:`CategoryError` if unknown."""
        for c in self.categories:
            if c.name == name:
                return c
        raise CategoryError(f"no category named {name!r} in label set {self.name!r}")

    def index_of(self, category_id: int) -> int:
        """Contiguous training index of a dataset category id."""
        self.by_id(category_id)
        return self._index[int(category_id)]

    def id_of(self, index: int) -> int:
        """Dataset category id of a contiguous training index."""
        if not 0 <= index < len(self.categories):
            raise CategoryError(f"training index {index} outside 0..{len(self) - 1}")
        return self.categories[index].id

    def is_thing(self, category_id: int) -> bool:
        """Whether the dataset category id is a thing."""
        return self.by_id(category_id).is_thing

    def index_map(self, category_ids: np.ndarray) -> np.ndarray:
        """Map an array of dataset ids to training indices (unknown ids and void -> 255).

        Args:
            category_ids: integer array of any shape.

        Returns:
            int64 array of the same shape.
        """
        ids = np.asarray(category_ids, dtype=np.int64)
        out = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
        ok = (ids >= 0) & (ids < len(self.id_to_index))
        out[ok] = self.id_to_index[ids[ok]]
        return out

    # -- (de)serialisation ----------------------------------------------------------------
    def to_coco(self) -> list[dict]:
        """The table as COCO panoptic ``categories`` entries (``isthing`` as 0/1)."""
        return [
            {"id": c.id, "name": c.name, "isthing": int(c.is_thing), "color": list(c.color)}
            for c in self.categories
        ]

    def to_dict(self) -> dict:
        """Plain-type form (str/int/list only), safe for ``torch.load(weights_only=True)``."""
        return {"name": self.name, "categories": self.to_coco()}

    @classmethod
    def from_dict(cls, data: dict) -> LabelSet:
        """Inverse of :meth:`to_dict`."""
        return cls.from_coco(data["categories"], name=data.get("name", "custom"))

    @classmethod
    def from_coco(cls, entries: Sequence[dict], name: str = "custom") -> LabelSet:
        """Build from COCO-style category dicts (``id``, ``name``, ``isthing``, ``color``).

        A missing colour is filled from a fixed palette.
        """
        cats = []
        for k, e in enumerate(entries):
            try:
                cid, cname, thing = int(e["id"]), str(e["name"]), bool(e["isthing"])
            except (KeyError, TypeError, ValueError) as err:
                raise CategoryError(
                    f"category entry {k} needs 'id', 'name' and 'isthing', got {e!r}"
                ) from err
            color = e.get("color") or palette_color(cid)
            if len(color) != 3:
                raise CategoryError(f"category {cid}: colour must be 3 values, got {color!r}")
            cats.append(Category(cid, cname, thing, tuple(int(v) for v in color)))
        return cls(name, cats)

    @classmethod
    def from_json(cls, path: str | Path, name: str | None = None) -> LabelSet:
        """Load from a COCO-style JSON: a list of categories or a dict with ``categories``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CategoryError(f"category file not found: {path}") from None
        except json.JSONDecodeError as err:
            raise CategoryError(f"category file {path} is not valid JSON: {err}") from None
        if isinstance(data, dict):
            data = data.get("categories")
        if not isinstance(data, list):
            raise CategoryError(
                f"{path}: expected a list of categories or {{'categories': [...]}}"
            )
        return cls.from_coco(data, name=name or path.stem)


def palette_color(category_id: int) -> tuple[int, int, int]:
    """A deterministic, well-spread colour for a category id without one."""
    rng = np.random.default_rng(int(category_id) * 7919 + 17)
    return tuple(int(v) for v in rng.integers(40, 256, size=3))


# -- built-in tables ----------------------------------------------------------------------
@functools.cache
def coco_panoptic() -> LabelSet:
    """COCO panoptic: 133 categories (80 things, 53 stuff), ids 1..200.

    Table from the COCO panoptic annotations (CC BY 4.0), as distributed with panopticapi.
    """
    text = resources.files("panoptic_ros").joinpath("tables/coco_panoptic.json").read_text()
    return LabelSet.from_coco(json.loads(text), name="coco_panoptic")


# Cityscapes: the 19 evaluated classes as (label id, name, is_thing, colour).
_CITYSCAPES = [
    (7, "road", False, (128, 64, 128)),
    (8, "sidewalk", False, (244, 35, 232)),
    (11, "building", False, (70, 70, 70)),
    (12, "wall", False, (102, 102, 156)),
    (13, "fence", False, (190, 153, 153)),
    (17, "pole", False, (153, 153, 153)),
    (19, "traffic light", False, (250, 170, 30)),
    (20, "traffic sign", False, (220, 220, 0)),
    (21, "vegetation", False, (107, 142, 35)),
    (22, "terrain", False, (152, 251, 152)),
    (23, "sky", False, (70, 130, 180)),
    (24, "person", True, (220, 20, 60)),
    (25, "rider", True, (255, 0, 0)),
    (26, "car", True, (0, 0, 142)),
    (27, "truck", True, (0, 0, 70)),
    (28, "bus", True, (0, 60, 100)),
    (31, "train", True, (0, 80, 100)),
    (32, "motorcycle", True, (0, 0, 230)),
    (33, "bicycle", True, (119, 11, 32)),
]


@functools.cache
def cityscapes() -> LabelSet:
    """Cityscapes: the 19 evaluated classes with their label ids (8 things)."""
    return LabelSet("cityscapes", [Category(*row) for row in _CITYSCAPES])


# The synthetic scenes of ``panoptic-ros synth`` and the bundled demo model.
_SYNTHETIC = [
    (1, "person", True, (220, 20, 60)),
    (2, "car", True, (0, 0, 142)),
    (3, "box", True, (255, 160, 0)),
    (4, "ball", True, (160, 32, 240)),
    (11, "sky", False, (70, 130, 180)),
    (12, "ground", False, (128, 64, 128)),
    (13, "wall", False, (102, 102, 156)),
    (14, "grass", False, (107, 142, 35)),
    (15, "water", False, (0, 190, 210)),
]


@functools.cache
def synthetic() -> LabelSet:
    """The synthetic-scene label set: 5 stuff (sky, ground, wall, grass, water), 4 things."""
    return LabelSet("synthetic", [Category(*row) for row in _SYNTHETIC])


_BUILTIN: dict[str, Callable[[], LabelSet]] = {
    "coco_panoptic": coco_panoptic,
    "coco": coco_panoptic,
    "cityscapes": cityscapes,
    "synthetic": synthetic,
}


def builtin_label_sets() -> list[str]:
    """Names accepted by :func:`get_label_set` besides JSON paths."""
    return sorted(_BUILTIN)


def get_label_set(name_or_path: str | Path | LabelSet) -> LabelSet:
    """A built-in table by name (``coco``, ``cityscapes``, ``synthetic``) or a JSON file."""
    if isinstance(name_or_path, LabelSet):
        return name_or_path
    key = str(name_or_path)
    if key in _BUILTIN:
        return _BUILTIN[key]()
    if key.endswith(".json") or Path(key).exists():
        return LabelSet.from_json(key)
    raise CategoryError(
        f"unknown label set {key!r}: expected one of {builtin_label_sets()} or a JSON file"
    )


# -- id encodings -------------------------------------------------------------------------
def encode_ids(category_ids, instance_ids, label_divisor: int = DEFAULT_LABEL_DIVISOR):
    """Panoptic pixel values ``category * label_divisor + instance`` (numpy or torch, int32).

    Args:
        category_ids: dataset category ids, any shape (0 = void).
        instance_ids: instance ids of the same shape, ``< label_divisor``.
    """
    return category_ids * label_divisor + instance_ids


def decode_ids(ids, label_divisor: int = DEFAULT_LABEL_DIVISOR):
    """Inverse of :func:`encode_ids`: ``(category_ids, instance_ids)`` of a label image."""
    return ids // label_divisor, ids % label_divisor


def check_label_divisor(label_divisor: int, label_set: LabelSet | None = None) -> None:
    """Raise :class:`CategoryError` if ids of ``label_set`` would not fit int32 with it."""
    if label_divisor < 2:
        raise CategoryError(f"label_divisor must be >= 2, got {label_divisor}")
    top = int(label_set.ids.max()) if label_set is not None else 65535
    if (top + 1) * label_divisor > np.iinfo(np.int32).max:
        raise CategoryError(
            f"label_divisor {label_divisor} overflows int32 for category id {top}"
        )


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG colours to segment ids.

    Args:
        rgb: ndarray[H, W, 3] uint8, RGB order.

    Returns:
        ndarray[H, W] int32, ``R + 256 * G + 256**2 * B``.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB array [H, W, 3], got shape {rgb.shape}")
    rgb = rgb.astype(np.int32, copy=False)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids to COCO panoptic PNG colours.

    Args:
        ids: ndarray[H, W] integer, 0 <= id < 256**3.

    Returns:
        ndarray[H, W, 3] uint8, RGB order.
    """
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError("segment ids must lie in 0 .. 256**3 - 1 to be stored as RGB")
    ids = ids.astype(np.uint32, copy=False)
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)
