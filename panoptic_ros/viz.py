"""Colouring of panoptic results: palette, instance colours, borders, overlay, text labels.

Also captions and contact sheets (grids of captioned panels, the demo's). ROS-free; the node
calls :func:`overlay` only while someone subscribes to its overlay topic. All images are RGB
uint8 ``[H, W, 3]``; label images follow :mod:`panoptic_ros.categories`
(``category_id * label_divisor + instance_id``, 0 = void).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from panoptic_ros.categories import DEFAULT_LABEL_DIVISOR, VOID, LabelSet
from panoptic_ros.result import PanopticResult, compact_ids

# Brightness steps that tell instances of one category apart: instance k (1..) takes
# _INSTANCE_SHADES[(k - 1) % len]; < 0 darkens towards black, > 0 lightens towards white.
_INSTANCE_SHADES = np.array([0.0, 0.35, -0.35, 0.6, -0.55, 0.2, -0.2, 0.5, -0.45])

BORDER_COLOR: tuple[int, int, int] = (255, 255, 255)
"""Colour of the one-pixel lines between segments in :func:`overlay`."""


def category_palette(label_set: LabelSet) -> np.ndarray:
    """Colour lookup table indexed by dataset category id.

    Returns:
        ndarray[max_id + 1, 3] uint8: the label set's colour for each of its ids, black for
        void (0) and for ids outside the label set.

    """
    lut = np.zeros((int(label_set.ids.max()) + 1, 3), dtype=np.uint8)
    lut[label_set.ids] = label_set.colors
    return lut


def segment_colors(
    segment_ids: np.ndarray,
    label_set: LabelSet,
    label_divisor: int = DEFAULT_LABEL_DIVISOR,
) -> np.ndarray:
    """Display colour of each panoptic id: its category colour, shaded per instance.

    Stuff (instance 0) and the first instance of a thing take the category colour exactly;
    further instances are lighter or darker versions of it, so that neighbouring objects of one
    class stay distinguishable.

    Args:
        segment_ids: ndarray[K] integer panoptic ids.
        label_set: categories and their colours.
        label_divisor: the ids' divisor.

    Returns:
        ndarray[K, 3] uint8; void and unknown categories are black.

    """
    segment_ids = np.asarray(segment_ids, dtype=np.int64)
    palette = category_palette(label_set)
    cats = segment_ids // label_divisor
    inst = segment_ids % label_divisor
    known = (cats > 0) & (cats < len(palette))
    base = np.zeros((len(segment_ids), 3), dtype=np.float64)
    base[known] = palette[cats[known]]
    shade = np.where(inst > 0, _INSTANCE_SHADES[(inst - 1) % len(_INSTANCE_SHADES)], 0.0)
    shade = shade[:, None]
    out = np.where(shade >= 0, base + (255.0 - base) * shade, base * (1.0 + shade))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def colorize(
    ids: np.ndarray, label_set: LabelSet, label_divisor: int = DEFAULT_LABEL_DIVISOR
) -> np.ndarray:
    """Paint a panoptic label image with :func:`segment_colors`.

    Args:
        ids: ndarray[H, W] integer, ``category * label_divisor + instance``, 0 = void.
        label_set: categories and their colours.
        label_divisor: the ids' divisor.

    Returns:
        ndarray[H, W, 3] uint8 RGB; void is black.

    """
    values, index_map = compact_ids(np.asarray(ids))
    return segment_colors(values, label_set, label_divisor)[index_map]


def instance_borders(ids: np.ndarray) -> np.ndarray:
    """One-pixel boundaries between different ids (instances, stuff regions and void).

    A pixel is on a border when its right or lower neighbour holds another id.

    Args:
        ids: ndarray[H, W] integer label image.

    Returns:
        ndarray[H, W] bool.

    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"expected a label image [H, W], got shape {ids.shape}")
    border = np.zeros(ids.shape, dtype=bool)
    np.not_equal(ids[:, :-1], ids[:, 1:], out=border[:, :-1])
    border[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return border


def draw_labels(
    image: np.ndarray,
    result: PanopticResult,
    label_set: LabelSet,
    min_area: int = 64,
) -> np.ndarray:
    """Write each segment's category name at the centre of its box, in place.

    White text with a dark outline, scaled to the image size; segments smaller than
    ``min_area`` pixels are skipped.

    Args:
        image: ndarray[H, W, 3] uint8 RGB, modified and returned.
        result: the segments to label (their ``bbox`` and ``category_id``).
        label_set: category names.
        min_area: smallest labelled segment, pixels.

    """
    scale = max(0.3, min(image.shape[:2]) / 800.0)
    thickness = max(1, round(scale * 1.5))
    font = cv2.FONT_HERSHEY_SIMPLEX
    for seg in result.segments:
        if seg.area < min_area or seg.category_id not in label_set:
            continue
        text = label_set.by_id(seg.category_id).name
        if seg.is_thing:
            text = f"{text} {seg.instance_id}"
        (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
        x, y, w, h = seg.bbox
        org = (int(x + w / 2 - tw / 2), int(y + h / 2 + th / 2))
        cv2.putText(image, text, org, font, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(image, text, org, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return image


def overlay(
    image: np.ndarray,
    result: PanopticResult,
    label_set: LabelSet,
    alpha: float = 0.5,
    borders: bool = True,
    labels: bool = False,
) -> np.ndarray:
    """Blend segment colours over the camera image.

    Args:
        image: ndarray[H, W, 3] uint8 RGB, the frame the result belongs to (not modified).
        result: panoptic result at the image's resolution.
        label_set: categories and their colours.
        alpha: weight of the segment colours, 0 (image only) .. 1 (colours only); void
            pixels always show the image.
        borders: draw :data:`BORDER_COLOR` lines between segments.
        labels: write category names (:func:`draw_labels`).

    Returns:
        ndarray[H, W, 3] uint8 RGB, a new image.

    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an RGB image uint8 [H, W, 3], got {image.dtype} {image.shape}"
        )
    if image.shape[:2] != result.ids.shape:
        raise ValueError(
            f"image size {image.shape[:2]} differs from the label image's {result.ids.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in 0..1, got {alpha}")
    colors = colorize(result.ids, label_set, result.label_divisor)
    void = result.ids == VOID
    colors[void] = image[void]
    out = cv2.addWeighted(image, 1.0 - alpha, colors, alpha, 0.0)
    if borders:
        out[instance_borders(result.ids)] = BORDER_COLOR
    if labels:
        draw_labels(out, result, label_set)
    return out


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in white on a darkened strip at the top left of ``image``, in place.

    Args:
        image: ndarray[H, W, 3] uint8 RGB, modified and returned; the text scales with W.
        text: one line.

    """
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.3, image.shape[1] / 700.0)
    (tw, th), base = cv2.getTextSize(text, font, scale, 1)
    box = image[: th + base + 6, : tw + 8]
    box[:] = box // 3
    cv2.putText(image, text, (4, th + 3), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def contact_sheet(
    rows: Sequence[Sequence[np.ndarray]],
    captions: Sequence[Sequence[str]] | None = None,
) -> np.ndarray:
    """Tile panels into a grid, one row per frame, each panel with its :func:`caption`.

    Args:
        rows: R rows of C panels, each ndarray[H, W, 3] uint8 RGB (not modified).
        captions: R rows of C texts, or ``None`` for none.

    Returns:
        ndarray[R * H, C * W, 3] uint8 RGB.

    Raises:
        ValueError: no rows, panels of different sizes, or rows of different lengths.

    """
    if not rows:
        raise ValueError("a contact sheet needs at least one row")
    h, w = rows[0][0].shape[:2]
    width = len(rows[0])
    lines = []
    for r, panels in enumerate(rows):
        if len(panels) != width:
            raise ValueError(f"rows must all have {width} panels, got {len(panels)}")
        texts = captions[r] if captions is not None else [""] * width
        out = []
        for panel, text in zip(panels, texts):
            if panel.shape[:2] != (h, w):
                raise ValueError(f"rows must all be {h}x{w}, got {panel.shape[:2]}")
            panel = np.array(panel, dtype=np.uint8, copy=True)
            out.append(caption(panel, text) if text else panel)
        lines.append(np.concatenate(out, axis=1))
    return np.concatenate(lines, axis=0)
