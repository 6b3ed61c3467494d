"""Colouring: palette, instance shades, borders, overlay blending, text labels, contact sheets."""

from __future__ import annotations

import numpy as np
import pytest

from panoptic_ros.categories import synthetic
from panoptic_ros.result import PanopticResult
from panoptic_ros.viz import (
    BORDER_COLOR,
    category_palette,
    colorize,
    contact_sheet,
    instance_borders,
    overlay,
    segment_colors,
)

LS = synthetic()  # person 1, car 2, box 3, ball 4 (things); sky 11, ground 12, ... (stuff)
SKY, GROUND, PERSON, CAR = 11, 12, 1, 2


def scene(h: int = 40, w: int = 60) -> np.ndarray:
    """Sky over ground, two persons and a car; a void strip on the left."""
    ids = np.full((h, w), SKY * 1000, np.int32)
    ids[h // 2 :] = GROUND * 1000
    ids[5:15, 10:20] = PERSON * 1000 + 1
    ids[5:15, 22:32] = PERSON * 1000 + 2
    ids[25:35, 35:55] = CAR * 1000 + 1
    ids[:, :3] = 0
    return ids


def test_palette_indexes_by_category_id():
    lut = category_palette(LS)
    assert lut.shape == (16, 3) and lut.dtype == np.uint8
    for cat in LS:
        assert tuple(lut[cat.id]) == cat.color
    assert tuple(lut[0]) == (0, 0, 0) and tuple(lut[5]) == (0, 0, 0)


def test_instances_of_one_category_get_distinct_shades():
    colors = segment_colors(np.array([0, 11000, 1001, 1002, 1003, 2001, 99000]), LS)
    assert tuple(colors[0]) == (0, 0, 0)
    assert tuple(colors[1]) == LS.by_id(SKY).color
    assert tuple(colors[2]) == LS.by_id(PERSON).color
    assert len({tuple(c) for c in colors[2:5]}) == 3
    assert tuple(colors[5]) == LS.by_id(CAR).color
    assert tuple(colors[6]) == (0, 0, 0)  # category 99 is not in the label set


def test_colorize_paints_every_pixel_by_its_id():
    ids = scene()
    rgb = colorize(ids, LS)
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[1, 1]) == (0, 0, 0)
    assert tuple(rgb[1, 40]) == LS.by_id(SKY).color
    assert tuple(rgb[30, 10]) == LS.by_id(GROUND).color
    assert tuple(rgb[10, 15]) == LS.by_id(PERSON).color
    assert tuple(rgb[10, 25]) != tuple(rgb[10, 15])
    # Same answer with another label divisor.
    ids256 = (ids // 1000) * 256 + ids % 1000
    np.testing.assert_array_equal(colorize(ids256, LS, label_divisor=256), rgb)


def test_borders_lie_exactly_where_ids_change():
    ids = np.zeros((5, 6), np.int32)
    ids[1:4, 2:5] = 1001
    b = instance_borders(ids)
    expected = np.zeros((5, 6), bool)
    expected[0, 2:5] = True  # above the box (lower neighbour differs)
    expected[1:4, 1] = True  # left of the box
    expected[1:4, 4] = True  # right column of the box
    expected[3, 2:5] = True  # bottom row of the box
    np.testing.assert_array_equal(b, expected)
    assert not instance_borders(np.full((4, 4), 7)).any()


def test_overlay_blends_keeps_void_and_draws_borders():
    ids = scene()
    result = PanopticResult.from_ids(ids, LS)
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    plain = overlay(image, result, LS, alpha=0.0, borders=False)
    np.testing.assert_array_equal(plain, image)
    full = overlay(image, result, LS, alpha=1.0, borders=False)
    colors = colorize(ids, LS)
    void = ids == 0
    np.testing.assert_array_equal(full[~void], colors[~void])
    np.testing.assert_array_equal(full[void], image[void])
    half = overlay(image, result, LS, alpha=0.5, borders=False)
    expected = np.rint(0.5 * image[10, 15] + 0.5 * colors[10, 15])
    assert np.abs(half[10, 15].astype(int) - expected).max() <= 1
    with_borders = overlay(image, result, LS, alpha=0.5, borders=True)
    border = instance_borders(ids)
    assert (with_borders[border] == BORDER_COLOR).all()
    np.testing.assert_array_equal(with_borders[~border], half[~border])


def test_labels_are_drawn_only_when_asked_and_near_segments():
    ids = scene(120, 160)
    result = PanopticResult.from_ids(ids, LS)
    image = np.full((120, 160, 3), 90, np.uint8)
    base = overlay(image, result, LS, alpha=0.5, borders=False, labels=False)
    labelled = overlay(image, result, LS, alpha=0.5, borders=False, labels=True)
    changed = (labelled != base).any(axis=2)
    assert changed.any()
    car = result.segment(CAR * 1000 + 1)
    x, y, w, h = car.bbox
    assert changed[y : y + h, x : x + w].any()


def test_overlay_rejects_mismatched_inputs():
    result = PanopticResult.from_ids(scene(), LS)
    with pytest.raises(ValueError, match="differs"):
        overlay(np.zeros((10, 10, 3), np.uint8), result, LS)
    with pytest.raises(ValueError, match="RGB image"):
        overlay(np.zeros((40, 60), np.uint8), result, LS)
    with pytest.raises(ValueError, match="alpha"):
        overlay(np.zeros((40, 60, 3), np.uint8), result, LS, alpha=1.5)


def test_contact_sheet_tiles_captioned_copies():
    a = np.zeros((20, 30, 3), np.uint8)
    b = np.full((20, 30, 3), 9, np.uint8)
    sheet = contact_sheet([[a, b], [b, a]], [["left", ""], ["", "right"]])
    assert sheet.shape == (40, 60, 3) and sheet.dtype == np.uint8
    assert (a == 0).all() and (b == 9).all()  # inputs untouched
    assert (sheet[20:, :30] == 9).all()  # no caption: the panel as it was
    assert (sheet[:20, :30] != 0).any()  # caption text on the first panel
    assert (contact_sheet([[a]]) == a).all()
    with pytest.raises(ValueError, match="at least one"):
        contact_sheet([])
    with pytest.raises(ValueError, match="20x30"):
        contact_sheet([[a], [np.zeros((21, 30, 3), np.uint8)]])
    with pytest.raises(ValueError, match="2 panels"):
        contact_sheet([[a, b], [a]])
