"""Label sets and id encodings (tier a: hand-built arrays)."""

import json

import numpy as np
import pytest

from panoptic_ros.categories import (
    IGNORE_INDEX,
    Category,
    CategoryError,
    LabelSet,
    check_label_divisor,
    cityscapes,
    coco_panoptic,
    decode_ids,
    encode_ids,
    get_label_set,
    id_to_rgb,
    rgb_to_id,
    synthetic,
)


def test_coco_table_matches_the_dataset_file(coco_sample):
    ref = json.loads((coco_sample / "panoptic_coco_categories.json").read_text())
    ls = coco_panoptic()
    assert len(ls) == 133 and ls.num_things == 80 and ls.num_stuff == 53
    by_id = {c["id"]: c for c in ref}
    for cat in ls:
        assert cat.name == by_id[cat.id]["name"]
        assert cat.is_thing == bool(by_id[cat.id]["isthing"])
        assert list(cat.color) == by_id[cat.id]["color"]


def test_coco_order_is_stuff_first_then_things():
    ls = coco_panoptic()
    flags = [c.is_thing for c in ls]
    assert flags == [False] * 53 + [True] * 80
    assert ls.by_id(1).name == "person" and ls.index_of(1) == 53  # first thing
    assert ls.by_id(200).name == "rug-merged" and not ls.is_thing(200)
    assert ls.id_of(ls.index_of(184)) == 184


def test_cityscapes_label_ids():
    ls = cityscapes()
    assert len(ls) == 19 and ls.num_things == 8
    assert ls.by_id(26).name == "car" and ls.is_thing(26)
    assert ls.by_id(7).name == "road" and ls.index_of(7) == 0
    assert [c.name for c in ls.things] == [
        "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    assert ls.index_of(24) == 11  # person after the 11 stuff classes


def test_index_map_and_unknown_ids():
    ls = cityscapes()
    ids = np.array([[7, 26, 0], [33, 5, 99999]])
    assert ls.index_map(ids).tolist() == [[0, 13, IGNORE_INDEX], [18, IGNORE_INDEX, IGNORE_INDEX]]


def test_label_set_validation():
    with pytest.raises(CategoryError, match="repeats"):
        LabelSet("x", [Category(1, "a", True, (1, 2, 3)), Category(1, "b", False, (1, 2, 3))])
    with pytest.raises(CategoryError, match="1..65535"):
        LabelSet("x", [Category(0, "void", False, (0, 0, 0))])
    with pytest.raises(CategoryError, match="not in label set"):
        synthetic().by_id(77)


def test_json_round_trip(tmp_path):
    ls = synthetic()
    path = tmp_path / "cats.json"
    path.write_text(json.dumps({"categories": ls.to_coco()}))
    again = LabelSet.from_json(path, name="synthetic")
    assert again == ls
    assert LabelSet.from_dict(ls.to_dict()) == ls
    assert get_label_set(str(path)).categories == ls.categories
    assert get_label_set("coco") is coco_panoptic()
    with pytest.raises(CategoryError, match="unknown label set"):
        get_label_set("nope")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CategoryError, match="not valid JSON"):
        LabelSet.from_json(tmp_path / "bad.json")


def test_encode_decode_numpy_and_torch():
    import torch

    cats = np.array([[26, 7], [0, 33]], dtype=np.int32)
    inst = np.array([[3, 0], [0, 12]], dtype=np.int32)
    ids = encode_ids(cats, inst, 1000)
    assert ids.tolist() == [[26003, 7000], [0, 33012]]
    c, i = decode_ids(ids, 1000)
    assert (c == cats).all() and (i == inst).all()
    t = encode_ids(torch.from_numpy(cats), torch.from_numpy(inst), 256)
    assert t.tolist() == [[26 * 256 + 3, 7 * 256], [0, 33 * 256 + 12]]
    check_label_divisor(1000, coco_panoptic())
    with pytest.raises(CategoryError, match="overflows"):
        check_label_divisor(10**8, coco_panoptic())


def test_coco_rgb_encoding():
    ids = np.array([[0, 1, 256], [65536, 16777215, 123456]], dtype=np.int64)
    rgb = id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[0, 1].tolist() == [1, 0, 0] and rgb[0, 2].tolist() == [0, 1, 0]
    assert rgb[1, 0].tolist() == [0, 0, 1] and rgb[1, 1].tolist() == [255, 255, 255]
    assert (rgb_to_id(rgb) == ids).all()
    with pytest.raises(ValueError):
        id_to_rgb(np.array([2**24]))
