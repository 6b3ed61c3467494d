"""Map a pretrained model's class names (``config.id2label``) onto the package's label sets.

Pretrained Hugging Face checkpoints name their classes in ``id2label`` but carry no dataset
ids, thing/stuff flags or colours. Matching the names against :func:`~panoptic_ros.categories.
coco_panoptic` or :func:`~panoptic_ros.categories.cityscapes` gives the model's output our ids,
names and colours, so node, CLI and evaluation see the same categories as with our own models.

Names are compared after normalisation: case, ``-``/``_``/``/`` and spaces are ignored, and the
COCO panoptic suffixes ``-merged``, ``-other`` and ``-stuff`` may be left out on either side
(``wall-other-merged`` = ``wall other`` = ``wall``, ``door-stuff`` = ``door``) where that stays
unambiguous within the table; a few common synonyms (``tvmonitor``, ``sofa``, ``motorbike``,
...) are accepted. Placeholders (``N/A``, ``LABEL_12``, ``background``, ...) map to void
silently; any other label without a match is reported and its pixels become void. When no
built-in table covers enough of the labels, a custom :class:`~panoptic_ros.categories.LabelSet`
is built from ``id2label`` itself.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from panoptic_ros.categories import (
    LabelSet,
    cityscapes,
    coco_panoptic,
    get_label_set,
    palette_color,
)

_log = logging.getLogger(__name__)

# Model-side synonyms (normalised, spaces removed) -> the normalised table name.
_SYNONYMS = {
    "tvmonitor": "tv",
    "television": "tv",
    "sofa": "couch",
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "mobilephone": "cellphone",
    "hairdryer": "hairdrier",
}
_SUFFIXES = ("merged", "other", "stuff")
# Matched against the label with all separators removed ("__background__" -> "background").
_PLACEHOLDER = re.compile(
    r"^(|na|none|null|label\d+|background|unlabeled|unlabelled|void|ignore|ignored|unknown)$"
)
_STUFF_HINT = re.compile(r"[-_ ](merged|stuff|other)$")


def normalise_label(name: str) -> str:
    """Lower case, separators (``-_/`` and spaces) collapsed to single spaces, trimmed."""
    return re.sub(r"[\s\-_/]+", " ", str(name).strip().lower()).strip()


def _keys(name: str) -> list[str]:
    """Comparison keys of a label, most specific first (spaces dropped)."""
    words = normalise_label(name).split(" ")
    keys = ["".join(words)]
    # Drop recognised suffix words from the end, one at a time ("sky other merged" -> "sky").
    while len(words) > 1 and words[-1] in _SUFFIXES:
        words = words[:-1]
        keys.append("".join(words))
    return keys


def is_placeholder(name: str) -> bool:
    """Whether ``name`` is a filler entry of ``id2label`` rather than a real class."""
    return bool(_PLACEHOLDER.match(normalise_label(name).replace(" ", "")))


def _table_index(label_set: LabelSet) -> dict[str, int]:
    """Comparison key -> category id, ambiguous shortened keys removed."""
    exact: dict[str, int] = {}
    short: dict[str, set[int]] = {}
    for c in label_set:
        keys = _keys(c.name)
        exact.setdefault(keys[0], c.id)
        for k in keys[1:]:
            short.setdefault(k, set()).add(c.id)
    index = dict(exact)
    for k, ids in short.items():
        if k not in index and len(ids) == 1:
            index[k] = next(iter(ids))
    return index


def _match(name: str, index: Mapping[str, int]) -> tuple[int, bool]:
    """Category id of a model label in a table index (0 if none) and whether it matched.

    The flag is True when the full name matched, False for a shortened form or a synonym.
    """
    keys = _keys(name)
    keys = keys + [_SYNONYMS[k] for k in keys if k in _SYNONYMS]
    for rank, k in enumerate(keys):
        if k in index:
            return index[k], rank == 0
    return 0, False


@dataclass(frozen=True)
class LabelMapping:
    """How the model's class indices map onto a label set.

    Attributes:
        label_set: the categories of the output.
        category_ids: ndarray[C] int64, dataset category id per model class index (0 = void).
        unmapped: ``(index, name)`` of real model labels without a category (become void).
        coverage: fraction of the model's real (non-placeholder) labels that were mapped.
    """

    label_set: LabelSet
    category_ids: np.ndarray
    unmapped: tuple[tuple[int, str], ...] = field(default=())
    coverage: float = 1.0

    @property
    def num_classes(self) -> int:
        """Number of model classes ``C`` (without "no object")."""
        return int(len(self.category_ids))

    @property
    def is_thing(self) -> np.ndarray:
        """ndarray[C] bool: the model class maps to a thing category."""
        lut = np.zeros(int(self.label_set.ids.max()) + 1, dtype=bool)
        lut[self.label_set.ids] = self.label_set.is_thing_mask
        return lut[self.category_ids] & (self.category_ids > 0)

    @property
    def fuse(self) -> np.ndarray:
        """ndarray[C] bool: classes whose queries merge into one segment (mapped stuff)."""
        return (self.category_ids > 0) & ~self.is_thing


def _labels_list(id2label: Mapping[int, str]) -> list[str]:
    """``id2label`` as a dense list indexed by class (keys may be str, as in JSON configs)."""
    items = {int(k): str(v) for k, v in id2label.items()}
    if not items:
        raise ValueError("the model config has an empty id2label")
    if min(items) < 0:
        raise ValueError(f"id2label has negative class indices: {sorted(items)[:5]}")
    out = [""] * (max(items) + 1)
    for k, v in items.items():
        out[k] = v
    return out


def custom_label_set(id2label: Mapping[int, str], name: str = "custom") -> LabelSet:
    """A label set built from ``id2label`` alone: category id = class index + 1.

    Placeholder labels are left out (they map to void). Thing or stuff is not recorded in
    Hugging Face configs; labels ending in ``-merged``, ``-stuff`` or ``-other`` are taken as
    stuff, every other label as a thing (each query its own segment).
    """
    labels = _labels_list(id2label)
    entries = []
    for k, label in enumerate(labels):
        if is_placeholder(label):
            continue
        entries.append({
            "id": k + 1,
            "name": label,
            "isthing": 0 if _STUFF_HINT.search(label.strip().lower()) else 1,
            "color": list(palette_color(k + 1)),
        })
    if not entries:
        raise ValueError("id2label has only placeholder labels; no categories to build")
    return LabelSet.from_coco(entries, name=name)


def map_labels(
    id2label: Mapping[int, str],
    label_set: LabelSet | str | Path | None = None,
    *,
    candidates: Sequence[LabelSet] | None = None,
    min_coverage: float = 0.75,
    custom_name: str = "custom",
) -> LabelMapping:
    """Map model class indices onto a label set by name.

    Args:
        id2label: the model config's class index -> name table (keys int or str).
        label_set: a label set (or its name / JSON path) to map onto; ``"custom"`` builds one
            from ``id2label``; None or ``"auto"`` picks the best built-in table.
        candidates: built-in tables tried by ``"auto"`` (default: COCO panoptic, Cityscapes).
        min_coverage: ``"auto"`` falls back to a custom label set when the best table maps
            fewer than this fraction of the real labels.
        custom_name: name of a custom label set.

    Returns:
        A :class:`LabelMapping`. Unmapped real labels are logged as a warning.
    """
    labels = _labels_list(id2label)
    real = [k for k, n in enumerate(labels) if not is_placeholder(n)]
    if not real:
        raise ValueError("id2label has only placeholder labels; nothing to map")

    def mapping_for(table: LabelSet) -> tuple[LabelMapping, int]:
        index = _table_index(table)
        found = [(0, False) if is_placeholder(n) else _match(n, index) for n in labels]
        cats = np.array([c for c, _ in found], dtype=np.int64)
        unmapped = tuple((k, labels[k]) for k in real if cats[k] == 0)
        coverage = 1.0 - len(unmapped) / len(real)
        return LabelMapping(table, cats, unmapped, coverage), sum(e for _, e in found)

    def custom() -> LabelMapping:
        table = custom_label_set(id2label, name=custom_name)
        cats = np.array([0 if is_placeholder(n) else k + 1 for k, n in enumerate(labels)],
                        dtype=np.int64)
        return LabelMapping(table, cats, (), 1.0)

    if isinstance(label_set, str) and label_set == "custom":
        return custom()
    if label_set is not None and not (isinstance(label_set, str) and label_set == "auto"):
        result = mapping_for(get_label_set(label_set))[0]
    else:
        tables = list(candidates) if candidates is not None else [coco_panoptic(), cityscapes()]
        tried = [mapping_for(t) for t in tables]
        # Most labels mapped, then most matched by their full name, then the smaller table.
        result = max(tried, key=lambda t: (t[0].coverage, t[1], -len(t[0].label_set)))[0]
        if result.coverage < min_coverage:
            summary = ", ".join(f"{m.label_set.name} {m.coverage:.0%}" for m, _ in tried)
            _log.info(
                "model labels match no built-in label set well enough (%s; need %.0f%%): "
                "using a custom label set built from the model's id2label",
                summary, 100 * min_coverage,
            )
            return custom()
    if result.unmapped:
        shown = ", ".join(f"{k}:{n!r}" for k, n in result.unmapped[:20])
        more = f" and {len(result.unmapped) - 20} more" if len(result.unmapped) > 20 else ""
        _log.warning(
            "%d of %d model labels have no category in label set %r and will be void: %s%s",
            len(result.unmapped), len(real), result.label_set.name, shown, more,
        )
    return result
