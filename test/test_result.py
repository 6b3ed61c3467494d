"""PanopticResult consistency on hand-built id maps."""

import numpy as np
import pytest

from panoptic_ros.categories import cityscapes, synthetic
from panoptic_ros.data.coco_panoptic import (
    CocoPanopticDataset,
    CocoPanopticWriter,
    read_panoptic_png,
)
from panoptic_ros.result import PanopticResult, compact_ids, segment_stats


def hand_built() -> np.ndarray:
    ids = np.full((6, 8), 12000, dtype=np.int32)  # ground
    ids[0:2, :] = 11000  # sky
    ids[2:5, 1:3] = 1001  # person 1
    ids[3:6, 5:8] = 2001  # car 1
    ids[4, 0] = 2002  # car 2, a single pixel
    ids[5, 3] = 0  # void
    return ids


def test_segments_from_ids():
    r = PanopticResult.from_ids(hand_built(), synthetic(), scores={1001: 0.9})
    by_id = {s.id: s for s in r.segments}
    assert sorted(by_id) == [1001, 2001, 2002, 11000, 12000]
    person = by_id[1001]
    assert (person.category_id, person.instance_id, person.is_thing) == (1, 1, True)
    assert person.area == 6 and person.bbox == (1, 2, 2, 3) and person.score == 0.9
    assert by_id[2002].bbox == (0, 4, 1, 1) and by_id[2002].area == 1
    assert by_id[11000].bbox == (0, 0, 8, 2) and not by_id[11000].is_thing
    assert by_id[12000].instance_id == 0 and by_id[12000].score == 1.0
    assert sum(s.area for s in r.segments) == r.ids.size - 1  # one void pixel


def test_derived_maps_and_counts_agree():
    r = PanopticResult.from_ids(hand_built(), synthetic())
    sem, inst = r.semantic(), r.instances()
    assert sem[3, 6] == 2 and inst[3, 6] == 1 and sem[4, 0] == 2 and inst[4, 0] == 2
    assert sem[5, 3] == 0 and inst[0, 0] == 0 and sem[0, 0] == 11
    assert (sem * 1000 + inst == r.ids).all()
    assert r.counts(synthetic()) == {1: 1, 2: 2, 3: 0, 4: 0}


def test_unknown_category_rejected():
    ids = np.array([[26001, 7000]], dtype=np.int32)
    PanopticResult.from_ids(ids, cityscapes())
    with pytest.raises(ValueError, match="decodes to category 7, which is not in label set"):
        PanopticResult.from_ids(ids, synthetic())
    with pytest.raises(ValueError, match="2-D"):
        PanopticResult.from_ids(np.zeros((2, 2, 2), np.int32), synthetic())


def test_segment_stats_matches_brute_force():
    rng = np.random.default_rng(3)
    index_map = rng.integers(0, 7, size=(37, 51))
    index_map[index_map == 4] = 3  # index 4 absent
    areas, boxes = segment_stats(index_map, 8)
    for k in range(8):
        ys, xs = np.nonzero(index_map == k)
        assert areas[k] == len(ys)
        if len(ys):
            assert tuple(boxes[k]) == (xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                       ys.max() - ys.min() + 1)
        else:
            assert tuple(boxes[k]) == (0, 0, 0, 0)


def test_compact_ids_sparse_and_dense():
    ids = np.array([[5, 5, 0], [70000000, 5, 0]])
    values, idx = compact_ids(ids)
    assert values.tolist() == [0, 5, 70000000] and (values[idx] == ids).all()
    values, idx = compact_ids(np.array([[3, 1], [1, 3]]))
    assert values.tolist() == [1, 3] and idx.tolist() == [[1, 0], [0, 1]]


def test_coco_round_trip(tmp_path):
    ls = synthetic()
    r = PanopticResult.from_ids(hand_built(), ls, scores={2001: 0.75})
    with CocoPanopticWriter(tmp_path, ls, json_name="pred.json") as w:
        w.add(42, r)
    png = read_panoptic_png(tmp_path / "panoptic" / "000000000042.png")
    assert (png == r.ids).all()  # our ids are the COCO segment ids
    ds = CocoPanopticDataset(tmp_path / "pred.json", png_dir=tmp_path / "panoptic")
    back = ds.load_result(42)
    assert (back.ids == r.ids).all()
    assert [(s.id, s.area, s.bbox) for s in back.segments] == [
        (s.id, s.area, s.bbox) for s in r.segments]
    assert back.segment(2001).score == 0.75


def test_from_coco_renumbers_instances_and_flags_crowd():
    seg = np.array([[10, 10, 20], [30, 30, 99]])  # 99 is not listed -> void
    info = [
        {"id": 20, "category_id": 2, "iscrowd": 0},
        {"id": 30, "category_id": 2, "iscrowd": 1},
        {"id": 10, "category_id": 12, "iscrowd": 0},
    ]
    r = PanopticResult.from_coco(seg, info, synthetic())
    assert r.ids.tolist() == [[12000, 12000, 2001], [2002, 2002, 0]]
    assert r.segment(2002).iscrowd and not r.segment(2001).iscrowd
    assert r.counts(synthetic())[2] == 1  # crowd is not counted as an instance
